//! Builds the test guests in `guests/` from source with the machine's `gcc` and `ld`.
//!
//! Output: `$OUT_DIR/guests/<name>.elf` for every entry of [`GUESTS`], and
//! `$OUT_DIR/guests/initramfs.cpio` (see [`build_initramfs`]); the
//! directory is also exported to the crate as the compile-time environment
//! variable `KVMGDB_GUEST_DIR`. See `guests/README.md` for what each guest is.

use std::env;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

/// Printed whenever a tool is missing.
const INSTALL_HINT: &str = "apt-get install -y gcc binutils";

/// Flags shared by every guest compile (C and assembler).
const COMMON_CFLAGS: &[&str] = &[
    "-std=gnu11",
    "-g",
    "-Og",
    "-Wall",
    "-Wextra",
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-omit-frame-pointer",
    // Keep every call a real call so `bt` shows each frame.
    "-fno-optimize-sibling-calls",
    // No endbr64/endbr32: the instruction emulator need not know them.
    "-fcf-protection=none",
    // CFI goes to .debug_frame (not loaded) instead of .eh_frame.
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    // No implicit memset/memcpy calls: there is no libc to provide them.
    "-fno-tree-loop-distribute-patterns",
    "-mgeneral-regs-only",
];

/// Flags shared by every guest link.
const COMMON_LDFLAGS: &[&str] = &[
    "-nostdlib",
    "-static",
    "--build-id=none",
    "-z",
    "max-page-size=0x1000",
    "-z",
    "noexecstack",
];

/// The CPU mode a guest is compiled for.
#[derive(Clone, Copy)]
enum Arch {
    /// 64-bit long mode, with the given `-mcmodel`.
    X86_64 { code_model: &'static str },
    /// 32-bit protected mode.
    I386,
}

impl Arch {
    fn cflags(self) -> Vec<String> {
        match self {
            Arch::X86_64 { code_model } => vec![
                "-m64".into(),
                "-march=x86-64".into(),
                "-mno-red-zone".into(),
                format!("-mcmodel={code_model}"),
            ],
            Arch::I386 => vec!["-m32".into(), "-march=i686".into()],
        }
    }

    fn ld_emulation(self) -> &'static str {
        match self {
            Arch::X86_64 { .. } => "elf_x86_64",
            Arch::I386 => "elf_i386",
        }
    }
}

/// One guest image: its sources and linker script, relative to `guests/`.
struct Guest {
    name: &'static str,
    arch: Arch,
    sources: &'static [&'static str],
    linker_script: &'static str,
    /// The ELF entry symbol, when not the linker script's `ENTRY`.
    elf_entry: Option<&'static str>,
}

