//! The `monitor` commands, driven through the real gdb against real guests on KVM. The
//! command files live in `gdb-scripts/`; each marks its parts with `echo @@name`, and the
//! tests check gdb's output part by part.
//!
//! The harness is self-contained: kvmgdb and gdb run as child processes with timeouts and
//! are killed on drop; each test has its own port (port 0) and its own working directory
//! (where `monitor dump` writes relative paths), so the tests run in parallel.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long one gdb run may take.
const GDB_TIMEOUT: Duration = Duration::from_secs(90);
/// How long kvmgdb may take to print the line with its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn require_kvm_and_gdb() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("KVM not available: cannot open /dev/kvm: {e}");
    }
    match Command::new("gdb")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        other => panic!("gdb not installed (apt-get install -y gdb): {other:?}"),
    }
}

fn guest(name: &str) -> PathBuf {
    let path = kvmgdb::guests::guest_dir().join(name);
    assert!(path.is_file(), "guest image {} is missing", path.display());
    path
}

fn script(name: &str) -> PathBuf {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/gdb-scripts")).join(name);
    assert!(path.is_file(), "gdb script {} is missing", path.display());
    path
}

/// A scratch directory: kvmgdb's working directory. Kept when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "kvmgdb-monitor-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A running kvmgdb, killed on drop.
struct Kvmgdb {
    child: Child,
    addr: String,
}

impl Kvmgdb {
    /// Boots `kernel` waiting for gdb on a free loopback port, in directory `dir`.
    fn start(kernel: &Path, dir: &Path) -> Kvmgdb {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvmgdb"))
            .args(["--gdb", "127.0.0.1:0", "--serial", "none"])
            .arg(kernel)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start kvmgdb: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let _ = tx.send(lines.next());
            // Keep draining so kvmgdb never blocks on a full pipe; pass the rest through.
            for line in lines.map_while(Result::ok) {
                eprintln!("kvmgdb: {line}");
            }
        });
        let mut k = Kvmgdb {
            child,
            addr: String::new(),
        };
        let first = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => panic!("kvmgdb printed no address line: {other:?}"),
        };
        // "kvmgdb: waiting at the entry point for gdb on 127.0.0.1:PORT; connect with: …"
        k.addr = first
            .split(" gdb on ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        k
    }
}

impl Drop for Kvmgdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs gdb in batch mode on `elf` with `args`, in `dir`; returns its output, stdout and
/// stderr interleaved as they were written (gdb prints monitor output and errors on
/// stderr, `echo` markers on stdout).
fn gdb(args: &[String], elf: &Path, core: Option<&Path>, dir: &Path) -> String {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let log = dir.join(format!("gdb-{}.log", RUN.fetch_add(1, Ordering::Relaxed)));
    let file = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let file2 = file.try_clone().expect("dup the log file");
    let mut cmd = Command::new("gdb");
    cmd.args([
        "-nx",
        "-batch",
        "-ex",
        "set pagination off",
        "-ex",
        "set width 0",
    ])
    .args(args)
    .arg(elf)
    .args(core)
    .current_dir(dir)
    .stdin(Stdio::null())
    .stdout(file)
    .stderr(file2);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run gdb: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(GDB_TIMEOUT) {
        Ok(r) => {
            r.unwrap_or_else(|e| panic!("gdb failed: {e}"));
        }
        Err(_) => {
            // SAFETY: kill(2) takes no pointers, so it cannot break memory safety. The pid is
            // our own child's; the waiting thread has not reported it reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("gdb did not finish within {GDB_TIMEOUT:?}");
        }
    }
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    println!("---- gdb {args:?}\n{text}");
    text
}

/// Connects gdb to `k` and runs the command files `scripts` in order.
fn gdb_session(k: &Kvmgdb, elf: &Path, scripts: &[&str], dir: &Path) -> String {
    let mut args = vec!["-ex".to_string(), format!("target remote {}", k.addr)];
    for s in scripts {
        args.push("-x".into());
        args.push(script(s).display().to_string());
    }
    let out = gdb(&args, elf, None, dir);
    assert!(
        out.contains("@@end"),
        "the command files did not run to the end:\n{out}"
    );
    out
}

/// The output between `@@name` and the next `@@` marker.
fn part<'a>(out: &'a str, name: &str) -> &'a str {
    let marker = format!("@@{name}\n");
    let start = out
        .find(&marker)
        .unwrap_or_else(|| panic!("no @@{name} in:\n{out}"))
        + marker.len();
    let rest = &out[start..];
    &rest[..rest.find("@@").unwrap_or(rest.len())]
}

