//! `xrstor` / `xrstor64`: not completed yet (docs/kvm-quirks.md, "Completions").

use super::CannotComplete;
use super::cpu::{Cpu, Exception};
use iced_x86::Instruction;

/// `xrstor`: stays an internal error for now; Linux boots with `noxsave` on PVM.
pub fn xrstor(_: &mut Cpu<'_>, _: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    Err(CannotComplete::State("xrstor", "not completed yet"))
}
