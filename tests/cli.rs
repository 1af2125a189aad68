//! The command line without gdb: bad input gives one clear error line and a non-zero
//! status (never a panic), `caps` prints the KVM table, and guests that end by themselves
//! set the exit status.

mod common;

use common::*;
use kvmgdb::cli::{EXIT_ERROR, EXIT_TRIPLE_FAULT, EXIT_USAGE};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

/// How long kvmgdb may take to reject bad input or to run a short guest.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs kvmgdb and checks that it failed with exactly one `kvmgdb: error:` line that
/// contains each of `words`.
#[track_caller]
fn assert_error(args: &[&str], words: &[&str]) {
    assert_one_error(args, EXIT_ERROR, words);
}

/// Runs kvmgdb and checks that clap rejected the command line (status 2).
#[track_caller]
fn assert_usage_error(args: &[&str], words: &[&str]) {
    let (status, stdout, stderr) = run_kvmgdb(args, TIMEOUT);
    let what = format!("kvmgdb {args:?}: status {status}, stdout {stdout:?}, stderr {stderr:?}");
    assert!(!stderr.contains("panicked"), "{what}");
    assert_eq!(status, i32::from(EXIT_USAGE), "{what}");
    assert!(stderr.starts_with("error: invalid value "), "{what}");
    for w in words {
        assert!(stderr.contains(w), "expected {w:?} in the error; {what}");
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Runs `kernel` with no stub and no serial output, `extra` options first; checks it ended
/// with status 0 (a guest that halts with interrupts off) and returns stderr.
#[track_caller]
fn run_to_halt(extra: &[&str], kernel: &Path) -> String {
    let mut args = vec!["--gdb", "none", "--serial", "none"];
    args.extend(extra);
    args.push(path_str(kernel));
    let (status, _, stderr) = run_kvmgdb(&args, TIMEOUT);
    assert_eq!(status, 0, "{args:?}: stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    stderr
}

/// Makes the file at `path` `len` bytes long (sparse past its end).
fn grow(path: &Path, len: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

#[test]
fn missing_kernel_file() {
    require_kvm();
    let dir = TestDir::new("cli-missing");
    let missing = dir.join("no-such-kernel.elf");
    assert_error(
        &["--gdb", "none", path_str(&missing)],
        &[path_str(&missing), "No such file"],
    );
}

#[test]
fn empty_kernel_file() {
    require_kvm();
    let dir = TestDir::new("cli-empty");
    let empty = dir.join("empty.elf");
    std::fs::write(&empty, b"").unwrap();
    assert_error(&["--gdb", "none", path_str(&empty)], &["empty"]);
}

#[test]
fn truncated_elf_files() {
    require_kvm();
    let dir = TestDir::new("cli-truncated");
    let demo = std::fs::read(guest("demo.elf")).unwrap();
    // 100 bytes: the ELF header but not the program headers; 2000: the headers but not the
    // code (which starts at file offset 0x1000).
    for len in [100, 2000] {
        let path = dir.join(&format!("demo-{len}.elf"));
        std::fs::write(&path, &demo[..len]).unwrap();
        assert_error(&["--gdb", "none", path_str(&path)], &["truncated"]);
    }
}

#[test]
fn text_file_is_not_a_kernel() {
    require_kvm();
    let dir = TestDir::new("cli-text");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "this is a text file, not a kernel\n".repeat(10)).unwrap();
    assert_error(&["--gdb", "none", path_str(&text)], &["not a kernel"]);
}

/// A minimal ELF64 x86-64 executable: one PT_LOAD at 1 MiB whose memory size is `memsz`
/// (the rest is zero-filled .bss), entered at a `hlt`.
fn tiny_elf64(memsz: u64) -> Vec<u8> {
    tiny_elf64_with_note(memsz, None)
}

/// [`tiny_elf64`] with, when `owner` is given, a PT_NOTE segment holding one note of that
/// owner (a vmlinux carries one owned by "Linux").
fn tiny_elf64_with_note(memsz: u64, owner: Option<&str>) -> Vec<u8> {
    const LOAD_ADDR: u64 = 0x10_0000;
    const EHDR_SIZE: u16 = 64;
    const PHDR_SIZE: u16 = 56;
    const PHNUM: u16 = 2;
    const CODE_OFFSET: u64 = (EHDR_SIZE + PHNUM * PHDR_SIZE) as u64;
    const HLT: u8 = 0xf4;
    const PT_LOAD: u32 = 1;
    const PT_NOTE: u32 = 4;
    const PT_NULL: u32 = 0;
    let mut f = Vec::new();
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(LOAD_ADDR + CODE_OFFSET).to_le_bytes()); // e_entry
    f.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&PHDR_SIZE.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&PHNUM.to_le_bytes()); // e_phnum
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(f.len(), EHDR_SIZE as usize);
    let filesz = CODE_OFFSET + 1;
    let phdr = |f: &mut Vec<u8>, p_type: u32, offset: u64, addr: u64, filesz: u64, memsz: u64| {
        f.extend_from_slice(&p_type.to_le_bytes());
        f.extend_from_slice(&7u32.to_le_bytes()); // p_flags: RWX
        f.extend_from_slice(&offset.to_le_bytes()); // p_offset
        f.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
        f.extend_from_slice(&addr.to_le_bytes()); // p_paddr
        f.extend_from_slice(&filesz.to_le_bytes()); // p_filesz
        f.extend_from_slice(&memsz.to_le_bytes()); // p_memsz
        f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    };
    phdr(&mut f, PT_LOAD, 0, LOAD_ADDR, filesz, memsz);
    // The note: namesz, descsz, type, the name (NUL-terminated) padded to 4, no desc.
    let mut note = Vec::new();
    if let Some(owner) = owner {
        let name = format!("{owner}\0");
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&0u32.to_le_bytes());
        note.extend_from_slice(&1u32.to_le_bytes());
        note.extend_from_slice(name.as_bytes());
        note.resize(note.len().next_multiple_of(4), 0);
    }
    let note_offset = filesz.next_multiple_of(4);
    let note_type = if owner.is_some() { PT_NOTE } else { PT_NULL };
    phdr(&mut f, note_type, note_offset, 0, note.len() as u64, 0);
    assert_eq!(f.len() as u64, CODE_OFFSET);
    f.push(HLT);
    f.resize(note_offset as usize, 0);
    f.extend_from_slice(&note);
    f
}