fn assert_has(text: &str, want: &str) {
    assert!(text.contains(want), "expected {want:?} in:\n{text}");
}

/// The value of the first `$N = value` line.
fn value(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix('$').and_then(|r| r.split_once(" = ")))
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("no value in:\n{text}"))
}

/// The function names of a backtrace, innermost first.
fn frames(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let after_in = l.split(" in ").nth(1).unwrap_or(l);
            let name = after_in.split_whitespace().find(|w| !w.starts_with('#'))?;
            Some(name.to_string())
        })
        .collect()
}

#[test]
fn tour_of_the_monitor_on_the_demo() {
    require_kvm_and_gdb();
    let dir = Scratch::new("tour");
    let k = Kvmgdb::start(&guest("demo.elf"), &dir.0);
    let out = gdb_session(&k, &guest("demo.elf"), &["monitor-tour.gdb"], &dir.0);

    let help = part(&out, "help");
    for cmd in ["info registers", "translate ADDR", "dump FILE", "sstep irq"] {
        assert_has(help, cmd);
    }

    let regs = part(&out, "registers");
    for want in [
        "CPU#0 64-bit long mode, CPL 0, 4-level paging",
        "RAX=",
        "R15=",
        "RIP=0000000000",
        "RFL=",
        "CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 code64",
        "SS =0018",
        "LDT=",
        "TR =",
        "GDT=     0000000000000500 0000001f",
        "IDT=",
        "CR0=",
        "CR3=0000000000009000",
        "CR4=",
        "CR8=",
        "DR0=",
        "DR7=",
        "EFER=0000000000000500 [LMA LME]",
        "APIC_BASE=",
        "FS_BASE=",
        "KERNEL_GS_BASE=",
    ] {
        assert_has(regs, want);
    }
    assert!(regs.lines().count() <= 26, "one screen:\n{regs}");

    assert_has(part(&out, "cpus"), "* CPU #0: rip=0x0000000000100");

    // The boot identity map: 4 GiB of supervisor read/write pages, merged into one range.
    assert_has(
        part(&out, "mem"),
        "0000000000000000-0000000100000000 0000000100000000 -rwx",
    );
    let tlb = part(&out, "tlb");
    assert_has(tlb, "0000000000000000: 0000000000000000 ");
    assert_has(tlb, "… (1792 more pages; 'monitor info tlb 0x20000000'");
    let top = part(&out, "tlb-top");
    assert_has(top, "00000000ffe00000: 00000000ffe00000 --P-----W 2M");
    assert!(!top.contains("more pages"), "{top}");

    let tr = part(&out, "translate");
    assert_has(tr, "PML4[0]");
    assert_has(tr, "PDPT[0]");
    assert_has(tr, "PD[0]");
    assert_has(tr, "=> guest-physical 0x10");
    assert_has(tr, "(2M page at 0x0; supervisor, writable, executable)");
    let tr = part(&out, "translate-unmapped");
    assert_has(tr, "PDPT[8]");
    assert_has(
        tr,
        "=> not mapped: the PDPT entry at guest-physical 0xa040 is 0x0",
    );

    let gdt = part(&out, "gdt");
    assert_has(gdt, "GDT at 0x500, limit 0x1f");
    assert_has(
        gdt,
        "0x0010  code64     base=0x0000000000000000 limit=0xffffffff DPL=0 P L=1 D=0 G=1",
    );
    assert_has(gdt, "0x0018  data ");
    // Older demos have no IDT; newer ones install a vector-3 gate for their own int3.
    let idt = part(&out, "idt");
    if !idt.contains("IDT at 0x0, limit 0: empty") {
        assert_has(idt, "vectors of 16-byte 64-bit gates");
        assert_has(idt, "0x03 #BP  int-gate64   0x0010:0x0000000000");
        assert_has(idt, "(255 vectors without a present gate not shown)");
    }

    let msr = part(&out, "msr");
    assert_has(msr, "MSR 0xc0000080 (EFER) = 0x0000000000000500");
    assert_has(
        msr,
        "MSR 0xc0000102 (KERNEL_GS_BASE) = 0x0000000000001234 (was 0x0)",
    );
    assert_eq!(
        msr.matches("(KERNEL_GS_BASE) = 0x0000000000001234").count(),
        2,
        "the decimal read sees the write:\n{msr}"
    );

    let kvm = part(&out, "kvm");
    assert_has(kvm, "KVM API version    12");
    assert_has(kvm, "sstep irq          on");

    let sstep = part(&out, "sstep");
    assert_has(sstep, "sstep irq off: interrupts may be delivered");
    assert_has(sstep, "sstep irq on: interrupts stay masked");

    let phys = part(&out, "phys");
    assert_has(phys, "phys on: gdb's addresses are guest-physical");
    assert_has(phys, "\"hello from the demo guest\"");
    assert_has(phys, "phys off");

    let reset = part(&out, "reset");
    assert_has(reset, "machine reset to the boot entry state (RIP=0x100000");
    let values: Vec<&str> = reset
        .lines()
        .filter_map(|l| l.strip_prefix('$').and_then(|r| r.split_once(" = ")))
        .map(|(_, v)| v.trim())
        .collect();
    // $pc == _start, counter back to 0, and the breakpoint still stops at tick.
    assert_eq!(values, ["1", "0", "1"], "{reset}");
    assert_has(reset, "Breakpoint 1, tick ()");
}

