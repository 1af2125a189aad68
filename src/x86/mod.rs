//! x86 architectural facts, in one place: control-register, EFER, RFLAGS and debug-register
//! bits, page-table entry bits, MSRs, paging, segment descriptors and the XSAVE layout, all
//! as the Intel SDM defines them. Nothing here calls KVM or knows gdb: the VMM, the boot
//! code, the monitor and the stub all read the architecture from here.
//!
//! Section numbers are those of the Intel SDM (Vol. 3A/3B unless said otherwise; debug
//! registers are chapter 18 of current editions, 17 of older ones).

pub mod descriptors;
pub mod msr;
pub mod paging;
pub mod xsave;

use bitflags::bitflags;

/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Size of the smallest page, and the unit page-table walks and memory slots split at
/// (SDM 4.3, 4.4.2, 4.5.4).
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Size of a page mapped by a PAE or 4/5-level PDE with PS set (SDM 4.4.2, 4.5.4).
pub const PAGE_SIZE_2M: u64 = 1 << 21;
/// Size of a page mapped by a 32-bit-paging PDE with PS set (SDM 4.3).
pub const PAGE_SIZE_4M: u64 = 1 << 22;
/// Size of a page mapped by a 4/5-level PDPTE with PS set (SDM 4.5.4).
pub const PAGE_SIZE_1G: u64 = 1 << 30;

bitflags! {
    /// CR0 (SDM 2.5, Figure 2-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr0: u64 {
        /// Bit 0, PE: protected mode.
        const PE = 1 << 0;
        /// Bit 1, MP: WAIT/FWAIT honour TS.
        const MP = 1 << 1;
        /// Bit 2, EM: no x87 present; x87 instructions raise #NM.
        const EM = 1 << 2;
        /// Bit 3, TS: task switched; the next x87/SSE instruction raises #NM.
        const TS = 1 << 3;
        /// Bit 4, ET: extension type (always 1 on modern processors).
        const ET = 1 << 4;
        /// Bit 5, NE: native x87 error reporting (#MF rather than IRQ 13).
        const NE = 1 << 5;
        /// Bit 16, WP: supervisor writes honour read-only pages (SDM 4.6.1).
        const WP = 1 << 16;
        /// Bit 18, AM: alignment checking allowed (with RFLAGS.AC).
        const AM = 1 << 18;
        /// Bit 29, NW: not write-through.
        const NW = 1 << 29;
        /// Bit 30, CD: cache disable.
        const CD = 1 << 30;
        /// Bit 31, PG: paging enabled (SDM 4.1.1).
        const PG = 1 << 31;
    }
}

bitflags! {
    /// CR4 (SDM 2.5, Figure 2-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr4: u64 {
        /// Bit 0, VME: virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Bit 1, PVI: protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// Bit 2, TSD: RDTSC restricted to CPL 0.
        const TSD = 1 << 2;
        /// Bit 3, DE: debugging extensions (DR4/DR5 fault, I/O breakpoints allowed).
        const DE = 1 << 3;
        /// Bit 4, PSE: 4-MByte pages in 32-bit paging (SDM 4.3).
        const PSE = 1 << 4;
        /// Bit 5, PAE: PAE or 4/5-level paging (SDM 4.1.1).
        const PAE = 1 << 5;
        /// Bit 6, MCE: machine-check exception enabled.
        const MCE = 1 << 6;
        /// Bit 7, PGE: global pages (SDM 4.10.2.4).
        const PGE = 1 << 7;
        /// Bit 8, PCE: RDPMC allowed at any CPL.
        const PCE = 1 << 8;
        /// Bit 9, OSFXSR: the OS supports FXSAVE/FXRSTOR, so SSE is usable.
        const OSFXSR = 1 << 9;
        /// Bit 10, OSXMMEXCPT: the OS handles #XM for unmasked SIMD exceptions.
        const OSXMMEXCPT = 1 << 10;
        /// Bit 11, UMIP: SGDT, SIDT, SLDT, SMSW and STR restricted to CPL 0.
        const UMIP = 1 << 11;
        /// Bit 12, LA57: 5-level paging when in IA-32e mode (SDM 4.1.1).
        const LA57 = 1 << 12;
        /// Bit 13, VMXE: VMX enabled.
        const VMXE = 1 << 13;
        /// Bit 14, SMXE: SMX enabled.
        const SMXE = 1 << 14;
        /// Bit 16, FSGSBASE: RDFSBASE and friends allowed.
        const FSGSBASE = 1 << 16;
        /// Bit 17, PCIDE: CR3 bits 11:0 are a PCID (SDM 4.10.1).
        const PCIDE = 1 << 17;
        /// Bit 18, OSXSAVE: XSAVE and XGETBV/XSETBV enabled.
        const OSXSAVE = 1 << 18;
        /// Bit 20, SMEP: supervisor-mode execution prevention (SDM 4.6).
        const SMEP = 1 << 20;
        /// Bit 21, SMAP: supervisor-mode access prevention (SDM 4.6).
        const SMAP = 1 << 21;
        /// Bit 22, PKE: protection keys for user pages (SDM 4.6.2).
        const PKE = 1 << 22;
        /// Bit 23, CET: control-flow enforcement.
        const CET = 1 << 23;
        /// Bit 24, PKS: protection keys for supervisor pages (SDM 4.6.2).
        const PKS = 1 << 24;
    }
}

