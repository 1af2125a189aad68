//! The QEMU command-line form: `kvmgdb -kernel K -append … -gdb tcp::PORT -S …` boots our
//! guests with QEMU's meanings, and gdb attaches the way QEMU users attach to
//! `qemu-system-x86_64` (the x86-64 register layout: `set architecture i386:x86-64` before
//! `target remote` with a 32-bit file, or a 64-bit symbol file for a 32-bit image). Options
//! kvmgdb cannot honour end with one `kvmgdb: error:` line naming them.
//!
//! The tests use `-gdb tcp::PORT` with a free port rather than `-s` (port 1234), so they
//! can run in parallel with each other and with anything else on the machine.

mod common;

use common::*;
use kvmgdb::cli::{EXIT_ERROR, EXIT_USAGE};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long kvmgdb may take to reject a command line or to run a short guest.
const TIMEOUT: Duration = Duration::from_secs(20);
/// multiboot.elf's exit status: debug_exit(0x10) after 1000 ticks, (0x10 << 1) | 1.
const MULTIBOOT_EXIT: i32 = 33;
/// The Multiboot loader's magic in EAX (Multiboot spec 3.2).
const MULTIBOOT_MAGIC: u64 = 0x2bad_b002;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port().to_string()
}

/// Starts kvmgdb with a QEMU command line that boots `kernel`, its gdb stub on a free port
/// (`-gdb tcp::PORT`) and COM1 in `serial.txt` (`-serial file:…`), then `extra`.
fn start_qemu(dir: &TestDir, kernel: &Path, extra: &[&str]) -> Kvmgdb {
    start_qemu_gdb(dir, kernel, &format!("tcp::{}", free_port()), extra)
}

/// [`start_qemu`] with the stub on `-gdb gdb`.
fn start_qemu_gdb(dir: &TestDir, kernel: &Path, gdb: &str, extra: &[&str]) -> Kvmgdb {
    let serial = dir.join("serial.txt");
    let serial_arg = format!("file:{}", serial.display());
    let mut args = vec![
        "-kernel",
        path_str(kernel),
        "-gdb",
        gdb,
        "-serial",
        &serial_arg,
    ];
    args.extend(extra);
    Kvmgdb::start_args(dir, &args, serial)
}

/// The flags of the daily QEMU command line that change nothing on kvmgdb's machine.
const DAILY: &[&str] = &[
    "-enable-kvm",
    "-m",
    "64",
    "-smp",
    "1",
    "-nographic",
    "-display",
    "none",
    "-monitor",
    "none",
    "-no-reboot",
    "-cpu",
    "host",
    "-accel",
    "kvm",
    "-device",
    "isa-debug-exit,iobase=0xf4,iosize=0x04",
];

/// Boots multiboot.elf with `-S` and the daily flags, then runs gdb on the symbol file
/// `symbols` makes, with the commands `pre` before it connects, and
/// `arch-x86-64-multiboot.gdb`; checks gdb stopped at mb_tick with 64-bit registers.
fn multiboot_through_x86_64_layout(
    test: &str,
    symbols: impl FnOnce(&TestDir) -> PathBuf,
    pre: &[&str],
) {
    require_kvm_and_gdb();
    let dir = TestDir::new(test);
    let mut extra = vec!["-S", "-append", "hello=1 world"];
    extra.extend(DAILY);
    let mut k = start_qemu(&dir, &guest("multiboot.elf"), &extra);
    assert!(
        k.first_line
            .starts_with("kvmgdb: waiting at the entry point for gdb on 127.0.0.1:"),
        "{}",
        k.first_line
    );
    // kvmgdb says how to attach with the layout it serves a 32-bit image.
    assert_contains(
        &k.first_line,
        "-ex 'set architecture i386:x86-64' -ex 'target remote ",
    );
    // -S: nothing runs before gdb says so.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(k.serial_output(), "", "the guest ran before gdb attached");
    let symbols = symbols(&dir);
    let out = k.gdb_pre(&dir, pre, "arch-x86-64-multiboot.gdb", &symbols);
    assert_not_contains(&out, "not compatible");
    assert_not_contains(&out, "Truncated register");
    let arch = tagged_one(&out, "arch");
    assert_eq!(arch["rip"], arch["tick"], "{out}");
    assert_eq!(arch["magic"], MULTIBOOT_MAGIC, "{out}");
    assert_eq!(arch["counter"], 0, "{out}");
    assert!(arch["rsp"] > 0x10_0000 && arch["rsp"] < 64 << 20, "{out}");
    // `show architecture`, after the session started: gdb kept x86-64.
    let shown = out
        .lines()
        .rfind(|l| l.starts_with("The target architecture is set to"))
        .unwrap_or_else(|| panic!("no `show architecture` line in:\n{out}"));
    assert!(
        shown.ends_with("\"i386:x86-64\").") || shown.ends_with("\"i386:x86-64\"."),
        "{shown}"
    );
    // -append reached the kernel (after the image name, as boot loaders pass it, or alone).
    let cmdline = out
        .lines()
        .find_map(|l| l.strip_prefix("cmdline: "))
        .unwrap_or_else(|| panic!("no cmdline line in:\n{out}"));
    assert!(cmdline.ends_with("hello=1 world"), "{cmdline:?}");
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
    assert_contains(&k.serial_output(), "kvmgdb multiboot guest: magic ok\n");
    // The accepted flags needed no note: they describe kvmgdb's machine as it is.
    assert_not_contains(&k.stderr(), "note:");
}

