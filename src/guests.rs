//! The guests built from `guests/` by `build.rs`. The demo is embedded in the binary so
//! `kvmgdb` with no kernel argument has something to boot.

use std::path::{Path, PathBuf};

/// The demo guest (ELF64, long-mode entry).
pub const DEMO_ELF: &[u8] = include_bytes!(concat!(env!("KVMGDB_GUEST_DIR"), "/demo.elf"));

/// The directory holding every built guest (`demo.elf`, `higher_half.elf`, `multiboot.elf`,
/// `triple_fault.elf`).
pub fn guest_dir() -> &'static Path {
    Path::new(env!("KVMGDB_GUEST_DIR"))
}

/// Writes the embedded demo to a file gdb can load symbols from, returning its path. The
/// file is replaced atomically, so concurrent runs never see a half-written image.
pub fn write_demo_elf() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir();
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let path = dir.join(format!("kvmgdb-demo-{uid}.elf"));
    if std::fs::read(&path).is_ok_and(|b| b == DEMO_ELF) {
        return Ok(path);
    }
    let tmp = dir.join(format!("kvmgdb-demo-{uid}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, DEMO_ELF)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