bitflags! {
    /// IA32_EFER, MSR 0xC000_0080 (SDM 2.2.1, Table 2-1; AMD APM Vol. 2, 3.1.7 for the
    /// AMD-only bits).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Efer: u64 {
        /// Bit 0, SCE: SYSCALL/SYSRET enabled.
        const SCE = 1 << 0;
        /// Bit 8, LME: long mode enable (SDM 9.8.5).
        const LME = 1 << 8;
        /// Bit 10, LMA: long mode active, set by the processor (SDM 9.8.5).
        const LMA = 1 << 10;
        /// Bit 11, NXE: the XD bit of PAE and 4/5-level entries is honoured (SDM 4.1.3).
        const NXE = 1 << 11;
        /// Bit 12, SVME: AMD secure virtual machine enable.
        const SVME = 1 << 12;
        /// Bit 13, LMSLE: AMD long-mode segment limit enable.
        const LMSLE = 1 << 13;
        /// Bit 14, FFXSR: AMD fast FXSAVE/FXRSTOR.
        const FFXSR = 1 << 14;
        /// Bit 15, TCE: AMD translation cache extension.
        const TCE = 1 << 15;
    }
}

bitflags! {
    /// RFLAGS (SDM Vol. 1, 3.4.3, Figure 3-8). IOPL is a two-bit field: see
    /// [`RFLAGS_IOPL_SHIFT`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Rflags: u64 {
        /// Bit 0, CF: carry.
        const CF = 1 << 0;
        /// Bit 1: reserved, always 1.
        const FIXED1 = 1 << 1;
        /// Bit 2, PF: parity.
        const PF = 1 << 2;
        /// Bit 4, AF: auxiliary carry.
        const AF = 1 << 4;
        /// Bit 6, ZF: zero.
        const ZF = 1 << 6;
        /// Bit 7, SF: sign.
        const SF = 1 << 7;
        /// Bit 8, TF: trap after each instruction (single step, SDM 18.3.1.4).
        const TF = 1 << 8;
        /// Bit 9, IF: maskable interrupts enabled.
        const IF = 1 << 9;
        /// Bit 10, DF: string instructions count down.
        const DF = 1 << 10;
        /// Bit 11, OF: overflow.
        const OF = 1 << 11;
        /// Bit 14, NT: nested task.
        const NT = 1 << 14;
        /// Bit 16, RF: resume flag, suppresses instruction breakpoints once (SDM 18.3.1.1).
        const RF = 1 << 16;
        /// Bit 17, VM: virtual-8086 mode.
        const VM = 1 << 17;
        /// Bit 18, AC: alignment check / SMAP override.
        const AC = 1 << 18;
        /// Bit 19, VIF: virtual interrupt flag.
        const VIF = 1 << 19;
        /// Bit 20, VIP: virtual interrupt pending.
        const VIP = 1 << 20;
        /// Bit 21, ID: CPUID is available.
        const ID = 1 << 21;
    }
}

/// RFLAGS bits 13:12, IOPL: the I/O privilege level (SDM Vol. 1, 3.4.3.3).
pub const RFLAGS_IOPL_SHIFT: u32 = 12;

bitflags! {
    /// DR6, the debug status register (SDM 18.2.3, Figure 18-1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Dr6: u64 {
        /// Bit 0, B0: breakpoint 0's condition was met.
        const B0 = 1 << 0;
        /// Bit 1, B1: breakpoint 1's condition was met.
        const B1 = 1 << 1;
        /// Bit 2, B2: breakpoint 2's condition was met.
        const B2 = 1 << 2;
        /// Bit 3, B3: breakpoint 3's condition was met.
        const B3 = 1 << 3;
        /// Bit 13, BD: the next instruction accesses a debug register (DR7.GD).
        const BD = 1 << 13;
        /// Bit 14, BS: single step (RFLAGS.TF) caused the #DB.
        const BS = 1 << 14;
        /// Bit 15, BT: a task switch to a TSS with the T flag caused the #DB.
        const BT = 1 << 15;
    }
}

impl Dr6 {
    /// The lowest breakpoint slot (0–3) whose B bit is set.
    pub fn hit_slot(self) -> Option<usize> {
        (0..DEBUG_SLOTS).find(|&n| self.bits() & (1 << n) != 0)
    }
}

/// Breakpoint address registers DR0–DR3 (SDM 18.2.1).
pub const DEBUG_SLOTS: usize = 4;

