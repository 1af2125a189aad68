//! Register mapping between KVM's structures and gdb's registers. Every register is mapped
//! by name ([`Reg`]), never by position: KVM and gdb order even the general-purpose
//! registers differently (kvm_regs has rsp before rbp, gdb rbp before rsp).
//!
//! Registers live in three places with different costs: the regs/sregs snapshot every stop
//! carries (free), the XSAVE area (one KVM_GET_XSAVE per stop, cached by the VMM), and
//! IA32_KERNEL_GS_BASE (one KVM_GET_MSRS, cached per stop by the target).

use super::arch::{I386Full, Layout, Reg, RegNum, Regs, X86_64Full};
use crate::vmm::stop::CpuSnapshot;
use gdbstub::arch::Arch;
use kvm_bindings::kvm_xsave;

/// IA32_KERNEL_GS_BASE (SDM Vol. 4, table 2-2).
pub const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// A gdb register layout kvmgdb can present.
pub trait GuestArch:
    Layout
    + Arch<BreakpointKind = usize, Registers = Regs<Self>, RegId = RegNum<Self>>
    + Clone
    + std::fmt::Debug
    + PartialEq
{
    /// An address as u64.
    fn to_u64(a: Self::Usize) -> u64;
    /// A u64 as an address of this layout.
    fn from_u64(a: u64) -> Self::Usize;
}

impl GuestArch for X86_64Full {
    fn to_u64(a: u64) -> u64 {
        a
    }

    fn from_u64(a: u64) -> u64 {
        a
    }
}

impl GuestArch for I386Full {
    fn to_u64(a: u32) -> u64 {
        a.into()
    }

    fn from_u64(a: u64) -> u32 {
        a as u32
    }
}

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

