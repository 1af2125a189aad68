//! x87 and MXCSR instructions: `fwait`, `fninit`/`finit`, `ldmxcsr`, `stmxcsr`, done on
//! the XSAVE area's legacy region.

use super::CannotComplete;
use super::cpu::{Cpu, Exception};
use crate::x86::Cr0;
use crate::x86::xsave::{
    BV_SSE, BV_X87, FCW, FCW_INIT, FDP, FIP, FOP, FSW, FTW, MXCSR, ST0, XsaveBytes,
};
use iced_x86::Instruction;

/// FSW/FCW bits 5:0: the six x87 exception flags and their masks (SDM Vol. 1, 8.1.3,
/// 8.1.5).
const X87_EXCEPTIONS: u16 = 0x3f;

/// The MXCSR_MASK to assume when FXSAVE stores 0 there: every bit but DAZ (SDM Vol. 1,
/// 11.6.6).
const MXCSR_MASK_DEFAULT: u32 = 0xffbf;
/// Byte offset of MXCSR_MASK in the FXSAVE/XSAVE legacy region (SDM Vol. 1, Table 10-2).
const MXCSR_MASK_OFFSET: usize = 28;

/// Whether an unmasked x87 exception is pending: an exception flag in FSW whose mask bit
/// in FCW is clear (SDM Vol. 1, 8.7).
fn x87_exception_pending(fcw: u16, fsw: u16) -> bool {
    fsw & X87_EXCEPTIONS & !fcw != 0
}

/// What `wait`/`fwait` does: #NM when CR0.MP and CR0.TS are
/// both set; with an unmasked x87 exception pending, #MF when CR0.NE is set (SDM Vol. 2B,
/// WAIT/FWAIT; Vol. 3, 2.5). With CR0.NE clear the CPU would signal FERR# to an external
/// interrupt controller (the PC's IRQ 13), which this machine does not model: that case
/// stays an internal error. Otherwise nothing.
fn wait(cpu: &mut Cpu<'_>) -> Result<Option<Exception>, CannotComplete> {
    if cpu.cr0().contains(Cr0::MP | Cr0::TS) {
        return Ok(Some(Exception::NM));
    }
    let ne = cpu.cr0().contains(Cr0::NE);
    let x = cpu.xsave()?;
    if !x87_exception_pending(x.get(FCW, 2) as u16, x.get(FSW, 2) as u16) {
        return Ok(None);
    }
    if ne {
        Ok(Some(Exception::MF))
    } else {
        Err(CannotComplete::State(
            "fwait",
            "an x87 exception is pending with CR0.NE clear (FERR#/IRQ 13 is not modelled)",
        ))
    }
}

/// `wait` / `fwait`.
pub fn fwait(cpu: &mut Cpu<'_>, _: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    wait(cpu)
}

/// FSW bits 13:11, TOP (SDM Vol. 1, 8.1.3).
const TOP_SHIFT: u32 = 11;

/// `fninit` (`finit` is `fwait` then `fninit`, two instructions to the decoder): #NM
/// when CR0.EM or CR0.TS is set; FCW 0x37f, FSW 0, every tag empty, FOP, FIP and FDP 0;
/// the physical data registers keep their contents (SDM Vol. 2A, FINIT/FNINIT). The XSAVE area holds them in stack order, ST(i)
/// being physical register (TOP + i) mod 8 (SDM Vol. 1, 10.5.1), so TOP becoming 0 moves
/// each register to the slot of its physical number.
pub fn fninit(cpu: &mut Cpu<'_>, _: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    if cpu.cr0().intersects(Cr0::EM | Cr0::TS) {
        return Ok(Some(Exception::NM));
    }
    let x = cpu.xsave_mut(BV_X87)?;
    let top = (x.get(FSW, 2) as usize >> TOP_SHIFT) & 7;
    let by_stack: Vec<u128> = (0..8).map(|i| x.get(ST0 + 16 * i, 16)).collect();
    for (st, value) in by_stack.into_iter().enumerate() {
        x.put(ST0 + 16 * ((top + st) % 8), 16, value);
    }
    x.put(FCW, 2, FCW_INIT.into());
    x.put(FSW, 2, 0);
    // The abridged tag byte: a clear bit is an empty register.
    x.put(FTW, 1, 0);
    x.put(FOP, 2, 0);
    // FIP/FCS and FDP/FDS, in the 64-bit form as in the 32-bit one.
    x.fill(FIP..FIP + 8, 0);
    x.fill(FDP..FDP + 8, 0);
    Ok(None)
}

/// This CPU's MXCSR_MASK, as KVM_GET_XSAVE reports it (SDM Vol. 1, 11.6.6).
pub(super) fn mxcsr_mask(cpu: &mut Cpu<'_>) -> Result<u32, CannotComplete> {
    Ok(match cpu.xsave()?.get(MXCSR_MASK_OFFSET, 4) as u32 {
        0 => MXCSR_MASK_DEFAULT,
        m => m,
    })
}

/// `ldmxcsr m32`: the SSE checks, the load (its faults), then #GP(0) for a bit outside
/// MXCSR_MASK (SDM Vol. 2A, LDMXCSR).
pub fn ldmxcsr(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    if let Some(e) = cpu.sse_unavailable() {
        return Ok(Some(e));
    }
    let at = cpu.operand(insn, 0)?;
    let mut bytes = [0u8; 4];
    if let Some(e) = cpu.read(at, &mut bytes)? {
        return Ok(Some(e));
    }
    let value = u32::from_le_bytes(bytes);
    if value & !mxcsr_mask(cpu)? != 0 {
        return Ok(Some(Exception::GP0));
    }
    cpu.xsave_mut(BV_SSE)?.put(MXCSR, 4, value.into());
    Ok(None)
}

/// `stmxcsr m32`: the SSE checks, then MXCSR to memory (SDM Vol. 2B, STMXCSR).
pub fn stmxcsr(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    if let Some(e) = cpu.sse_unavailable() {
        return Ok(Some(e));
    }
    let at = cpu.operand(insn, 0)?;
    let value = cpu.xsave()?.get(MXCSR, 4) as u32;
    cpu.write(at, &value.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unmasked_exception_is_pending() {
        // Invalid operation (bit 0) flagged: pending only while FCW leaves it unmasked.
        assert!(x87_exception_pending(0x37e, 0x0001));
        assert!(!x87_exception_pending(0x37f, 0x0001));
        // TOP, condition codes and the busy/summary bits are no exception.
        assert!(!x87_exception_pending(0x0000, 0xf8c0 & !0x3f));
    }
}
