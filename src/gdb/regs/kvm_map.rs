//! Register mapping between KVM's structures and gdb's registers. Every register is mapped
//! by name ([`Reg`]), never by position: KVM and gdb order even the general-purpose
//! registers differently (kvm_regs has rsp before rbp, gdb rbp before rsp).
//!
//! Registers live in three places with different costs: the regs/sregs snapshot every stop
//! carries (free), the XSAVE area (one KVM_GET_XSAVE per stop, cached by the VMM), and
//! IA32_KERNEL_GS_BASE (one KVM_GET_MSRS, cached per stop by the target).

use super::layout::Reg;
use crate::vmm::SegReg;
use crate::vmm::stop::CpuSnapshot;
use crate::x86::Cr0;
use crate::x86::xsave::{self as xs, XsaveBytes, abridged_tag, full_tag_word, xstate_bv};
use kvm_bindings::{kvm_segment, kvm_sregs, kvm_xsave};

/// Where a register's value is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// kvm_regs / kvm_sregs.
    Snapshot,
    /// The XSAVE area.
    Xsave,
    /// IA32_KERNEL_GS_BASE.
    Msr,
}

/// Where `reg` is kept.
pub fn source(reg: Reg) -> Source {
    match reg {
        Reg::KernelGsBase => Source::Msr,
        Reg::St(_)
        | Reg::Fctrl
        | Reg::Fstat
        | Reg::Ftag
        | Reg::Fiseg
        | Reg::Fioff
        | Reg::Foseg
        | Reg::Fooff
        | Reg::Fop
        | Reg::Xmm(_)
        | Reg::Mxcsr
        | Reg::YmmHigh(_) => Source::Xsave,
        _ => Source::Snapshot,
    }
}

/// `new` in the low `bits` of `old`: a narrower view (the i386 layout, eflags) must not
/// clobber the bits it cannot show.
fn merge(old: u64, new: u128, bits: u32) -> u64 {
    if bits >= 64 {
        new as u64
    } else {
        let mask = (1u64 << bits) - 1;
        (old & !mask) | (new as u64 & mask)
    }
}

/// A register kept in the snapshot (`Source::Snapshot`), or None for others.
pub fn snapshot_value(s: &CpuSnapshot, reg: Reg) -> Option<u64> {
    let (r, sr) = (&s.regs, &s.sregs);
    Some(match reg {
        Reg::Rax => r.rax,
        Reg::Rbx => r.rbx,
        Reg::Rcx => r.rcx,
        Reg::Rdx => r.rdx,
        Reg::Rsi => r.rsi,
        Reg::Rdi => r.rdi,
        Reg::Rbp => r.rbp,
        Reg::Rsp => r.rsp,
        Reg::R(n) => [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15][usize::from(n & 7)],
        Reg::Rip => r.rip,
        Reg::Eflags => r.rflags,
        Reg::Cs => sr.cs.selector.into(),
        Reg::Ss => sr.ss.selector.into(),
        Reg::Ds => sr.ds.selector.into(),
        Reg::Es => sr.es.selector.into(),
        Reg::Fs => sr.fs.selector.into(),
        Reg::Gs => sr.gs.selector.into(),
        Reg::FsBase => sr.fs.base,
        Reg::GsBase => sr.gs.base,
        Reg::Cr0 => sr.cr0,
        Reg::Cr2 => sr.cr2,
        Reg::Cr3 => sr.cr3,
        Reg::Cr4 => sr.cr4,
        Reg::Cr8 => sr.cr8,
        Reg::Efer => sr.efer,
        _ => return None,
    })
}

/// RFLAGS.VM, virtual-8086 mode (SDM Vol. 3, 2.3).
const RFLAGS_VM: u64 = 1 << 17;

/// Whether a segment's base follows its selector, as in real and virtual-8086 mode (SDM
/// Vol. 3, 20.1.1, 20.2.1): no descriptor to load.
pub fn selector_is_base(s: &CpuSnapshot) -> bool {
    s.sregs.cr0 & Cr0::PE.bits() == 0 || s.regs.rflags & RFLAGS_VM != 0
}

/// The segment register `reg` names, if it is one.
pub fn segment_reg(reg: Reg) -> Option<SegReg> {
    Some(match reg {
        Reg::Cs => SegReg::Cs,
        Reg::Ss => SegReg::Ss,
        Reg::Ds => SegReg::Ds,
        Reg::Es => SegReg::Es,
        Reg::Fs => SegReg::Fs,
        Reg::Gs => SegReg::Gs,
        _ => return None,
    })
}

