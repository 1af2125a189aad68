//! `reset`: the machine back to its boot entry state.

use super::{CmdResult, Console};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;

impl<A: Layout> KvmTarget<'_, A> {
    pub(super) fn reset(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        self.vm.reset()?;
        let rip = self.vm.state(self.selection.vcpu())?.regs.rip;
        c.line(format!(
            "machine reset to the boot entry state (RIP={rip:#x}, RAM reloaded); breakpoints kept"
        ));
        c.line("gdb still shows the old registers until 'maintenance flush register-cache'");
        Ok(())
    }
}