/// Writes a register kept in the snapshot; `bits` is the width gdb shows it with. Others
/// are ignored.
pub fn set_snapshot_value(s: &mut CpuSnapshot, reg: Reg, value: u128, bits: u32) {
    // In real mode a segment's base follows its selector (SDM Vol. 3, 20.1.1); elsewhere
    // the descriptor cache keeps its contents, as on hardware until the guest reloads it.
    let real_mode = s.sregs.cr0 & 1 == 0;
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

/// The XSAVE area in its standard (non-compacted) format, as KVM_GET_XSAVE returns it
/// (SDM Vol. 1, 13.4): the FXSAVE-format legacy region, the XSAVE header, then components.
mod xs {
    pub const FCW: usize = 0;
    pub const FSW: usize = 2;
    pub const FTW: usize = 4;
    pub const FOP: usize = 6;
    pub const FIP: usize = 8;
    pub const FCS: usize = 12;
    pub const FDP: usize = 16;
    pub const FDS: usize = 20;
    pub const MXCSR: usize = 24;
    pub const ST0: usize = 32;
    pub const XMM0: usize = 160;
    /// Past XMM15.
    pub const LEGACY_END: usize = 416;
    /// XSTATE_BV: which components hold state (a clear bit: that component is in its
    /// initial configuration, whatever its area holds).
    pub const XSTATE_BV: usize = 512;
    /// Component 2, the upper halves of YMM0–15 (CPUID.(EAX=0DH,ECX=2).EBX).
    pub const YMM_HI: usize = 576;
    pub const YMM_HI_END: usize = YMM_HI + 16 * 16;
    /// XSTATE_BV bits (SDM Vol. 1, 13.1).
    pub const BV_X87: u64 = 1 << 0;
    pub const BV_SSE: u64 = 1 << 1;
    pub const BV_AVX: u64 = 1 << 2;
    /// x87 control word after FNINIT / in the XSAVE initial configuration.
    pub const FCW_INIT: u16 = 0x037f;
    /// MXCSR in the initial configuration.
    pub const MXCSR_INIT: u32 = 0x1f80;
}

/// Little-endian byte access to a `kvm_xsave` area (its bindings type is an array of u32).
trait XsaveBytes {
    fn byte(&self, off: usize) -> u8;
    fn set_byte(&mut self, off: usize, v: u8);

    fn get(&self, off: usize, len: usize) -> u128 {
        (0..len).fold(0u128, |acc, i| {
            acc | u128::from(self.byte(off + i)) << (8 * i)
        })
    }

    fn put(&mut self, off: usize, len: usize, v: u128) {
        for i in 0..len {
            self.set_byte(off + i, (v >> (8 * i)) as u8);
        }
    }

    fn fill(&mut self, range: std::ops::Range<usize>, v: u8) {
        for off in range {
            self.set_byte(off, v);
        }
    }
}

impl XsaveBytes for kvm_xsave {
    fn byte(&self, off: usize) -> u8 {
        (self.region[off / 4] >> (8 * (off % 4))) as u8
    }

    fn set_byte(&mut self, off: usize, v: u8) {
        let w = &mut self.region[off / 4];
        let shift = 8 * (off % 4);
        *w = (*w & !(0xff << shift)) | (u32::from(v) << shift);
    }
}

fn xstate_bv(x: &kvm_xsave) -> u64 {
    x.get(xs::XSTATE_BV, 8) as u64
}

/// A copy of `x` in which every component XSTATE_BV marks as in its initial configuration
/// holds that configuration (SDM Vol. 1, 13.6): gdb then sees what the CPU would load, even
/// from a KVM that leaves stale bytes in such components.
pub fn normalized_xsave(x: &kvm_xsave) -> Box<kvm_xsave> {
    let mut n = Box::new(kvm_xsave {
        region: x.region,
        ..Default::default()
    });
    let bv = xstate_bv(x);
    if bv & xs::BV_X87 == 0 {
        n.fill(xs::FCW..xs::MXCSR, 0);
        n.put(xs::FCW, 2, xs::FCW_INIT.into());
        n.fill(xs::ST0..xs::XMM0, 0);
    }
    if bv & xs::BV_SSE == 0 {
        n.fill(xs::XMM0..xs::LEGACY_END, 0);
    }
    if bv & (xs::BV_SSE | xs::BV_AVX) == 0 {
        n.put(xs::MXCSR, 4, xs::MXCSR_INIT.into());
    }
    if bv & xs::BV_AVX == 0 {
        n.fill(xs::YMM_HI..xs::YMM_HI_END, 0);
    }
    n
}

/// The legacy (FXSAVE-format) first 512 bytes of an XSAVE area, normalized: what an ELF
/// core's NT_FPREGSET holds.
pub fn fx_bytes(x: &kvm_xsave) -> [u8; 512] {
    let n = normalized_xsave(x);
    let mut out = [0u8; 512];
    for (i, w) in n.region[..128].iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
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

/// A register kept in a [`normalized_xsave`] area, or None for others.
pub fn xsave_value(x: &kvm_xsave, reg: Reg) -> Option<u128> {
    if reg == Reg::Ftag {
        return Some(full_tag_word(x).into());
    }
    let (off, len, _) = xsave_slot(reg)?;
    Some(x.get(off, len))
}

/// Writes a register into a [`normalized_xsave`] area, marking its component as holding
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

/// Expands FXSAVE's abridged tag byte to the full x87 tag word gdb shows (SDM Vol. 1,
/// 8.1.7 and 10.5.1.1): 00 valid, 01 zero, 10 special, 11 empty, per physical register.
fn full_tag_word(x: &kvm_xsave) -> u16 {
    let abridged = x.byte(xs::FTW);
    let top = (x.get(xs::FSW, 2) as u16 >> 11) & 7;
    let mut tag = 0u16;
    for phys in 0..8u16 {
        let t = if abridged & (1 << phys) == 0 {
            3
        } else {
            let st = xs::ST0 + 16 * usize::from((phys + 8 - top) % 8);
            let mantissa = x.get(st, 8) as u64;
            let exp = x.get(st + 8, 2) as u16 & 0x7fff;
            if exp == 0x7fff {
                2
            } else if exp == 0 {
                if mantissa == 0 { 1 } else { 2 }
            } else if mantissa >> 63 == 0 {
                2
            } else {
                0
            }
        };
        tag |= t << (2 * phys);
    }
    tag
}

/// Compresses a full tag word to FXSAVE's abridged form: 1 = not empty.
fn abridged_tag(tag: u16) -> u8 {
    (0..8).fold(0u8, |acc, i| {
        if (tag >> (2 * i)) & 3 != 3 {
            acc | (1 << i)
        } else {
            acc
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn tag_word_round_trip() {
        let mut x = kvm_xsave::default();
        // ST0 = 1.0 (valid), TOP = 0, only register 0 in use.
        x.put(xs::ST0 + 7, 1, 0x80);
        x.put(xs::ST0 + 8, 2, 0x3fff);
        x.put(xs::FTW, 1, 0x01);
        let tag = full_tag_word(&x);
        assert_eq!(tag, 0xfffc);
        assert_eq!(abridged_tag(tag), 0x01);
    }

    #[test]
    fn components_in_init_state_read_as_init_and_writes_mark_them() {
        let mut raw = kvm_xsave::default();
        // Stale bytes under clear XSTATE_BV bits.
        raw.put(xs::XMM0, 16, 0xdead);
        raw.put(xs::YMM_HI, 16, 0xbeef);
        raw.put(xs::FCW, 2, 0);
        let mut x = normalized_xsave(&raw);
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