const GUESTS: &[Guest] = &[
    Guest {
        name: "demo",
        arch: Arch::X86_64 {
            code_model: "small",
        },
        sources: &["start64.S", "demo.S", "demo.c", "serial.c"],
        linker_script: "flat64.ld",
        elf_entry: None,
    },
    Guest {
        name: "higher_half",
        arch: Arch::X86_64 {
            code_model: "kernel",
        },
        sources: &["higher_half.S", "higher_half.c", "serial.c"],
        linker_script: "higher_half.ld",
        elf_entry: None,
    },
    Guest {
        name: "multiboot",
        arch: Arch::I386,
        sources: &["multiboot.S", "start32.S", "multiboot.c", "serial.c"],
        linker_script: "multiboot.ld",
        elf_entry: None,
    },
    Guest {
        name: "bench",
        arch: Arch::I386,
        sources: &["bench.S"],
        linker_script: "multiboot.ld",
        elf_entry: None,
    },
    Guest {
        name: "triple_fault",
        arch: Arch::X86_64 {
            code_model: "small",
        },
        sources: &["start64.S", "triple_fault.S", "triple_fault.c", "serial.c"],
        linker_script: "flat64.ld",
        elf_entry: None,
    },
    Guest {
        name: "ioapic_route",
        arch: Arch::X86_64 {
            code_model: "small",
        },
        sources: &["start64.S", "ioapic_route.S", "ioapic_route.c", "serial.c"],
        linker_script: "flat64.ld",
        elf_entry: None,
    },
    Guest {
        name: "smp",
        arch: Arch::X86_64 {
            code_model: "small",
        },
        sources: &["start64.S", "smp_trampoline.S", "smp.c", "serial.c"],
        linker_script: "flat64.ld",
        elf_entry: None,
    },
    Guest {
        name: "mptable64",
        arch: Arch::X86_64 {
            code_model: "small",
        },
        sources: &[
            "start64.S",
            "mptable_check.c",
            "firmware_check.c",
            "serial.c",
        ],
        linker_script: "flat64.ld",
        elf_entry: None,
    },
    Guest {
        name: "mptable_mb",
        arch: Arch::I386,
        sources: &[
            "multiboot.S",
            "start32.S",
            "mptable_check.c",
            "firmware_check.c",
            "serial.c",
        ],
        linker_script: "multiboot.ld",
        elf_entry: None,
    },
    Guest {
        name: "multiboot2",
        arch: Arch::I386,
        sources: &[
            "multiboot2.S",
            "start32.S",
            "multiboot2.c",
            "firmware_check.c",
            "serial.c",
        ],
        linker_script: "multiboot.ld",
        // The header's entry address tag names _start; the ELF entry is a trap.
        elf_entry: Some("mb2_elf_entry"),
    },
    Guest {
        name: "multiboot_mods",
        arch: Arch::I386,
        sources: &[
            "multiboot.S",
            "start32.S",
            "multiboot_mods.c",
            "firmware_check.c",
            "serial.c",
        ],
        linker_script: "multiboot.ld",
        elf_entry: None,
    },
];

/// Files in `guests/` that are included rather than listed as sources.
const HEADERS: &[&str] = &["guest.h", "firmware_check.h"];

/// The source of the initramfs' `/init`, relative to `guests/`.
const INIT_SOURCE: &str = "initramfs/init.S";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src_dir = manifest_dir.join("guests");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("guests");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=guests");
    for file in GUESTS
        .iter()
        .flat_map(|g| g.sources.iter().chain([&g.linker_script]))
        .chain(HEADERS)
        .chain(&[INIT_SOURCE])
    {
        println!("cargo:rerun-if-changed=guests/{file}");
    }
    println!("cargo:rustc-env=KVMGDB_GUEST_DIR={}", out_dir.display());

    check_tool("gcc", "--version");
    check_tool("ld", "--version");

    // One thread per guest: the compiles are independent and each is short.
    let errors: Vec<String> = thread::scope(|s| {
        let mut builds: Vec<_> = GUESTS
            .iter()
            .map(|guest| {
                let (src_dir, out_dir) = (&src_dir, &out_dir);
                s.spawn(move || build_guest(guest, src_dir, out_dir))
            })
            .collect();
        builds.push(s.spawn(|| build_initramfs(&src_dir, &out_dir)));
        builds
            .into_iter()
            .filter_map(|build| build.join().expect("guest build thread panicked").err())
            .collect()
    });
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Panics with an install hint unless `tool` can be run.
fn check_tool(tool: &str, version_flag: &str) {
    match Command::new(tool).arg(version_flag).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "kvmgdb guests: `{tool} {version_flag}` failed ({}); the test guests need gcc and ld: {INSTALL_HINT}",
            out.status
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "kvmgdb guests: `{tool}` not found; the test guests in guests/ are built with gcc and ld: {INSTALL_HINT}"
        ),
        Err(e) => panic!("kvmgdb guests: cannot run `{tool}`: {e}; {INSTALL_HINT}"),
    }
}