/// Segment register `reg` in `sregs`.
pub fn segment_mut(sregs: &mut kvm_sregs, reg: SegReg) -> &mut kvm_segment {
    match reg {
        SegReg::Cs => &mut sregs.cs,
        SegReg::Ss => &mut sregs.ss,
        SegReg::Ds => &mut sregs.ds,
        SegReg::Es => &mut sregs.es,
        SegReg::Fs => &mut sregs.fs,
        SegReg::Gs => &mut sregs.gs,
    }
}

/// Writes a register kept in the snapshot; `bits` is the width gdb shows it with. Others
/// are ignored. A selector is written as is, with the base following it in real mode;
/// in protected mode the caller loads its descriptor (`Vm::load_segment`) instead.
pub fn set_snapshot_value(s: &mut CpuSnapshot, reg: Reg, value: u128, bits: u32) {
    // In real mode a segment's base follows its selector (SDM Vol. 3, 20.1.1).
    let real_mode = selector_is_base(s);
    let (r, sr) = (&mut s.regs, &mut s.sregs);
    let field = match reg {
        Reg::Rax => &mut r.rax,
        Reg::Rbx => &mut r.rbx,
        Reg::Rcx => &mut r.rcx,
        Reg::Rdx => &mut r.rdx,
        Reg::Rsi => &mut r.rsi,
        Reg::Rdi => &mut r.rdi,
        Reg::Rbp => &mut r.rbp,
        Reg::Rsp => &mut r.rsp,
        Reg::R(n) => match n & 7 {
            0 => &mut r.r8,
            1 => &mut r.r9,
            2 => &mut r.r10,
            3 => &mut r.r11,
            4 => &mut r.r12,
            5 => &mut r.r13,
            6 => &mut r.r14,
            _ => &mut r.r15,
        },
        Reg::Rip => &mut r.rip,
        Reg::Eflags => &mut r.rflags,
        Reg::Cs | Reg::Ss | Reg::Ds | Reg::Es | Reg::Fs | Reg::Gs => {
            let seg = match reg {
                Reg::Cs => &mut sr.cs,
                Reg::Ss => &mut sr.ss,
                Reg::Ds => &mut sr.ds,
                Reg::Es => &mut sr.es,
                Reg::Fs => &mut sr.fs,
                _ => &mut sr.gs,
            };
            let sel = value as u16;
            if seg.selector != sel {
                seg.selector = sel;
                if real_mode {
                    seg.base = u64::from(sel) << 4;
                }
            }
            return;
        }
        Reg::FsBase => &mut sr.fs.base,
        Reg::GsBase => &mut sr.gs.base,
        Reg::Cr0 => &mut sr.cr0,
        Reg::Cr2 => &mut sr.cr2,
        Reg::Cr3 => &mut sr.cr3,
        Reg::Cr4 => &mut sr.cr4,
        Reg::Cr8 => &mut sr.cr8,
        Reg::Efer => &mut sr.efer,
        _ => return,
    };
    *field = merge(*field, value, bits);
}

/// Where a register lives in the XSAVE area: (offset, size, the XSTATE_BV bit that must be
/// set for KVM_SET_XSAVE to take a new value).
fn xsave_slot(reg: Reg) -> Option<(usize, usize, u64)> {
    let x87 = xs::BV_X87;
    Some(match reg {
        Reg::St(i) => (xs::ST0 + 16 * usize::from(i & 7), 10, x87),
        Reg::Fctrl => (xs::FCW, 2, x87),
        Reg::Fstat => (xs::FSW, 2, x87),
        Reg::Fiseg => (xs::FCS, 2, x87),
        Reg::Fioff => (xs::FIP, 4, x87),
        Reg::Foseg => (xs::FDS, 2, x87),
        Reg::Fooff => (xs::FDP, 4, x87),
        Reg::Fop => (xs::FOP, 2, x87),
        Reg::Xmm(i) => (xs::XMM0 + 16 * usize::from(i & 15), 16, xs::BV_SSE),
        Reg::Mxcsr => (xs::MXCSR, 4, xs::BV_SSE),
        Reg::YmmHigh(i) => (xs::YMM_HI + 16 * usize::from(i & 15), 16, xs::BV_AVX),
        _ => return None,
    })
}

/// A register kept in a [`xs::normalized_xsave`] area, or None for others.
pub fn xsave_value(x: &kvm_xsave, reg: Reg) -> Option<u128> {
    if reg == Reg::Ftag {
        return Some(full_tag_word(x).into());
    }
    let (off, len, _) = xsave_slot(reg)?;
    Some(x.get(off, len))
}

