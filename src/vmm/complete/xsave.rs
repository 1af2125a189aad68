//! The XSAVE feature set, standard form: `xrstor` / `xrstor64` (the state components the
//! requested-feature bitmap names, from an XSAVE area in guest memory into the vCPU's,
//! KVM_SET_XSAVE), `xsave` / `xsaveopt` and their 64-bit forms (the other way, from
//! KVM_GET_XSAVE), and `xgetbv` (SDM Vol. 1, 13.7, 13.8.1; Vol. 2B, XRSTOR, XSAVE,
//! XSAVEOPT, XGETBV).
//!
//! The x87 pointers are copied as they are: the 32-bit layout of the forms without REX.W
//! lands as is in (or comes from) the 64-bit layout of KVM's area; only FIP and FDP
//! differ, which no guest code reads back but through these instructions.

use super::CannotComplete;
use super::cpu::{Cpu, Exception, Operand};
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

/// CPUID.(EAX=0DH, ECX=1):EAX, the XSAVE extensions the CPU has (SDM Vol. 1, 13.2).
fn cpuid_0d_1() -> u32 {
    std::arch::x86_64::__cpuid_count(0xd, 1).eax
}

/// CPUID.(EAX=0DH, ECX=1):EAX bit 1: XSAVEC and the compacted form of XRSTOR.
const CPUID_XSAVEC: u32 = 1 << 1;
/// CPUID.(EAX=0DH, ECX=i):ECX bit 1: component i is 64-byte aligned in the compacted
/// format.
const CPUID_ALIGNED: u32 = 1 << 1;

/// Where each component of `xcomp` (XCOMP_BV) lies in the compacted format, as (XSTATE_BV
/// bit, offset): packed from byte 576 in component order, each aligned to 64 bytes when
/// CPUID says so (SDM Vol. 1, 13.4.3).
fn compacted_offsets(xcomp: u64) -> Vec<(u64, usize)> {
    let mut next = LEGACY_SIZE + HEADER_SIZE;
    let mut out = Vec::new();
    for i in 2..63u32 {
        let bit = 1u64 << i;
        if xcomp & bit == 0 {
            continue;
        }
        let r = std::arch::x86_64::__cpuid_count(0xd, i);
        if r.ecx & CPUID_ALIGNED != 0 {
            next = next.next_multiple_of(ALIGN as usize);
        }
        out.push((bit, next));
        next += r.eax as usize;
    }
    out
}

/// Where state component `i` (2 or above) lies in the standard format, as (offset, size):
/// CPUID.(EAX=0DH, ECX=i) EBX and EAX (SDM Vol. 1, 13.4.3). KVM's XSAVE area uses the
/// host's standard format, and KVM passes these leaves through, so the guest's area and
/// KVM's agree.
fn component(i: u32) -> (usize, usize) {
    let r = std::arch::x86_64::__cpuid_count(0xd, i);
    (r.ebx as usize, r.eax as usize)
}

/// The checks every XSAVE-family instruction with a memory area makes first: #UD without
/// CR4.OSXSAVE, #NM with CR0.TS, then #GP(0) for an area not 64-byte aligned. The area
/// and RFBM = XCR0 & EDX:EAX.
fn xsave_area(
    cpu: &mut Cpu<'_>,
    insn: &Instruction,
) -> Result<Result<(Operand, u64, u64), Exception>, CannotComplete> {
    if !cpu.cr4().contains(Cr4::OSXSAVE) {
        return Ok(Err(Exception::UD));
    }
    if cpu.cr0().contains(Cr0::TS) {
        return Ok(Err(Exception::NM));
    }
    let at = cpu.operand(insn, 0)?;
    if at.linear % ALIGN != 0 {
        return Ok(Err(Exception::GP0));
    }
    let xcr0 = xcr0(cpu)?;
    let rfbm = xcr0 & ((cpu.regs.rdx & 0xffff_ffff) << 32 | (cpu.regs.rax & 0xffff_ffff));
    Ok(Ok((at, xcr0, rfbm)))
}

/// The extended components (2 and up) in `rfbm`, as (XSTATE_BV bit, offset, size); an
/// error for one beyond KVM's 4 KiB area.
fn extended_components(rfbm: u64) -> Result<Vec<(u64, usize, usize)>, CannotComplete> {
    (2..63)
        .filter(|i| rfbm & (1u64 << i) != 0)
        .map(|i| {
            let (off, size) = component(i);
            if off + size > KVM_XSAVE_SIZE {
                return Err(CannotComplete::State(
                    "xsave",
                    "a component beyond KVM's 4 KiB area",
                ));
            }
            Ok((1u64 << i, off, size))
        })
        .collect()
}

