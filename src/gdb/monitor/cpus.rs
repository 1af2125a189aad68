//! `info registers` and `info cpus`: every vCPU's state.

use super::{CmdResult, Console, MonitorError, parse_num};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;
use crate::inspect::registers::{self, RegisterView};
use crate::x86::msr;

impl<A: Layout> KvmTarget<'_, A> {
    fn cpu_ids(&self, arg: Option<&str>) -> Result<Vec<usize>, MonitorError> {
        let n = self.vm.vcpu_count();
        match arg {
            None => Ok((0..n).collect()),
            Some(a) => {
                let id = parse_num(a)? as usize;
                if id >= n {
                    return Err(MonitorError::NoCpu(id, n));
                }
                Ok(vec![id])
            }
        }
    }

    pub(super) fn info_registers(
        &mut self,
        c: &mut Console<'_, '_>,
        arg: Option<&str>,
    ) -> CmdResult {
        for id in self.cpu_ids(arg)? {
            let s = self.vm.state(id)?;
            // Three ioctls on the vCPU's thread, ~7 µs each: fine for a monitor command.
            // Each is optional: a KVM that lacks one still shows the rest.
            let debug = self.vm.debug_regs(id).ok();
            let msrs = self
                .vm
                .read_msrs(id, &[msr::KERNEL_GS_BASE])
                .unwrap_or_default();
            let events = self.vm.vcpu_events(id).ok();
            c.lines(registers::format_registers(&RegisterView {
                id,
                regs: &s.regs,
                sregs: &s.sregs,
                debug: debug.as_ref(),
                msrs: &msrs,
                events: events.as_ref(),
            }));
        }
        Ok(())
    }

    pub(super) fn info_cpus(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        for id in 0..self.vm.vcpu_count() {
            let what = match (self.vm.frozen(id), self.vm.last_stop(id)) {
                (Some(stop), _) => format!("frozen: {}", stop.describe()),
                (None, Some(stop)) => format!("stopped: {}", stop.describe()),
                (None, None) => "stopped at the boot entry point".to_string(),
            };
            match self.vm.state(id) {
                Ok(s) => c.line(format!(
                    "* CPU #{id}: rip={:#018x} {}; {what}",
                    s.regs.rip,
                    registers::cpu_mode(&s.sregs, s.regs.rflags)
                )),
                Err(e) => c.line(format!("* CPU #{id}: {e}")),
            }
        }
        Ok(())
    }
}