/// Writes a register into a [`xs::normalized_xsave`] area, marking its component as holding
/// state. Returns true if anything changed.
pub fn set_xsave_value(x: &mut kvm_xsave, reg: Reg, value: u128) -> bool {
    if xsave_value(x, reg) == Some(value) {
        return false;
    }
    let (off, len, bit) = match reg {
        Reg::Ftag => (xs::FTW, 1, xs::BV_X87),
        _ => match xsave_slot(reg) {
            Some(slot) => slot,
            None => return false,
        },
    };
    let v = if reg == Reg::Ftag {
        abridged_tag(value as u16).into()
    } else {
        value
    };
    x.put(off, len, v);
    x.put(xs::XSTATE_BV, 8, (xstate_bv(x) | bit).into());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb::regs::layout::{I386Full, Layout, X86_64Full};
    use kvm_bindings::kvm_regs;

    #[test]
    fn gpr_order_differs_between_kvm_and_gdb() {
        let mut s = CpuSnapshot {
            regs: kvm_regs {
                rsp: 0x5555,
                rbp: 0xbbbb,
                rip: 0x1000,
                rflags: 0x246,
                ..Default::default()
            },
            ..Default::default()
        };
        let regs = X86_64Full::regs();
        assert_eq!(regs[6].name, "rbp");
        assert_eq!(snapshot_value(&s, regs[6].reg), Some(0xbbbb));
        assert_eq!(regs[7].name, "rsp");
        assert_eq!(snapshot_value(&s, regs[7].reg), Some(0x5555));
        set_snapshot_value(&mut s, regs[6].reg, 0x1111, 64);
        assert_eq!((s.regs.rbp, s.regs.rsp), (0x1111, 0x5555));
        // i386: register 4 is esp, and writing it keeps the upper half.
        s.regs.rsp = 0xffff_ffff_0000_5555;
        let r32 = I386Full::regs();
        assert_eq!(r32[4].name, "esp");
        set_snapshot_value(&mut s, r32[4].reg, 0x1234_5678, 32);
        assert_eq!(s.regs.rsp, 0xffff_ffff_1234_5678);
    }

    #[test]
    fn real_mode_selector_writes_move_the_base() {
        let mut s = CpuSnapshot::default();
        set_snapshot_value(&mut s, Reg::Ds, 0x1234, 32);
        assert_eq!((s.sregs.ds.selector, s.sregs.ds.base), (0x1234, 0x12340));
        s.sregs.cr0 = 1;
        set_snapshot_value(&mut s, Reg::Es, 0x18, 32);
        assert_eq!((s.sregs.es.selector, s.sregs.es.base), (0x18, 0));
    }

    #[test]
    fn components_in_init_state_read_as_init_and_writes_mark_them() {
        let mut raw = kvm_xsave::default();
        // Stale bytes under clear XSTATE_BV bits.
        raw.put(xs::XMM0, 16, 0xdead);
        raw.put(xs::YMM_HI, 16, 0xbeef);
        raw.put(xs::FCW, 2, 0);
        let mut x = xs::normalized_xsave(&raw);
        assert_eq!(xsave_value(&x, Reg::Xmm(0)), Some(0));
        assert_eq!(xsave_value(&x, Reg::YmmHigh(0)), Some(0));
        assert_eq!(xsave_value(&x, Reg::Fctrl), Some(0x37f));
        assert_eq!(xsave_value(&x, Reg::Mxcsr), Some(0x1f80));
        assert_eq!(xsave_value(&x, Reg::Ftag), Some(0xffff));
        assert!(!set_xsave_value(&mut x, Reg::Xmm(1), 0));
        assert_eq!(xstate_bv(&x), 0);
        assert!(set_xsave_value(&mut x, Reg::Xmm(1), 0x42));
        assert_eq!(xstate_bv(&x), xs::BV_SSE);
        assert!(set_xsave_value(&mut x, Reg::YmmHigh(15), 7));
        assert_eq!(xsave_value(&x, Reg::YmmHigh(15)), Some(7));
        assert_eq!(xstate_bv(&x), xs::BV_SSE | xs::BV_AVX);
        assert!(set_xsave_value(&mut x, Reg::Ftag, 0xfffc));
        assert_eq!(x.byte(xs::FTW), 1);
        assert_eq!(xstate_bv(&x), 7);
    }
}
