//! gdb's registers: the layouts and their `g`/`G` codec ([`layout`]), the target
//! description ([`xml`]), the mapping between KVM's structures and registers ([`kvm_map`]),
//! and the register packets ([`access`]).

pub mod access;
pub mod kvm_map;
pub mod layout;
pub mod xml;

/// The register layout gdb is served: what `qXfer:features:read:target.xml` names as the
/// architecture and what the `g` packet holds. gdb refuses a description whose architecture
/// does not match the one it selected (from its ELF file or `set architecture`), so the
/// choice decides which gdb habits work (README, "gdb architecture").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GdbArch {
    /// QEMU's `qemu-system-i386` layout: for `gdb kernel32.elf`.
    I386,
    /// QEMU's `qemu-system-x86_64` layout: for `gdb kernel64.elf`, and for
    /// `set architecture i386:x86-64` with a 32-bit file.
    X86_64,
}

impl GdbArch {
    /// The layout that follows the image: i386 for a 32-bit image (ELF32, a.out), x86-64
    /// for everything else.
    pub fn for_image(image_is_32bit: bool) -> GdbArch {
        if image_is_32bit {
            GdbArch::I386
        } else {
            GdbArch::X86_64
        }
    }

    /// gdb's name for the architecture (`set architecture NAME`).
    pub fn gdb_name(self) -> &'static str {
        match self {
            GdbArch::I386 => "i386",
            GdbArch::X86_64 => "i386:x86-64",
        }
    }
}

/// A `--gdb-arch` value that is neither `i386` nor `x86-64`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid gdb architecture {0:?}: expected i386 or x86-64")]
pub struct BadGdbArch(pub String);

impl std::str::FromStr for GdbArch {
    type Err = BadGdbArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "i386" => Ok(GdbArch::I386),
            // gdb's own spelling is accepted too.
            "x86-64" | "x86_64" | "i386:x86-64" => Ok(GdbArch::X86_64),
            _ => Err(BadGdbArch(s.to_string())),
        }
    }
}
