//! Builds the test guests in `guests/` from source with the machine's `gcc` and `ld`.
//!
//! Output: `$OUT_DIR/guests/<name>.elf` for every entry of [`GUESTS`]; the
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
    {
        println!("cargo:rerun-if-changed=guests/{file}");
    }
    println!("cargo:rustc-env=KVMGDB_GUEST_DIR={}", out_dir.display());

    check_tool("gcc", "--version");
    check_tool("ld", "--version");

    // One thread per guest: the compiles are independent and each is short.
    let errors: Vec<String> = thread::scope(|s| {
        let builds: Vec<_> = GUESTS
            .iter()
            .map(|guest| {
                let (src_dir, out_dir) = (&src_dir, &out_dir);
                s.spawn(move || build_guest(guest, src_dir, out_dir))
            })
            .collect();
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
