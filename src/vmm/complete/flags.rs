//! `clac` and `stac`: RFLAGS.AC, which SMAP uses to let the kernel reach user pages.

use super::CannotComplete;
use super::cpu::{Cpu, Exception};
use crate::x86::Rflags;
use iced_x86::{Instruction, Mnemonic};

/// `clac` clears RFLAGS.AC, `stac` sets it; #UD above CPL0 (SDM Vol. 2A, CLAC; Vol. 2B,
/// STAC).
pub fn clac_stac(
    cpu: &mut Cpu<'_>,
    insn: &Instruction,
) -> Result<Option<Exception>, CannotComplete> {
    if cpu.cpl() != 0 {
        return Ok(Some(Exception::UD));
    }
    let mut flags = cpu.rflags();
    flags.set(Rflags::AC, insn.mnemonic() == Mnemonic::Stac);
    cpu.regs.rflags = flags.bits();
    Ok(None)
}
