//! `rdsspd` / `rdsspq`: read the shadow-stack pointer.

use super::CannotComplete;
use super::cpu::{Cpu, Exception};
use crate::x86::Cr4;
use iced_x86::Instruction;

/// `rdssp`: with CET off (CR4.CET clear) it executes as a NOP and leaves its register
/// alone (SDM Vol. 2B, RDSSPD/RDSSPQ), which is how kernels probe for shadow stacks. With
/// CR4.CET set the shadow-stack pointer lives in MSRs KVM does not expose here: stays an
/// internal error.
pub fn rdssp(cpu: &mut Cpu<'_>, _: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    if cpu.cr4().contains(Cr4::CET) {
        return Err(CannotComplete::State("rdssp", "CR4.CET is set"));
    }
    Ok(None)
}