/// Case (b): the ELF32 file after `set architecture i386:x86-64`, the QEMU habit.
#[test]
fn set_architecture_x86_64_with_a_32bit_file() {
    multiboot_through_x86_64_layout(
        "qemu-arch-b",
        |_| guest("multiboot.elf"),
        &["set architecture i386:x86-64"],
    );
}

/// Case (c): a 64-bit symbol file of the 32-bit image, as `gdb xen-syms` with Xen's ELF32
/// boot image. The ELF64 twin of multiboot.elf is made with objcopy.
#[test]
fn a_64bit_symbol_file_for_a_32bit_image() {
    multiboot_through_x86_64_layout(
        "qemu-arch-c",
        |dir| {
            let elf64 = dir.join("multiboot64.elf");
            let status = Command::new("objcopy")
                .args(["-O", "elf64-x86-64"])
                .arg(guest("multiboot.elf"))
                .arg(&elf64)
                .status()
                .expect("objcopy (apt-get install -y binutils)");
            assert!(status.success(), "objcopy failed: {status}");
            elf64
        },
        &[],
    );
}

/// Case (a) in the QEMU form: `--gdb-arch i386` gives a plain `gdb kernel32.elf` the i386
/// layout (kvmgdb's native form does so by default; tests/gdb_lifecycle.rs).
#[test]
fn gdb_arch_i386_for_a_plain_32bit_session() {
    require_kvm_and_gdb();
    let dir = TestDir::new("qemu-arch-a");
    let mut k = start_qemu(&dir, &guest("multiboot.elf"), &["-S", "--gdb-arch", "i386"]);
    // The layout is the image's own: no `set architecture` to give.
    assert_not_contains(&k.first_line, "set architecture");
    let out = k.gdb(&dir, "multiboot.gdb", &guest("multiboot.elf"));
    let entry = tagged_one(&out, "entry");
    assert_eq!(entry["eip"], entry["start"], "{out}");
    assert_eq!(entry["eax"], MULTIBOOT_MAGIC, "{out}");
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}

/// `--gdb-arch i386` on a 64-bit kernel: the "connect with" line gives the
/// `set architecture` gdb needs, gdb works with it, and kvmgdb says the registers are
/// shown narrowed while the guest runs in long mode.
#[test]
fn gdb_arch_i386_on_a_long_mode_guest() {
    require_kvm_and_gdb();
    let dir = TestDir::new("qemu-arch-narrow");
    let mut k = start_qemu(&dir, &guest("demo.elf"), &["-S", "--gdb-arch", "i386"]);
    assert_contains(
        &k.first_line,
        "-ex 'set architecture i386' -ex 'target remote ",
    );
    let out = k.gdb_pre(
        &dir,
        &["set architecture i386"],
        "demo-entry.gdb",
        &guest("demo.elf"),
    );
    let entry = tagged_one(&out, "entry");
    assert_eq!(entry["pc"], entry["start"], "{out}");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
    assert_contains(
        &k.stderr(),
        "kvmgdb: note: the guest runs in long mode but gdb gets the i386 register layout",
    );
}

/// Case (d): a 64-bit kernel and its own ELF64 file, the stub on `-gdb unix:PATH,server,nowait`.
#[test]
fn a_64bit_kernel_with_its_own_file() {
    require_kvm_and_gdb();
    let dir = TestDir::new("qemu-arch-d");
    // Over a Unix socket, QEMU's way.
    let socket = dir.join("gdb.sock");
    let gdb = format!("unix:{},server,nowait", socket.display());
    let mut k = start_qemu_gdb(&dir, &guest("demo.elf"), &gdb, &["-S", "-m", "size=128M"]);
    assert_not_contains(&k.first_line, "set architecture");
    assert_eq!(k.target, path_str(&socket), "{}", k.first_line);
    let out = k.gdb(&dir, "arch-x86-64-demo.gdb", &guest("demo.elf"));
    let arch = tagged_one(&out, "arch");
    assert_eq!(arch["rip"], arch["tick"], "{out}");
    assert_contains(&out, "#1  ");
    assert_contains(&out, " kmain ");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}

