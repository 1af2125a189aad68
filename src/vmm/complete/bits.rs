//! `popcnt r, r/m` (16, 32 and 64 bits).

use super::CannotComplete;
use super::cpu::{Cpu, Exception};
use crate::x86::Rflags;
use iced_x86::{Instruction, OpKind};

/// `popcnt`: the number of set bits of the source into the destination; ZF set when the
/// source is zero, OF, SF, AF, CF and PF cleared (SDM Vol. 2B, POPCNT).
pub fn popcnt(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    let dest = insn.op0_register();
    let size = dest.size();
    let source = match insn.op_kind(1) {
        OpKind::Register => cpu
            .gpr(insn.op1_register())
            .ok_or(CannotComplete::Form("popcnt"))?,
        OpKind::Memory => {
            let at = cpu.operand(insn, 1)?;
            let mut bytes = [0u8; 8];
            if let Some(e) = cpu.read(at, &mut bytes[..size])? {
                return Ok(Some(e));
            }
            u64::from_le_bytes(bytes)
        }
        _ => return Err(CannotComplete::Form("popcnt")),
    };
    cpu.set_gpr(dest, u64::from(source.count_ones()))?;
    let cleared = Rflags::OF | Rflags::SF | Rflags::ZF | Rflags::AF | Rflags::CF | Rflags::PF;
    let mut flags = cpu.rflags() - cleared;
    flags.set(Rflags::ZF, source == 0);
    cpu.regs.rflags = flags.bits();
    Ok(None)
}
