//! `info registers` and `info cpus`: the vCPUs' state, QEMU's way. Both single out the
//! thread gdb has selected ([`crate::gdb::threads`]), as QEMU's monitor does its current
//! CPU: `info registers` shows it alone, `info cpus` marks it with `*`.

use super::{CmdResult, Console, MonitorError, parse_num};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;
use crate::inspect::registers::{self, RegisterView};
use crate::vmm::stop::linear_pc;
use crate::x86::msr;

/// Which vCPUs `info registers` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CpuChoice {
    /// The selected thread's vCPU (no argument).
    Selected,
    /// Every vCPU (`-a`).
    All,
    /// The vCPU a number names.
    One(usize),
}

impl CpuChoice {
    /// The choice an `info registers` argument makes: none, `-a`, or a CPU number.
    pub(super) fn parse(arg: Option<&str>) -> Result<CpuChoice, MonitorError> {
        match arg {
            None => Ok(CpuChoice::Selected),
            Some("-a") => Ok(CpuChoice::All),
            Some(n) => Ok(CpuChoice::One(
                usize::try_from(parse_num(n)?).unwrap_or(usize::MAX),
            )),
        }
    }
}

impl<A: Layout> KvmTarget<'_, A> {
    fn cpu_ids(&self, choice: CpuChoice) -> Result<Vec<usize>, MonitorError> {
        let n = self.vm.vcpu_count();
        match choice {
            CpuChoice::Selected => Ok(vec![self.selection.vcpu()]),
            CpuChoice::All => Ok((0..n).collect()),
            CpuChoice::One(id) if id < n => Ok(vec![id]),
            CpuChoice::One(id) => Err(MonitorError::NoCpu(id, n)),
        }
    }

    pub(super) fn info_registers(
        &mut self,
        c: &mut Console<'_, '_>,
        arg: Option<&str>,
    ) -> CmdResult {
        for id in self.cpu_ids(CpuChoice::parse(arg)?)? {
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

    /// One line per vCPU, as QEMU's `info cpus`: `*` on the selected thread's CPU, the
    /// linear PC (CS base + RIP outside 64-bit mode, as QEMU's `pc=`), the CPU's activity
    /// from KVM's multiprocessing state, its mode and why it last stopped.
    pub(super) fn info_cpus(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        let selected = self.selection.vcpu();
        for id in 0..self.vm.vcpu_count() {
            let mark = if id == selected { '*' } else { ' ' };
            let why = match (self.vm.frozen(id), self.vm.last_stop(id)) {
                (Some(stop), _) => format!("frozen: {}", stop.describe()),
                (None, Some(stop)) => format!("last stop: {}", stop.describe()),
                (None, None) => "not run yet".to_string(),
            };
            let activity = match self.vm.activity(id) {
                Ok(a) => a.word().to_string(),
                Err(e) => format!("activity unknown: {e}"),
            };
            match self.vm.state(id) {
                Ok(s) => c.line(format!(
                    "{mark} CPU #{id}: pc={:#018x} ({activity}) {}; {why}",
                    linear_pc(&s.regs, &s.sregs),
                    registers::cpu_mode(&s.sregs, s.regs.rflags)
                )),
                Err(e) => c.line(format!("{mark} CPU #{id}: ({activity}) {e}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_choices() {
        assert_eq!(CpuChoice::parse(None).ok(), Some(CpuChoice::Selected));
        assert_eq!(CpuChoice::parse(Some("-a")).ok(), Some(CpuChoice::All));
        assert_eq!(CpuChoice::parse(Some("3")).ok(), Some(CpuChoice::One(3)));
        assert_eq!(CpuChoice::parse(Some("0x7")).ok(), Some(CpuChoice::One(7)));
        assert!(matches!(
            CpuChoice::parse(Some("-b")),
            Err(MonitorError::BadNumber(_))
        ));
    }
}