#[test]
fn bad_input_gets_one_line_errors_and_the_session_goes_on() {
    require_kvm_and_gdb();
    let dir = Scratch::new("bad-input");
    let k = Kvmgdb::start(&guest("demo.elf"), &dir.0);
    let out = gdb_session(&k, &guest("demo.elf"), &["monitor-bad-input.gdb"], &dir.0);
    let expected = [
        "error: \"zzz\" is not an MSR",
        "error: usage: monitor translate ADDR",
        "error: unknown monitor command \"frobnicate\"",
        "error: \"banana\" is not a number",
        "error: \"12ab\" is not a number",
        "error: usage: monitor phys [on|off]",
        "error: usage: monitor sstep irq [on|off]",
        "error: no CPU 7",
        "error: 0x100000000 is too large for an MSR number",
        "error: cannot create /nonexistent-kvmgdb-dir/x.core: No such file or directory",
        "error: usage: monitor reset",
        "error: usage: monitor msr N [VALUE]",
    ];
    for (i, want) in expected.iter().enumerate() {
        let p = part(&out, &(i + 1).to_string());
        let lines: Vec<&str> = p.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for case {}:\n{p}", i + 1);
        assert!(lines[0].starts_with(want), "case {}: {:?}", i + 1, lines[0]);
    }
    let after = part(&out, "after");
    assert_eq!(value(after), "1", "$pc is still at tick:\n{after}");
}

#[test]
fn higher_half_guest_translate_mem_and_core() {
    require_kvm_and_gdb();
    let dir = Scratch::new("higher-half");
    let elf = guest("higher_half.elf");
    let k = Kvmgdb::start(&elf, &dir.0);
    let out = gdb_session(&k, &elf, &["monitor-higher-half.gdb"], &dir.0);

    let page = value(part(&out, "phys4k")).to_string();
    assert!(page.starts_with("0x"), "{page}");
    let tr = part(&out, "translate");
    for level in ["PML4[511]", "PDPT[511]", "PD[0]", "PT[0]"] {
        assert_has(tr, level);
    }
    assert_has(tr, &format!("=> guest-physical {page} (4K page at {page};"));

    let mem = part(&out, "mem");
    assert_has(
        mem,
        "0000000000000000-0000000040000000 0000000040000000 -rwx",
    );
    assert!(
        mem.lines().any(|l| l.starts_with("ffffffff80000000-")),
        "the higher half is a range:\n{mem}"
    );
    let tlb = part(&out, "tlb");
    assert_has(
        tlb,
        &format!(
            "ffffffffc0000000: {:016x} ",
            u64::from_str_radix(&page[2..], 16).expect("hex")
        ),
    );
    assert_has(tlb, " 4K");

    let live = part(&out, "live");
    assert_has(part(&out, "dump"), "3 PT_LOAD segments");
    let core = dir.0.join("hh.core");
    let args = [
        "-x".into(),
        script("core-higher-half.gdb").display().to_string(),
    ];
    let from_core = gdb(&args, &elf, Some(&core), &dir.0);
    let c = part(&from_core, "core");
    assert_eq!(value(c), value(live));
    assert_eq!(frames(c), frames(live));
    assert_eq!(frames(c), ["hh_tick", "hh_main", "hh_start64"]);
    assert_has(c, "0xffffffffc0000000:\t\"4KPAGE!!\"");
}

