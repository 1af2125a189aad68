//! Resume packets (vCont): continue, single-step, and scheduler locking.

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
