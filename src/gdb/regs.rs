//! Register mapping between KVM's structures and gdb's register layouts. KVM and gdb order
//! the general-purpose registers differently (kvm_regs has rsp before rbp, gdb rbp before
//! rsp), so every register is mapped by name, never by position.

use crate::vmm::vcpu::CpuSnapshot;
use gdbstub::arch::Arch;
use gdbstub_arch::x86::reg::{X86_64CoreRegs, X86CoreRegs, X86SegmentRegs, X87FpuInternalRegs};
use gdbstub_arch::x86::{X86_64_SSE, X86_SSE};
use kvm_bindings::{kvm_regs, kvm_xsave};

/// Offsets in the XSAVE legacy region, which has the FXSAVE layout (SDM Vol. 1, 10.5.1).
mod fx {
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
}

/// The FPU/SSE state as bytes (the first 512 bytes of the XSAVE area).
pub fn fx_bytes(x: &kvm_xsave) -> [u8; 512] {
    let mut out = [0u8; 512];
    for (i, w) in x.region[..128].iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Writes FPU/SSE bytes back into an XSAVE area.
pub fn set_fx_bytes(x: &mut kvm_xsave, fx: &[u8; 512]) {
    for (i, w) in x.region[..128].iter_mut().enumerate() {
        *w = u32::from_le_bytes([fx[4 * i], fx[4 * i + 1], fx[4 * i + 2], fx[4 * i + 3]]);
    }
}

fn get16(fx: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([fx[off], fx[off + 1]])
}
fn get32(fx: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([fx[off], fx[off + 1], fx[off + 2], fx[off + 3]])
}
fn put16(fx: &mut [u8], off: usize, v: u16) {
    fx[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(fx: &mut [u8], off: usize, v: u32) {
    fx[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Expands FXSAVE's abridged tag byte to the full x87 tag word gdb shows (SDM Vol. 1,
/// 8.1.7 and 10.5.1.1): 00 valid, 01 zero, 10 special, 11 empty, per physical register.
fn full_tag_word(fx: &[u8]) -> u16 {
    let abridged = fx[fx::FTW];
    let top = (get16(fx, fx::FSW) >> 11) & 7;
    let mut tag = 0u16;
    for phys in 0..8u16 {
        let t = if abridged & (1 << phys) == 0 {
            3
        } else {
            let st = ((phys + 8 - top) % 8) as usize;
            let r = &fx[fx::ST0 + 16 * st..fx::ST0 + 16 * st + 10];
            let exp = u16::from_le_bytes([r[8], r[9]]) & 0x7fff;
            let mantissa = u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8]));
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

fn read_fpu(fx: &[u8]) -> X87FpuInternalRegs {
    X87FpuInternalRegs {
        fctrl: get16(fx, fx::FCW).into(),
        fstat: get16(fx, fx::FSW).into(),
        ftag: full_tag_word(fx).into(),
        fiseg: get16(fx, fx::FCS).into(),
        fioff: get32(fx, fx::FIP),
        foseg: get16(fx, fx::FDS).into(),
        fooff: get32(fx, fx::FDP),
        fop: get16(fx, fx::FOP).into(),
    }
}

fn write_fpu(f: &X87FpuInternalRegs, fx: &mut [u8]) {
    put16(fx, fx::FCW, f.fctrl as u16);
    put16(fx, fx::FSW, f.fstat as u16);
    fx[fx::FTW] = abridged_tag(f.ftag as u16);
    put16(fx, fx::FCS, f.fiseg as u16);
    put32(fx, fx::FIP, f.fioff);
    put16(fx, fx::FDS, f.foseg as u16);
    put32(fx, fx::FDP, f.fooff);
    put16(fx, fx::FOP, f.fop as u16);
}

fn read_st(fx: &[u8]) -> [[u8; 10]; 8] {
    let mut st = [[0u8; 10]; 8];
    for (i, r) in st.iter_mut().enumerate() {
        r.copy_from_slice(&fx[fx::ST0 + 16 * i..fx::ST0 + 16 * i + 10]);
    }
    st
}

fn write_st(st: &[[u8; 10]; 8], fx: &mut [u8]) {
    for (i, r) in st.iter().enumerate() {
        fx[fx::ST0 + 16 * i..fx::ST0 + 16 * i + 10].copy_from_slice(r);
    }
}

fn read_xmm(fx: &[u8], out: &mut [u128]) {
    for (i, x) in out.iter_mut().enumerate() {
        let o = fx::XMM0 + 16 * i;
        *x = u128::from_le_bytes(fx[o..o + 16].try_into().unwrap_or([0; 16]));
    }
}

fn write_xmm(xmm: &[u128], fx: &mut [u8]) {
    for (i, x) in xmm.iter().enumerate() {
        let o = fx::XMM0 + 16 * i;
        fx[o..o + 16].copy_from_slice(&x.to_le_bytes());
    }
}

fn read_segments(s: &CpuSnapshot) -> X86SegmentRegs {
    let sr = &s.sregs;
    X86SegmentRegs {
        cs: sr.cs.selector.into(),
        ss: sr.ss.selector.into(),
        ds: sr.ds.selector.into(),
        es: sr.es.selector.into(),
        fs: sr.fs.selector.into(),
        gs: sr.gs.selector.into(),
    }
}

/// Applies segment selectors gdb wrote. Only selectors that changed are touched; in real
/// mode the base follows the selector (SDM Vol. 3, 20.1.1), elsewhere the descriptor cache
/// keeps its contents, as on real hardware until the guest reloads the register.
fn write_segments(seg: &X86SegmentRegs, s: &mut CpuSnapshot) {
    let real_mode = s.sregs.cr0 & 1 == 0;
    let sr = &mut s.sregs;
    for (new, reg) in [
        (seg.cs, &mut sr.cs),
        (seg.ss, &mut sr.ss),
        (seg.ds, &mut sr.ds),
        (seg.es, &mut sr.es),
        (seg.fs, &mut sr.fs),
        (seg.gs, &mut sr.gs),
    ] {
        let new = new as u16;
        if reg.selector != new {
            reg.selector = new;
            if real_mode {
                reg.base = u64::from(new) << 4;
            }
        }
    }
}

/// A gdb register layout kvmgdb can present.
pub trait GuestArch: Arch<BreakpointKind = usize> + 'static {
    /// Fills gdb's registers from KVM's state (`fx` is the FXSAVE-format legacy area).
    fn read(s: &CpuSnapshot, fx: &[u8; 512], out: &mut Self::Registers);
    /// Writes gdb's registers into KVM's state.
    fn write(regs: &Self::Registers, s: &mut CpuSnapshot, fx: &mut [u8; 512]);
    /// An address as u64.
    fn to_u64(a: Self::Usize) -> u64;
    /// A u64 as an address of this layout.
    fn from_u64(a: u64) -> Self::Usize;
}

fn gprs64(r: &kvm_regs) -> [u64; 16] {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ]
}

impl GuestArch for X86_64_SSE {
    fn read(s: &CpuSnapshot, fx: &[u8; 512], out: &mut X86_64CoreRegs) {
        out.regs = gprs64(&s.regs);
        out.rip = s.regs.rip;
        out.eflags = s.regs.rflags as u32;
        out.segments = read_segments(s);
        out.st = read_st(fx);
        out.fpu = read_fpu(fx);
        read_xmm(fx, &mut out.xmm);
        out.mxcsr = get32(fx, fx::MXCSR);
    }

    fn write(g: &X86_64CoreRegs, s: &mut CpuSnapshot, fx: &mut [u8; 512]) {
        let r = &mut s.regs;
        [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ] = g.regs;
        r.rip = g.rip;
        r.rflags = (r.rflags & !0xffff_ffff) | u64::from(g.eflags);
        write_segments(&g.segments, s);
        write_st(&g.st, fx);
        write_fpu(&g.fpu, fx);
        write_xmm(&g.xmm, fx);
        put32(fx, fx::MXCSR, g.mxcsr);
    }

    fn to_u64(a: u64) -> u64 {
        a
    }

    fn from_u64(a: u64) -> u64 {
        a
    }
}

impl GuestArch for X86_SSE {
    fn read(s: &CpuSnapshot, fx: &[u8; 512], out: &mut X86CoreRegs) {
        let r = &s.regs;
        out.eax = r.rax as u32;
        out.ecx = r.rcx as u32;
        out.edx = r.rdx as u32;
        out.ebx = r.rbx as u32;
        out.esp = r.rsp as u32;
        out.ebp = r.rbp as u32;
        out.esi = r.rsi as u32;
        out.edi = r.rdi as u32;
        out.eip = r.rip as u32;
        out.eflags = r.rflags as u32;
        out.segments = read_segments(s);
        out.st = read_st(fx);
        out.fpu = read_fpu(fx);
        read_xmm(fx, &mut out.xmm);
        out.mxcsr = get32(fx, fx::MXCSR);
    }

    fn write(g: &X86CoreRegs, s: &mut CpuSnapshot, fx: &mut [u8; 512]) {
        // Keep the upper halves: a 32-bit view must not clobber state it cannot show.
        let low = |old: u64, new: u32| (old & !0xffff_ffff) | u64::from(new);
        let r = &mut s.regs;
        r.rax = low(r.rax, g.eax);
        r.rcx = low(r.rcx, g.ecx);
        r.rdx = low(r.rdx, g.edx);
        r.rbx = low(r.rbx, g.ebx);
        r.rsp = low(r.rsp, g.esp);
        r.rbp = low(r.rbp, g.ebp);
        r.rsi = low(r.rsi, g.esi);
        r.rdi = low(r.rdi, g.edi);
        r.rip = low(r.rip, g.eip);
        r.rflags = low(r.rflags, g.eflags);
        write_segments(&g.segments, s);
        write_st(&g.st, fx);
        write_fpu(&g.fpu, fx);
        write_xmm(&g.xmm, fx);
        put32(fx, fx::MXCSR, g.mxcsr);
    }

    fn to_u64(a: u32) -> u64 {
        a.into()
    }

    fn from_u64(a: u64) -> u32 {
        a as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_order_differs_between_kvm_and_gdb() {
        let s = CpuSnapshot {
            regs: kvm_regs {
                rsp: 0x5555,
                rbp: 0xbbbb,
                rip: 0x1000,
                rflags: 0x246,
                ..Default::default()
            },
            ..Default::default()
        };
        let fx = [0u8; 512];
        let mut g = X86_64CoreRegs::default();
        X86_64_SSE::read(&s, &fx, &mut g);
        assert_eq!(g.regs[6], 0xbbbb, "gdb's 7th register is rbp");
        assert_eq!(g.regs[7], 0x5555, "gdb's 8th register is rsp");
        let mut back = s;
        back.regs.rsp = 0;
        back.regs.rbp = 0;
        let mut fx2 = fx;
        X86_64_SSE::write(&g, &mut back, &mut fx2);
        assert_eq!(back.regs.rsp, 0x5555);
        assert_eq!(back.regs.rbp, 0xbbbb);
    }

    #[test]
    fn tag_word_round_trip() {
        let mut fx = [0u8; 512];
        // ST0 = 1.0 (valid), TOP = 0, only register 0 in use.
        fx[fx::ST0 + 7] = 0x80;
        fx[fx::ST0 + 8] = 0xff;
        fx[fx::ST0 + 9] = 0x3f;
        fx[fx::FTW] = 0x01;
        let tag = full_tag_word(&fx);
        assert_eq!(tag, 0xfffc);
        assert_eq!(abridged_tag(tag), 0x01);
    }
}
