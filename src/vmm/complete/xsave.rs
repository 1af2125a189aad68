//! `xrstor` / `xrstor64`, standard form: the state components the requested-feature
//! bitmap names, from an XSAVE area in guest memory into the vCPU's (KVM_SET_XSAVE)
//! (SDM Vol. 1, 13.8.1; Vol. 2B, XRSTOR).

use super::CannotComplete;
use super::cpu::{Cpu, Exception};
use crate::x86::xsave::{
    BV_AVX, BV_SSE, BV_X87, FCW, FCW_INIT, LEGACY_SIZE, MXCSR, MXCSR_INIT, ST0, XMM0, XSTATE_BV,
    XsaveBytes,
};
use crate::x86::{Cr0, Cr4};
use iced_x86::Instruction;

/// The XSAVE area's alignment (#GP(0) otherwise: SDM Vol. 2B, XRSTOR).
const ALIGN: u64 = 64;
/// The XSAVE header: 64 bytes after the legacy region (SDM Vol. 1, 13.4.2).
const HEADER_SIZE: usize = 64;
/// XCOMP_BV bit 63: the compacted form (SDM Vol. 1, 13.4.2).
const COMPACTED: u64 = 1 << 63;
/// The x87 part of the legacy region, MXCSR and MXCSR_MASK excepted (SDM Vol. 1,
/// Table 13-1).
const X87_CONTROL: std::ops::Range<usize> = FCW..MXCSR;
const X87_REGS: std::ops::Range<usize> = ST0..XMM0;
/// XMM0–15.
const XMMS: std::ops::Range<usize> = XMM0..XMM0 + 16 * 16;
/// The bytes KVM_GET/SET_XSAVE exchange.
const KVM_XSAVE_SIZE: usize = 4096;
/// XCR0's index for KVM_GET_XCRS.
const XCR0: u32 = 0;

/// Where state component `i` (2 or above) lies in the standard format, as (offset, size):
/// CPUID.(EAX=0DH, ECX=i) EBX and EAX (SDM Vol. 1, 13.4.3). KVM's XSAVE area uses the
/// host's standard format, and KVM passes these leaves through, so the guest's area and
/// KVM's agree.
fn component(i: u32) -> (usize, usize) {
    let r = std::arch::x86_64::__cpuid_count(0xd, i);
    (r.ebx as usize, r.eax as usize)
}

/// `xrstor`: #UD without CR4.OSXSAVE, #NM with CR0.TS, #GP(0) for an area not 64-byte
/// aligned, a header whose bytes 23:8 are not zero, XSTATE_BV bits outside XCR0, or an
/// MXCSR with reserved bits. Then, for each component in RFBM = XCR0 & EDX:EAX: loaded
/// from memory when its XSTATE_BV bit is set, else put in its initial configuration;
/// the others stay. MXCSR is loaded whenever RFBM has SSE or AVX. The compacted form
/// (XCOMP_BV bit 63) is not completed; it stays an internal error. The x87 pointers are
/// copied as stored: the 32-bit layout of `xrstor` lands as is in the 64-bit layout of
/// KVM's area (FIP and FDP only, which no guest code reads back but through `xsave`).
pub fn xrstor(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    if !cpu.cr4().contains(Cr4::OSXSAVE) {
        return Ok(Some(Exception::UD));
    }
    if cpu.cr0().contains(Cr0::TS) {
        return Ok(Some(Exception::NM));
    }
    let at = cpu.operand(insn, 0)?;
    if at.linear % ALIGN != 0 {
        return Ok(Some(Exception::GP0));
    }
    let xcr0 = xcr0(cpu)?;
    let rfbm = xcr0 & ((cpu.regs.rdx & 0xffff_ffff) << 32 | (cpu.regs.rax & 0xffff_ffff));
    let mut head = vec![0u8; LEGACY_SIZE + HEADER_SIZE];
    if let Some(e) = cpu.read(at, &mut head)? {
        return Ok(Some(e));
    }
    let word = |off: usize| u64::from_le_bytes(head[off..off + 8].try_into().unwrap_or_default());
    let bv = word(XSTATE_BV);
    if word(XSTATE_BV + 8) & COMPACTED != 0 {
        return Err(CannotComplete::Form("xrstor (compacted form)"));
    }
    if head[XSTATE_BV + 8..XSTATE_BV + 24].iter().any(|&b| b != 0) || bv & !xcr0 != 0 {
        return Ok(Some(Exception::GP0));
    }
    let load_mxcsr = rfbm & (BV_SSE | BV_AVX) != 0;
    let mxcsr = u32::from_le_bytes(head[MXCSR..MXCSR + 4].try_into().unwrap_or_default());
    if load_mxcsr && mxcsr & !super::fpu::mxcsr_mask(cpu)? != 0 {
        return Ok(Some(Exception::GP0));
    }
    // Components 2 and up, from memory, before anything changes.
    let mut extended = Vec::new();
    for i in 2..63 {
        let bit = 1u64 << i;
        if rfbm & bit == 0 {
            continue;
        }
        let (off, size) = component(i);
        if off + size > KVM_XSAVE_SIZE {
            return Err(CannotComplete::State(
                "xrstor",
                "a component beyond KVM's 4 KiB area",
            ));
        }
        let mut data = vec![0u8; size];
        if bv & bit != 0 {
            if let Some(e) = cpu.read(at.offset(off as u64), &mut data)? {
                return Ok(Some(e));
            }
        }
        extended.push((bit, off, data));
    }
    // Every component set: RFBM components loaded or initial, the rest unchanged.
    let x = cpu.xsave_mut(0)?;
    let mut new_bv = crate::x86::xsave::xstate_bv(x) & !rfbm;
    let mut legacy = |range: std::ops::Range<usize>, bit: u64| {
        if rfbm & bit == 0 {
            return;
        }
        if bv & bit != 0 {
            for o in range {
                x.set_byte(o, head[o]);
            }
            new_bv |= bit;
        } else {
            x.fill(range, 0);
        }
    };
    legacy(X87_CONTROL, BV_X87);
    legacy(X87_REGS, BV_X87);
    legacy(XMMS, BV_SSE);
    if rfbm & BV_X87 != 0 && bv & BV_X87 == 0 {
        x.put(FCW, 2, FCW_INIT.into());
    }
    for (bit, off, data) in extended {
        if bv & bit != 0 {
            for (o, b) in data.into_iter().enumerate() {
                x.set_byte(off + o, b);
            }
            new_bv |= bit;
        } else {
            x.fill(off..off + data.len(), 0);
        }
    }
    if load_mxcsr {
        x.put(MXCSR, 4, mxcsr.into());
        // KVM restores MXCSR only with the SSE component marked; XMMs already hold their
        // values (zeros if initial), so marking it changes nothing else.
        if mxcsr != MXCSR_INIT {
            new_bv |= BV_SSE;
        }
    }
    x.put(XSTATE_BV, 8, new_bv.into());
    Ok(None)
}

/// XCR0, from KVM_GET_XCRS.
fn xcr0(cpu: &Cpu<'_>) -> Result<u64, CannotComplete> {
    let xcrs = cpu
        .vcpu()
        .get_xcrs()
        .map_err(|e| CannotComplete::Kvm("KVM_GET_XCRS", e))?;
    let n = (xcrs.nr_xcrs as usize).min(xcrs.xcrs.len());
    Ok(xcrs.xcrs[..n]
        .iter()
        .find(|x| x.xcr == XCR0)
        .map_or(BV_X87, |x| x.value))
}