/// Compiles and links one guest into `out_dir/<name>.elf`.
fn build_guest(guest: &Guest, src_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let obj_dir = out_dir.join("obj").join(guest.name);
    std::fs::create_dir_all(&obj_dir)
        .map_err(|e| format!("kvmgdb guests: cannot create {}: {e}", obj_dir.display()))?;

    let mut objects = Vec::with_capacity(guest.sources.len());
    for source in guest.sources {
        let object = obj_dir.join(format!("{source}.o"));
        let mut cmd = Command::new("gcc");
        cmd.args(COMMON_CFLAGS)
            .args(guest.arch.cflags())
            .arg("-I")
            .arg(src_dir)
            .arg("-c")
            .arg(src_dir.join(source))
            .arg("-o")
            .arg(&object);
        run(cmd, guest.name)?;
        objects.push(object);
    }

    let elf = out_dir.join(format!("{}.elf", guest.name));
    let mut cmd = Command::new("ld");
    cmd.arg("-m")
        .arg(guest.arch.ld_emulation())
        .args(COMMON_LDFLAGS)
        .arg("-T")
        .arg(src_dir.join(guest.linker_script))
        .arg("-o")
        .arg(&elf)
        .args(&objects);
    if let Some(entry) = guest.elf_entry {
        cmd.arg("-e").arg(entry);
    }
    run(cmd, guest.name)
}

/// Builds the Linux test initramfs `out_dir/initramfs.cpio`: a static user-space `/init`
/// from `guests/initramfs/init.S` (raw system calls, no libc: it prints a line and powers
/// off), packed with a `/dev/console` node as an uncompressed newc cpio archive, the format
/// the kernel unpacks (Documentation/driver-api/early-userspace/buffer-format.rst).
fn build_initramfs(src_dir: &Path, out_dir: &Path) -> Result<(), String> {
    const NAME: &str = "initramfs";
    let obj_dir = out_dir.join("obj").join(NAME);
    std::fs::create_dir_all(&obj_dir)
        .map_err(|e| format!("kvmgdb guests: cannot create {}: {e}", obj_dir.display()))?;
    let object = obj_dir.join("init.o");
    let mut cmd = Command::new("gcc");
    cmd.args(["-m64", "-c", "-Wall"])
        .arg(src_dir.join(INIT_SOURCE))
        .arg("-o")
        .arg(&object);
    run(cmd, NAME)?;
    let init = obj_dir.join("init");
    let mut cmd = Command::new("ld");
    cmd.args([
        "-m",
        "elf_x86_64",
        "-static",
        "-nostdlib",
        "--build-id=none",
    ])
    .args(["-z", "noexecstack", "-o"])
    .arg(&init)
    .arg(&object);
    run(cmd, NAME)?;
    let init_data = std::fs::read(&init)
        .map_err(|e| format!("kvmgdb guests: cannot read {}: {e}", init.display()))?;

    let mut cpio = Vec::new();
    cpio_entry(&mut cpio, 1, "dev", cpio::DIR | 0o755, (0, 0), &[]);
    // The kernel opens /dev/console for init's fds 0-2 before devtmpfs is mounted.
    cpio_entry(&mut cpio, 2, "dev/console", cpio::CHAR | 0o600, (5, 1), &[]);
    cpio_entry(&mut cpio, 3, "init", cpio::FILE | 0o755, (0, 0), &init_data);
    cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, (0, 0), &[]);
    let path = out_dir.join("initramfs.cpio");
    std::fs::write(&path, cpio)
        .map_err(|e| format!("kvmgdb guests: cannot write {}: {e}", path.display()))
}

/// File types of a cpio entry's mode (as in `st_mode`).
mod cpio {
    pub const DIR: u32 = 0o040000;
    pub const CHAR: u32 = 0o020000;
    pub const FILE: u32 = 0o100000;
}

/// Appends one "newc" cpio entry: the 110-byte ASCII header ("070701" and 13 eight-digit
/// hex fields), the name with its NUL, padding to 4 bytes, the data, padding to 4 bytes.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let nlink = if mode & cpio::DIR != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check (unused by newc)
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Runs `cmd`, passing its warnings on to cargo. On failure, returns a
/// message with the command line and its output.
fn run(mut cmd: Command, guest: &str) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!("kvmgdb guests: `{program}` not found: {INSTALL_HINT}")
        } else {
            format!("kvmgdb guests: cannot run `{program}`: {e}")
        }
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "kvmgdb guests: building guest `{guest}` failed ({}):\n{cmd:?}\n{stderr}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning=guest {guest}: {line}");
    }
    Ok(())
}