/// `xrstor`: the checks of [`xsave_area`], then #GP(0) for a bad header: in the standard
/// form XSTATE_BV bits outside XCR0 or header bytes 23:8 not zero; in the compacted form
/// (XCOMP_BV bit 63, which Linux uses when the CPU has XSAVEC) no XSAVEC, XCOMP_BV bits
/// outside XCR0, XSTATE_BV bits outside XCOMP_BV or header bytes 63:16 not zero; and for
/// an MXCSR with reserved bits. Then, for each component in RFBM = XCR0 & EDX:EAX: loaded
/// from memory when its XSTATE_BV bit is set, else put in its initial configuration; the
/// others stay (SDM Vol. 1, 13.8).
pub fn xrstor(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    let (at, xcr0, rfbm) = match xsave_area(cpu, insn)? {
        Ok(area) => area,
        Err(e) => return Ok(Some(e)),
    };
    let mut head = vec![0u8; LEGACY_SIZE + HEADER_SIZE];
    if let Some(e) = cpu.read(at, &mut head)? {
        return Ok(Some(e));
    }
    let word = |off: usize| u64::from_le_bytes(head[off..off + 8].try_into().unwrap_or_default());
    let bv = word(XSTATE_BV);
    let xcomp = word(XSTATE_BV + 8);
    let compacted = xcomp & COMPACTED != 0;
    let reserved = |range: std::ops::Range<usize>| head[range].iter().any(|&b| b != 0);
    let bad_header = if compacted {
        // SDM Vol. 1, 13.8.2: the CPU must have the compacted form; XCOMP_BV within XCR0,
        // XSTATE_BV within XCOMP_BV, header bytes 63:16 zero.
        cpuid_0d_1() & CPUID_XSAVEC == 0
            || xcomp & !COMPACTED & !xcr0 != 0
            || bv & !xcomp != 0
            || reserved(XSTATE_BV + 16..XSTATE_BV + HEADER_SIZE)
    } else {
        // SDM Vol. 1, 13.8.1: XSTATE_BV within XCR0, header bytes 23:8 zero.
        bv & !xcr0 != 0 || reserved(XSTATE_BV + 8..XSTATE_BV + 24)
    };
    if bad_header {
        return Ok(Some(Exception::GP0));
    }
    // The standard form loads MXCSR whenever RFBM has SSE or AVX; the compacted form when
    // RFBM has SSE, from memory if XSTATE_BV has it, else as initial (SDM Vol. 1, 13.8).
    let load_mxcsr = if compacted {
        rfbm & BV_SSE != 0
    } else {
        rfbm & (BV_SSE | BV_AVX) != 0
    };
    let mxcsr = if compacted && bv & BV_SSE == 0 {
        MXCSR_INIT
    } else {
        u32::from_le_bytes(head[MXCSR..MXCSR + 4].try_into().unwrap_or_default())
    };
    if load_mxcsr && mxcsr & !super::fpu::mxcsr_mask(cpu)? != 0 {
        return Ok(Some(Exception::GP0));
    }
    // Components 2 and up, from memory, before anything changes: at their standard offsets,
    // or packed in XCOMP_BV order in the compacted form.
    let packed = compacted.then(|| compacted_offsets(xcomp));
    let mut extended = Vec::new();
    for (bit, off, size) in extended_components(rfbm)? {
        let mut data = vec![0u8; size];
        if bv & bit != 0 {
            let from = packed
                .as_ref()
                .and_then(|p| p.iter().find(|(b, _)| *b == bit).map(|&(_, o)| o))
                .unwrap_or(off);
            if let Some(e) = cpu.read(at.offset(from as u64), &mut data)? {
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

/// MXCSR and MXCSR_MASK, which XSAVE writes when RFBM has SSE or AVX (SDM Vol. 1, 13.7).
const MXCSR_PAIR: std::ops::Range<usize> = MXCSR..ST0;

/// `xsave` and `xsaveopt` (with or without REX.W): the checks of [`xsave_area`]; then each
/// component in RFBM is written to the area and its XSTATE_BV bit set to whether it holds
/// state (KVM's XSTATE_BV, the closest thing to XINUSE a VMM can read); MXCSR and
/// MXCSR_MASK too when RFBM has SSE or AVX. XSTATE_BV bits outside RFBM, the rest of the
/// header and bytes 416–511 of the legacy region are left as they are (SDM Vol. 1, 13.7).
/// Writing every requested component is a valid `xsaveopt`: its init and modified
/// optimizations are permissions, not duties (SDM Vol. 1, 13.6).
pub fn xsave(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    let (at, _, rfbm) = match xsave_area(cpu, insn)? {
        Ok(area) => area,
        Err(e) => return Ok(Some(e)),
    };
    let mut header = [0u8; 8];
    if let Some(e) = cpu.read(at.offset(XSTATE_BV as u64), &mut header)? {
        return Ok(Some(e));
    }
    let mut pieces: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    if rfbm & BV_X87 != 0 {
        pieces.extend([X87_CONTROL, X87_REGS].map(|r| (r.start, r)));
    }
    if rfbm & (BV_SSE | BV_AVX) != 0 {
        pieces.push((MXCSR_PAIR.start, MXCSR_PAIR));
    }
    if rfbm & BV_SSE != 0 {
        pieces.push((XMMS.start, XMMS));
    }
    for (_, off, size) in extended_components(rfbm)? {
        pieces.push((off, off..off + size));
    }
    let in_use = xinuse(cpu)?;
    let bv = (u64::from_le_bytes(header) & !rfbm) | (in_use & rfbm);
    write_pieces(cpu, at, pieces)?.map_or_else(
        || cpu.write(at.offset(XSTATE_BV as u64), &bv.to_le_bytes()),
        |e| Ok(Some(e)),
    )
}

/// `xsavec` (with or without REX.W): #UD where the CPU has no XSAVEC, then the checks of
/// [`xsave_area`]; each component in RFBM that holds state (XINUSE, as for `xsave`) is
/// written in the compacted format (packed in component order, the layout XCOMP_BV =
/// RFBM gives, as `xrstor` reads it); MXCSR and MXCSR_MASK with SSE; XSTATE_BV = RFBM &
/// XINUSE and XCOMP_BV = bit 63 | RFBM, and no other part of the header (SDM Vol. 1,
/// 13.10). Linux saves task state with it on a CPU that has XSAVEC but not XSAVES.
pub fn xsavec(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    if cpuid_0d_1() & CPUID_XSAVEC == 0 {
        return Ok(Some(Exception::UD));
    }
    let (at, _, rfbm) = match xsave_area(cpu, insn)? {
        Ok(area) => area,
        Err(e) => return Ok(Some(e)),
    };
    let saved = rfbm & xinuse(cpu)?;
    let mut pieces: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    if saved & BV_X87 != 0 {
        pieces.extend([X87_CONTROL, X87_REGS].map(|r| (r.start, r)));
    }
    if saved & BV_SSE != 0 {
        pieces.extend([MXCSR_PAIR, XMMS].map(|r| (r.start, r)));
    }
    let packed = compacted_offsets(rfbm);
    for (bit, off, size) in extended_components(rfbm)? {
        if saved & bit == 0 {
            continue;
        }
        let to = packed
            .iter()
            .find(|(b, _)| *b == bit)
            .map_or(off, |&(_, o)| o);
        pieces.push((to, off..off + size));
    }
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&saved.to_le_bytes());
    header[8..].copy_from_slice(&(COMPACTED | rfbm).to_le_bytes());
    write_pieces(cpu, at, pieces)?.map_or_else(
        || cpu.write(at.offset(XSTATE_BV as u64), &header),
        |e| Ok(Some(e)),
    )
}

/// XINUSE as a VMM can see it: the XSTATE_BV of KVM's area, with SSE counted in use when
/// MXCSR is not its initial value (SDM Vol. 1, 13.6).
fn xinuse(cpu: &mut Cpu<'_>) -> Result<u64, CannotComplete> {
    let x = cpu.xsave()?;
    let mut in_use = crate::x86::xsave::xstate_bv(x);
    if x.get(MXCSR, 4) as u32 != MXCSR_INIT {
        in_use |= BV_SSE;
    }
    Ok(in_use)
}

/// Writes each `(area offset, range of KVM's area)` piece to the guest's area at `at`, or
/// the exception the first write raises (the writes are held until the instruction
/// completes, so a fault writes nothing).
fn write_pieces(
    cpu: &mut Cpu<'_>,
    at: Operand,
    pieces: Vec<(usize, std::ops::Range<usize>)>,
) -> Result<Option<Exception>, CannotComplete> {
    let x = cpu.xsave()?;
    let writes: Vec<(usize, Vec<u8>)> = pieces
        .into_iter()
        .map(|(to, r)| (to, r.map(|o| x.byte(o)).collect()))
        .collect();
    for (to, data) in writes {
        if let Some(e) = cpu.write(at.offset(to as u64), &data)? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// XCR1 (ECX = 1 of `xgetbv`): XINUSE, when CPUID.(EAX=0DH, ECX=1):EAX bit 2 says the CPU
/// has it (SDM Vol. 1, 13.6).
const XGETBV_XINUSE: u32 = 1;
const CPUID_XGETBV_ECX1: u32 = 1 << 2;

/// `xgetbv`: #UD without CR4.OSXSAVE; ECX 0 reads XCR0 (from KVM_GET_XCRS), ECX 1 XINUSE
/// where the CPU has it (XCR0 & KVM's XSTATE_BV, as for `xsave`); any other ECX is #GP(0).
/// The result goes to EDX:EAX, zero-extended (SDM Vol. 2B, XGETBV).
pub fn xgetbv(cpu: &mut Cpu<'_>, _: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    if !cpu.cr4().contains(Cr4::OSXSAVE) {
        return Ok(Some(Exception::UD));
    }
    let xcr0 = xcr0(cpu)?;
    let value = match cpu.regs.rcx as u32 {
        XCR0 => xcr0,
        XGETBV_XINUSE if cpuid_0d_1() & CPUID_XGETBV_ECX1 != 0 => {
            xcr0 & crate::x86::xsave::xstate_bv(cpu.xsave()?)
        }
        _ => return Ok(Some(Exception::GP0)),
    };
    cpu.regs.rax = value & 0xffff_ffff;
    cpu.regs.rdx = value >> 32;
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