/// `-no-reboot`: a guest reset ends kvmgdb with status 0, which gdb sees as an exit.
#[test]
fn no_reboot_ends_on_a_reset() {
    require_kvm_and_gdb();
    let dir = TestDir::new("qemu-no-reboot");
    let mut k = start_qemu(&dir, &guest("demo.elf"), &["-S", "-no-reboot"]);
    let out = k.gdb(&dir, "reset-port.gdb", &guest("demo.elf"));
    assert_contains(&out, "out    %al,(%dx)");
    assert_contains(&out, "[Inferior 1 (process 1) exited normally]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}

/// Without -S the guest runs at once, with the stub listening: multiboot.elf runs to its
/// exit by itself, its output in the -serial file.
#[test]
fn without_capital_s_the_guest_runs_at_once() {
    require_kvm();
    let dir = TestDir::new("qemu-no-wait");
    let mut k = start_qemu(&dir, &guest("multiboot.elf"), &["-M", "q35"]);
    assert!(
        k.first_line
            .starts_with("kvmgdb: running; attach gdb on 127.0.0.1:"),
        "{}",
        k.first_line
    );
    assert_eq!(
        k.wait_exit(KVMGDB_TIMEOUT),
        MULTIBOOT_EXIT,
        "stderr:\n{}",
        k.stderr()
    );
    assert_contains(&k.serial_output(), "kvmgdb multiboot guest: magic ok\n");
    // -M q35 is accepted with a note saying what the machine is.
    assert_contains(
        &k.stderr(),
        "kvmgdb: note: -M q35: kvmgdb's machine is its own",
    );
}

/// `-nographic` without -serial: COM1 on stdout, as QEMU's console; no stub without -s or
/// -gdb. An -initrd file that exists is read and handed over.
#[test]
fn nographic_serial_on_stdout() {
    require_kvm();
    let dir = TestDir::new("qemu-nographic");
    let module = dir.join("module.bin");
    std::fs::write(&module, b"module data").unwrap();
    let initrd = format!("{} arg1 arg2", module.display());
    let mb = guest("multiboot.elf");
    let (status, stdout, stderr) = run_kvmgdb(
        &[
            "-kernel",
            path_str(&mb),
            "-nographic",
            "-initrd",
            &initrd,
            "-m",
            "1G",
        ],
        TIMEOUT,
    );
    assert_eq!(status, MULTIBOOT_EXIT, "stderr: {stderr}");
    assert_contains(&stdout, "kvmgdb multiboot guest: magic ok\n");
    // 1 GiB: mem_upper is RAM above 1 MiB in KiB.
    assert_contains(&stdout, &format!("mem_upper={} KiB\n", (1 << 20) - 1024));
}

#[test]
fn options_kvmgdb_cannot_honour_are_refused_by_name() {
    let mb = guest("multiboot.elf");
    let k = path_str(&mb);
    let usage = EXIT_USAGE;
    assert_one_error(
        &["-kernel", k, "-vga", "std"],
        usage,
        &["unsupported QEMU option -vga"],
    );
    assert_one_error(
        &["-vga", "std", "-kernel", k],
        usage,
        &["unsupported QEMU option -vga"],
    );
    assert_one_error(&["-kernel", k, "-hda", "disk.img"], usage, &["-hda"]);
    assert_one_error(
        &["-kernel", k, "-smp", "2,maxcpus=4"],
        usage,
        &["-smp 2,maxcpus=4", "hot-plug"],
    );
    assert_one_error(
        &["-kernel", k, "-smp", "100"],
        EXIT_ERROR,
        &["100 vCPUs", "at most 64", "KVM_CAP_MAX_VCPUS"],
    );
    assert_one_error(
        &["-kernel", k, "-accel", "tcg"],
        usage,
        &["-accel tcg", "KVM only"],
    );
    assert_one_error(
        &["-kernel", k, "-device", "isa-debug-exit,iobase=0x501"],
        usage,
        &["iobase=0xf4"],
    );
    assert_one_error(&["-kernel", k, "-S"], usage, &["-S", "wait forever"]);
    assert_one_error(
        &["-kernel", k, "-s", "-gdb", "tcp::1"],
        usage,
        &["one gdb stub"],
    );
    assert_one_error(&["-s", "-S"], usage, &["-kernel"]);
    assert_one_error(&["-kernel", k, "-m"], usage, &["-m needs a value"]);
}

#[test]
fn unreadable_files_are_named() {
    require_kvm();
    let dir = TestDir::new("qemu-files");
    let missing = dir.join("missing.cpio");
    let mb = guest("multiboot.elf");
    let initrd = format!("{},{} args", path_str(&mb), missing.display());
    assert_one_error(
        &["-kernel", path_str(&mb), "-initrd", &initrd],
        EXIT_ERROR,
        &[
            "cannot read initrd file",
            path_str(&missing),
            "No such file",
        ],
    );
    assert_one_error(
        &["-kernel", path_str(&missing)],
        EXIT_ERROR,
        &["cannot read kernel", path_str(&missing)],
    );
    assert_one_error(
        &["-kernel", path_str(&mb), "-initrd", path_str(dir.path())],
        EXIT_ERROR,
        &["initrd file", "is a directory"],
    );
}
