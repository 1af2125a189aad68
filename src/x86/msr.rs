//! Model-specific registers: the numbers kvmgdb reads and writes, and the names `monitor msr`
//! knows them by (SDM Vol. 4, chapter 2, Table 2-2).

use bitflags::bitflags;

/// IA32_TIME_STAMP_COUNTER.
pub const TSC: u32 = 0x10;
/// IA32_APIC_BASE: the local APIC's base address and enable bits (SDM Vol. 3A, 11.4.4).
pub const APIC_BASE: u32 = 0x1b;
/// IA32_FEATURE_CONTROL.
pub const FEATURE_CONTROL: u32 = 0x3a;
/// IA32_SYSENTER_CS.
pub const SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const SYSENTER_EIP: u32 = 0x176;
/// IA32_MISC_ENABLE.
pub const MISC_ENABLE: u32 = 0x1a0;
/// IA32_DEBUGCTL.
pub const DEBUGCTL: u32 = 0x1d9;
/// IA32_PAT.
pub const PAT: u32 = 0x277;
/// IA32_TSC_DEADLINE.
pub const TSC_DEADLINE: u32 = 0x6e0;
/// IA32_EFER: see [`super::Efer`] for its bits.
pub const EFER: u32 = 0xc000_0080;
/// IA32_STAR: SYSCALL/SYSRET segment selectors.
pub const STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: the 64-bit SYSCALL entry point.
pub const LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR: the compatibility-mode SYSCALL entry point (AMD).
pub const CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK: RFLAGS bits SYSCALL clears.
pub const FMASK: u32 = 0xc000_0084;
/// IA32_FS_BASE.
pub const FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE.
pub const GS_BASE: u32 = 0xc000_0101;
/// IA32_KERNEL_GS_BASE: the GS base `swapgs` swaps in.
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TSC_AUX: the value RDTSCP and RDPID return.
pub const TSC_AUX: u32 = 0xc000_0103;

/// MSRs known by name to `monitor msr`, by the name after the `IA32_` prefix.
pub const NAMES: &[(u32, &str)] = &[
    (TSC, "TSC"),
    (APIC_BASE, "APIC_BASE"),
    (FEATURE_CONTROL, "FEATURE_CONTROL"),
    (SYSENTER_CS, "SYSENTER_CS"),
    (SYSENTER_ESP, "SYSENTER_ESP"),
    (SYSENTER_EIP, "SYSENTER_EIP"),
    (MISC_ENABLE, "MISC_ENABLE"),
    (DEBUGCTL, "DEBUGCTL"),
    (PAT, "PAT"),
    (TSC_DEADLINE, "TSC_DEADLINE"),
    (EFER, "EFER"),
    (STAR, "STAR"),
    (LSTAR, "LSTAR"),
    (CSTAR, "CSTAR"),
    (FMASK, "FMASK"),
    (FS_BASE, "FS_BASE"),
    (GS_BASE, "GS_BASE"),
    (KERNEL_GS_BASE, "KERNEL_GS_BASE"),
    (TSC_AUX, "TSC_AUX"),
];

/// The name of MSR `index`, if `monitor msr` knows it.
pub fn name(index: u32) -> Option<&'static str> {
    NAMES.iter().find(|m| m.0 == index).map(|m| m.1)
}

/// The MSR called `name` (case-insensitive, with or without an `IA32_` or `MSR_` prefix).
pub fn by_name(name: &str) -> Option<u32> {
    let up = name.to_ascii_uppercase();
    let bare = up
        .strip_prefix("IA32_")
        .or_else(|| up.strip_prefix("MSR_"))
        .unwrap_or(&up);
    NAMES.iter().find(|m| m.1 == bare).map(|m| m.0)
}

bitflags! {
    /// IA32_APIC_BASE flag bits (SDM Vol. 3A, 11.4.4, Figure 11-5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ApicBase: u64 {
        /// Bit 8, BSP: this processor is the bootstrap processor.
        const BSP = 1 << 8;
        /// Bit 10, EXTD: x2APIC mode.
        const EXTD = 1 << 10;
        /// Bit 11, EN: the local APIC is enabled.
        const EN = 1 << 11;
    }
}

/// IA32_APIC_BASE bits 51:12: the APIC's physical base address (SDM Vol. 3A, 11.4.4).
pub const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_names() {
        assert_eq!(by_name("efer"), Some(EFER));
        assert_eq!(by_name("IA32_KERNEL_GS_BASE"), Some(KERNEL_GS_BASE));
        assert_eq!(by_name("MSR_LSTAR"), Some(0xc000_0082));
        assert_eq!(by_name("zzz"), None);
        assert_eq!(name(0x1b), Some("APIC_BASE"));
    }
}
