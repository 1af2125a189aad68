//! Resume packets (vCont): continue, single-step, and scheduler locking; a resume first
//! reports a queued stop of a vCPU it would run, if there is one (see [`super::stop`]).
//!
//! gdbstub hands over each `vCont` action with an explicit thread; an action without one
//! (`c`, `c:-1`, the front rewrites the rest) is the default for every other thread, and
//! without it gdbstub asks for scheduler locking: only the named vCPUs run. So
//! `vCont;s:2` (gdb's `stepi` under `set scheduler-locking step` or `on`) steps vCPU 1
//! alone, `vCont;s:2;c` steps it while the others continue (gdb's default), and
//! `vCont;c:1;c:3` runs vCPUs 0 and 2 only.

use super::regs::layout::Layout;
use super::target::KvmTarget;
use super::threads::vcpu_of;
use crate::vmm::VmError;
use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::multithread::{
    MultiThreadResume, MultiThreadSchedulerLocking, MultiThreadSchedulerLockingOps,
    MultiThreadSingleStep, MultiThreadSingleStepOps,
};

impl<A: Layout> MultiThreadResume for KvmTarget<'_, A> {
    fn resume(&mut self) -> Result<(), VmError> {
        let mut actions = std::mem::take(&mut self.actions);
        if !self.locked {
            // gdb's default action: every vCPU without an explicit one continues (all-stop).
            for id in 0..self.vm.vcpu_count() {
                if !actions.iter().any(|(v, _)| *v == id) {
                    actions.push((id, false));
                }
            }
        }
        self.locked = false;
        let resumed: Vec<usize> = actions.iter().map(|&(id, _)| id).collect();
        if let Some(mut ev) = self.queue.next_for(self.vm, &resumed) {
            // Nothing runs: the stop is reported as if the vCPU had just made it, with its
            // registers as they are now (gdb may have written some besides the PC).
            ev.state = self.vm.state(ev.id)?;
            self.vm.report_now(ev);
            return Ok(());
        }
        self.vm.resume(&actions)
    }

    fn clear_resume_actions(&mut self) -> Result<(), VmError> {
        self.actions.clear();
        self.locked = false;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), VmError> {
        if let Some(sig) = signal {
            log::debug!("ignoring signal {sig} on resume: kvmgdb does not inject signals");
        }
        self.actions.push((vcpu_of(self.vm, tid)?, false));
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl<A: Layout> MultiThreadSingleStep for KvmTarget<'_, A> {
    fn set_resume_action_step(&mut self, tid: Tid, signal: Option<Signal>) -> Result<(), VmError> {
        if let Some(sig) = signal {
            log::debug!("ignoring signal {sig} on step: kvmgdb does not inject signals");
        }
        self.actions.push((vcpu_of(self.vm, tid)?, true));
        Ok(())
    }
}

impl<A: Layout> MultiThreadSchedulerLocking for KvmTarget<'_, A> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), VmError> {
        self.locked = true;
        Ok(())
    }
}