#[test]
fn dump_writes_a_core_gdb_reads_like_the_live_guest() {
    require_kvm_and_gdb();
    let dir = Scratch::new("dump");
    let elf = guest("demo.elf");
    let k = Kvmgdb::start(&elf, &dir.0);
    let out = gdb_session(&k, &elf, &["monitor-dump.gdb"], &dir.0);
    let live = part(&out, "live");
    assert_eq!(value(live), "2", "counter after three stops at tick");
    let dump = part(&out, "dump");
    let core = dir.0.join("demo.core");
    assert_has(dump, &format!("wrote {}: ", core.display()));
    assert_has(
        dump,
        "ELF64 core, 1 PT_LOAD segments (4-level paging mappings)",
    );
    drop(k);

    let args = ["-x".into(), script("core-demo.gdb").display().to_string()];
    let from_core = gdb(&args, &elf, Some(&core), &dir.0);
    let c = part(&from_core, "core");
    assert_eq!(value(c), value(live), "p counter");
    assert_eq!(frames(c), frames(live));
    assert_eq!(frames(c), ["tick", "kmain", "_start"]);
    assert_has(&from_core, "Program terminated with signal SIGTRAP");
}

#[test]
fn multiboot_guest_registers_and_elf32_core() {
    require_kvm_and_gdb();
    let dir = Scratch::new("multiboot");
    let elf = guest("multiboot.elf");
    let k = Kvmgdb::start(&elf, &dir.0);
    let out = gdb_session(&k, &elf, &["monitor-multiboot.gdb"], &dir.0);
    let regs = part(&out, "registers");
    assert_has(regs, "CPU#0 32-bit protected mode, CPL 0, no paging");
    assert_has(regs, "EAX=");
    assert_has(regs, "EIP=00100");
    assert_has(
        regs,
        "CS =0010 0000000000000000 ffffffff 00c09b00 DPL=0 code32",
    );
    assert_has(
        part(&out, "mem"),
        "paging is disabled (CR0.PG=0): virtual addresses are physical",
    );
    assert_has(
        part(&out, "translate"),
        "0x100000 is guest-physical 0x100000",
    );
    assert_has(part(&out, "dump"), "ELF32 core, 1 PT_LOAD segments");
    let live = part(&out, "live");
    drop(k);

    let args = [
        "-x".into(),
        script("core-multiboot.gdb").display().to_string(),
    ];
    let from_core = gdb(&args, &elf, Some(&dir.0.join("mb.core")), &dir.0);
    let c = part(&from_core, "core");
    assert_eq!(value(c), value(live), "p mb_counter");
    assert_eq!(frames(c), frames(live));
    assert_eq!(frames(c), ["mb_tick", "mb_main", "_start"]);
}

#[test]
fn helper_commands_of_kvmgdb_gdb() {
    require_kvm_and_gdb();
    let dir = Scratch::new("helpers");
    let elf = guest("higher_half.elf");
    let k = Kvmgdb::start(&elf, &dir.0);
    let out = gdb_session(&k, &elf, &["kvmgdb.gdb", "monitor-helpers.gdb"], &dir.0);
    let pt = part(&out, "pt");
    assert_has(pt, "0xffffffffc0000000: 4-level paging");
    assert_has(pt, "PT[0]");
    assert_has(pt, "0xffffffff80"); // &hh_counter, evaluated by gdb
    assert!(
        part(&out, "pagetables")
            .lines()
            .any(|l| l.starts_with("ffffffff80000000-"))
    );
    assert_has(part(&out, "tlb"), "ffffffffc0000000: ");
    assert_has(part(&out, "gdt"), "code64");
    assert_has(part(&out, "idt"), "IDT at 0x0");
    assert_has(part(&out, "sysregs"), "CR3=");
    assert_has(part(&out, "cpus"), "hardware breakpoint");
    let msr = part(&out, "msr");
    assert_has(msr, "(EFER) = ");
    assert_has(msr, "(KERNEL_GS_BASE) = 0x0000000000000042");
    assert_has(part(&out, "kvm-caps"), "SET_GUEST_DEBUG");
    assert_has(part(&out, "sstep"), "sstep irq on");
    let phys = part(&out, "phys");
    assert_eq!(phys.matches("\"4KPAGE!!\"").count(), 2, "{phys}");
    assert_has(part(&out, "coredump"), "helpers.core");
    assert!(dir.0.join("helpers.core").is_file());
    let reset = part(&out, "reset");
    assert_has(reset, "hh_entry ()");
    assert_eq!(value(reset), "1", "$pc == hh_entry after kvm-reset");
}