bitflags! {
    /// DR7, the debug control register: the enable bits (SDM 18.2.4, Figure 18-1). The
    /// per-slot R/W and LEN fields are two-bit fields: see [`dr7_rw_len`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Dr7: u64 {
        /// Bit 0, L0: breakpoint 0 enabled for the current task.
        const L0 = 1 << 0;
        /// Bit 1, G0: breakpoint 0 enabled for all tasks.
        const G0 = 1 << 1;
        /// Bit 2, L1.
        const L1 = 1 << 2;
        /// Bit 3, G1.
        const G1 = 1 << 3;
        /// Bit 4, L2.
        const L2 = 1 << 4;
        /// Bit 5, G2.
        const G2 = 1 << 5;
        /// Bit 6, L3.
        const L3 = 1 << 6;
        /// Bit 7, G3.
        const G3 = 1 << 7;
        /// Bit 8, LE: exact data breakpoints (local).
        const LE = 1 << 8;
        /// Bit 9, GE: exact data breakpoints (global).
        const GE = 1 << 9;
        /// Bit 10: reserved, always 1.
        const FIXED1 = 1 << 10;
        /// Bit 13, GD: general detect, #DB on any debug-register access.
        const GD = 1 << 13;
    }
}

impl Dr7 {
    /// The local-enable bit of breakpoint `slot` (0–3): bit 2·slot.
    pub const fn local_enable(slot: usize) -> Dr7 {
        Dr7::from_bits_retain(1 << (2 * slot))
    }

    /// Whether breakpoint `slot` (0–3) is enabled, locally or globally.
    pub fn slot_enabled(self, slot: usize) -> bool {
        self.bits() & (0b11 << (2 * slot)) != 0
    }
}

/// DR7 bits 31:16 hold R/W then LEN, two bits each, for each slot in turn (SDM 18.2.4).
pub const DR7_RW_LEN_SHIFT: u32 = 16;

/// The R/W (00 execute, 01 write, 10 I/O, 11 read/write) and LEN (00 1 byte, 01 2, 10 8,
/// 11 4) fields of breakpoint `slot` (0–3) in `dr7` (SDM 18.2.4, 18.2.5).
pub fn dr7_rw_len(dr7: u64, slot: usize) -> (u8, u8) {
    let shift = DR7_RW_LEN_SHIFT + 4 * slot as u32;
    (((dr7 >> shift) & 3) as u8, ((dr7 >> (shift + 2)) & 3) as u8)
}

/// Entry bit 0, P: the entry is present (SDM 4.3, 4.4.2, 4.5.4).
pub const PTE_PRESENT: u64 = 1 << 0;
/// Entry bit 1, R/W: writes allowed through this entry (SDM 4.6.1).
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Entry bit 2, U/S: user-mode accesses allowed through this entry (SDM 4.6.1).
pub const PTE_USER: u64 = 1 << 2;
/// Entry bit 3, PWT: page-level write-through (SDM 4.9).
pub const PTE_PWT: u64 = 1 << 3;
/// Entry bit 4, PCD: page-level cache disable (SDM 4.9).
pub const PTE_PCD: u64 = 1 << 4;
/// Entry bit 5, A: accessed (SDM 4.8).
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Entry bit 6, D: dirty, in entries that map a page (SDM 4.8).
pub const PTE_DIRTY: u64 = 1 << 6;
/// Entry bit 7, PS: this entry maps a large page instead of pointing to a table (SDM 4.3,
/// 4.4.2, 4.5.4). In a PT entry the same bit is PAT.
pub const PTE_PS: u64 = 1 << 7;
/// Entry bit 8, G: global translation, in entries that map a page (SDM 4.10.2.4).
pub const PTE_GLOBAL: u64 = 1 << 8;
/// Entry bit 63, XD: instruction fetches not allowed; reserved when EFER.NXE is clear
/// (SDM 4.4.2, 4.5.4, 4.6.2).
pub const PTE_XD: u64 = 1 << 63;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_match_the_sdm() {
        assert_eq!(Cr0::PG.bits(), 0x8000_0000);
        assert_eq!((Cr4::PAE | Cr4::OSFXSR | Cr4::OSXMMEXCPT).bits(), 0x620);
        assert_eq!((Efer::LME | Efer::LMA).bits(), 0x500);
        assert_eq!(Rflags::IF.bits(), 0x200);
        assert_eq!(Dr6::BS.bits(), 0x4000);
        assert_eq!(Dr6::from_bits_retain(0b1100).hit_slot(), Some(2));
        assert_eq!(Dr6::BS.hit_slot(), None);
        assert_eq!((Dr7::FIXED1 | Dr7::local_enable(3)).bits(), 0x440);
        assert!(Dr7::from_bits_retain(0x8).slot_enabled(1));
        // DR1: write, 4 bytes (RW 01, LEN 11 at bits 23:20).
        assert_eq!(dr7_rw_len(0b1101 << 20, 1), (1, 3));
    }
}