#[test]
fn kernel_larger_than_ram() {
    require_kvm();
    let dir = TestDir::new("cli-too-big");
    let big = dir.join("big.elf");
    std::fs::write(&big, tiny_elf64(64 << 20)).unwrap();
    assert_error(
        &["--gdb", "none", "--memory", "16M", path_str(&big)],
        &["does not fit", "--memory"],
    );
    // The same image boots with enough RAM: it halts at once with interrupts off, which
    // ends the VM with status 0. So the error above was about the size, not the image.
    run_to_halt(&["--memory", "128M"], &big);
}

#[test]
fn bad_memory_sizes() {
    let demo = guest("demo.elf");
    for size in ["0", "12Q", "abc"] {
        assert_usage_error(
            &["--gdb", "none", "--memory", size, path_str(&demo)],
            &["--memory", size],
        );
    }
}

#[test]
fn bad_vcpu_counts() {
    let demo = guest("demo.elf");
    for n in ["0", "two", "1.5"] {
        assert_usage_error(
            &["--gdb", "none", "--cpus", n, path_str(&demo)],
            &["--cpus", n],
        );
    }
    // Above kvmgdb's 64 (and any KVM's limit is named): refused before the boot.
    assert_error(
        &["--gdb", "none", "--cpus", "65", path_str(&demo)],
        &["65 vCPUs", "at most 64", "KVM_CAP_MAX_VCPUS"],
    );
}

#[test]
fn bad_gdb_address() {
    let demo = guest("demo.elf");
    assert_usage_error(
        &["--gdb", "nonsense", path_str(&demo)],
        &["--gdb", "nonsense"],
    );
}

#[test]
fn gdb_address_that_cannot_be_bound() {
    require_kvm();
    let demo = guest("demo.elf");
    // 1.2.3.4 is no address of this machine.
    assert_error(
        &["--gdb", "1.2.3.4:1", "--serial", "none", path_str(&demo)],
        &["1.2.3.4:1"],
    );
}

#[test]
fn gdb_port_already_in_use() {
    require_kvm();
    let demo = guest("demo.elf");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_error(
        &["--gdb", &addr, "--serial", "none", path_str(&demo)],
        &[&addr, "in use"],
    );
    drop(taken);
}

#[test]
fn caps_prints_the_kvm_table() {
    require_kvm();
    let (status, stdout, stderr) = run_kvmgdb(&["caps"], TIMEOUT);
    assert_eq!(status, 0, "stderr: {stderr}");
    let api = stdout
        .lines()
        .find(|l| l.starts_with("KVM API version"))
        .unwrap_or_else(|| panic!("no API version line in:\n{stdout}"));
    assert_eq!(api.split_whitespace().last(), Some("12"), "{api}");
    for name in ["SET_GUEST_DEBUG ", "IMMEDIATE_EXIT ", "MAX_VCPUS "] {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "no {name} line in:\n{stdout}"
        );
    }
}

#[test]
fn triple_fault_without_gdb_exits_with_status_4() {
    require_kvm();
    let dir = TestDir::new("cli-triple-fault");
    let serial = dir.join("serial.txt");
    let (status, _, stderr) = run_kvmgdb(
        &[
            "--gdb",
            "none",
            "--serial",
            path_str(&serial),
            path_str(&guest("triple_fault.elf")),
        ],
        TIMEOUT,
    );
    assert_eq!(status, i32::from(EXIT_TRIPLE_FAULT), "stderr: {stderr}");
    assert!(stderr.contains("triple fault"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(
        std::fs::read_to_string(&serial).unwrap(),
        "about to triple fault\n"
    );
}

#[test]
fn multiboot_without_gdb_exits_through_debug_exit() {
    require_kvm();
    let dir = TestDir::new("cli-multiboot");
    let serial = dir.join("serial.txt");
    let (status, _, stderr) = run_kvmgdb(
        &[
            "--gdb",
            "none",
            "--serial",
            path_str(&serial),
            path_str(&guest("multiboot.elf")),
        ],
        TIMEOUT,
    );
    // debug_exit(0x10): (0x10 << 1) | 1 = 33, after 1000 calls of mb_tick.
    assert_eq!(status, 33, "stderr: {stderr}");
    let out = std::fs::read_to_string(&serial).unwrap();
    assert!(
        out.contains("kvmgdb multiboot guest: magic ok\n"),
        "serial: {out:?}"
    );
    assert!(
        out.contains("mem_upper=130048 KiB\n"),
        "serial (128 MiB default): {out:?}"
    );
}

#[test]
fn two_kernels_are_refused_with_a_clear_message() {
    let dir = TestDir::new("cli-two-kernels");
    let (a, b) = (dir.join("a.elf"), dir.join("b.elf"));
    for args in [
        vec![path_str(&a), path_str(&b)],
        vec![
            "--gdb",
            "none",
            path_str(&a),
            "--memory",
            "64M",
            path_str(&b),
        ],
        // A second path that happens to be a subcommand's name is still a second kernel.
        vec![path_str(&a), "caps"],
    ] {
        let (status, stdout, stderr) = run_kvmgdb(&args, TIMEOUT);
        let what =
            format!("kvmgdb {args:?}: status {status}, stdout {stdout:?}, stderr {stderr:?}");
        assert_eq!(status, i32::from(EXIT_USAGE), "{what}");
        let second = args.last().unwrap();
        let want = format!("error: kvmgdb takes one kernel image; got a second: {second}\n");
        assert!(stderr.starts_with(&want), "{what}");
        assert!(!stderr.contains("subcommand"), "{what}");
        assert!(stdout.is_empty(), "{what}");
    }
}

/// A debug vmlinux is far larger than what it loads (its symbols follow the segments): an
/// ELF file larger than RAM boots when its segments fit, and only they are read.
#[test]
fn elf_larger_than_ram_boots_when_its_segments_fit() {
    require_kvm();
    let dir = TestDir::new("cli-big-elf");
    let big = dir.join("big.elf");
    std::fs::write(&big, tiny_elf64(0x1000)).unwrap();
    // 4 GiB of sparse "debug info" after the segments, against 16 MiB of RAM: it halts at
    // once with interrupts off.
    grow(&big, 4 << 30);
    run_to_halt(&["--memory", "16M"], &big);
    // A file of no format that large is still refused by its size.
    let giant = dir.join("giant.bin");
    std::fs::write(&giant, "not a kernel").unwrap();
    grow(&giant, 4 << 30);
    assert_error(
        &["--gdb", "none", "--memory", "16M", path_str(&giant)],
        &["is 4294967296 bytes", "larger than guest RAM (16 MiB)"],
    );
}

/// The --pvm-linux preset: added by itself to a Linux kernel on PVM (the host KVM is PVM
/// when the kvm_pvm module is loaded), with a line on stderr saying so; never with
/// --no-pvm-linux; and --pvm-linux on something that is not Linux says it does nothing.
#[test]
fn pvm_linux_preset_notes() {
    require_kvm();
    let dir = TestDir::new("cli-pvm-linux");
    let vmlinux = dir.join("vmlinux");
    std::fs::write(&vmlinux, tiny_elf64_with_note(0x1000, Some("Linux"))).unwrap();
    let run = run_to_halt;
    let auto_note = "appending \"noxsave clearcpuid=popcnt,smap,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni\" to the vmlinux's command line";
    let on_pvm = Path::new("/sys/module/kvm_pvm").exists();
    let stderr = run(&[], &vmlinux);
    assert_eq!(
        stderr.contains(auto_note),
        on_pvm,
        "PVM: {on_pvm}; stderr: {stderr}"
    );
    let stderr = run(&["--no-pvm-linux"], &vmlinux);
    assert!(!stderr.contains("appending"), "{stderr}");
    // Asked for, it is applied without a note (the user knows).
    let stderr = run(&["--pvm-linux"], &vmlinux);
    assert!(!stderr.contains("appending"), "{stderr}");
    // The same image without its Linux note is not Linux.
    let plain = dir.join("plain.elf");
    std::fs::write(&plain, tiny_elf64(0x1000)).unwrap();
    let stderr = run(&[], &plain);
    assert!(!stderr.contains("appending"), "{stderr}");
    let stderr = run(&["--pvm-linux"], &plain);
    assert_contains(&stderr, "--pvm-linux: ");
    assert_contains(
        &stderr,
        "is not a Linux kernel; its command line is left as given",
    );
}
