//! gdb threads are vCPUs: thread `n + 1` is vCPU `n` (gdb thread ids start at 1). Every
//! translation between the two goes through here, and so does the choice of the thread
//! gdb has selected, which commands without a thread of their own (breakpoints, `monitor`)
//! act on, and each thread's name in `info threads` (`qThreadExtraInfo`), worded as QEMU's
//! gdbstub words it: `CPU#2 [halted]`.

use super::regs::layout::Layout;
use super::target::KvmTarget;
use crate::vmm::{Vm, VmError};
use gdbstub::common::Tid;
use gdbstub::target::ext::thread_extra_info::ThreadExtraInfo;

/// The gdb thread id of vCPU `vcpu`.
pub fn tid_of(vcpu: usize) -> Tid {
    Tid::new(vcpu + 1).unwrap_or(Tid::MIN)
}

/// The vCPU of gdb thread `tid`; a thread the machine does not have is an error.
pub fn vcpu_of(vm: &Vm, tid: Tid) -> Result<usize, VmError> {
    let id = tid.get() - 1;
    if id < vm.vcpu_count() {
        Ok(id)
    } else {
        Err(VmError::NoVcpu(id))
    }
}

/// Every thread of the machine, in vCPU order.
pub fn all(vm: &Vm) -> impl Iterator<Item = Tid> + use<> {
    (0..vm.vcpu_count()).map(tid_of)
}

/// Which thread gdb has selected. gdbstub keeps the `Hg` thread to itself but passes it
/// to every register and memory access, and gdb sends `Hg` only right before such an
/// access, so the last thread accessed is the last `Hg` thread. A stop reply makes the
/// stopped thread gdb's (and gdbstub's) current one, so it replaces any earlier choice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection {
    /// The vCPU of the last register or memory access since the last stop.
    accessed: Option<usize>,
    /// The vCPU whose stop was reported last.
    stopped: Option<usize>,
}

impl Selection {
    /// The selected vCPU: the one gdb last addressed, else the one that stopped last,
    /// else the first (the thread gdbstub's answer to `?` names).
    pub fn vcpu(&self) -> usize {
        self.accessed.or(self.stopped).unwrap_or(0)
    }

    /// Notes a stop reported to gdb for `vcpu`.
    pub fn stopped(&mut self, vcpu: usize) {
        self.stopped = Some(vcpu);
        self.accessed = None;
    }
}

impl<A: Layout> KvmTarget<'_, A> {
    /// The vCPU of thread `tid`, for a register or memory access on gdb's selected
    /// thread; remembered as the selection.
    pub(super) fn accessed(&mut self, tid: Tid) -> Result<usize, VmError> {
        let id = vcpu_of(self.vm, tid)?;
        self.selection.accessed = Some(id);
        Ok(id)
    }
}

/// What `info threads` shows beside thread `tid`: `CPU#n [activity]`, the activity read
/// from KVM for a stopped vCPU (QEMU words it the same way). When KVM cannot say, the
/// name stands alone rather than with a guessed activity.
fn extra_info(vm: &Vm, tid: Tid) -> Result<String, VmError> {
    let id = vcpu_of(vm, tid)?;
    Ok(match vm.activity(id) {
        Ok(a) => format!("CPU#{id} [{}]", a.word()),
        Err(e) => {
            log::debug!("no activity for CPU#{id}: {e}");
            format!("CPU#{id}")
        }
    })
}

impl<A: Layout> ThreadExtraInfo for KvmTarget<'_, A> {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, VmError> {
        // An unknown thread gets an empty answer: an error here would end the session.
        let text = extra_info(self.vm, tid).unwrap_or_default();
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_one_is_vcpu_zero() {
        assert_eq!(tid_of(0).get(), 1);
        assert_eq!(tid_of(3).get(), 4);
    }

    #[test]
    fn a_stop_replaces_the_selection() {
        let mut s = Selection::default();
        assert_eq!(s.vcpu(), 0);
        s.stopped(2);
        assert_eq!(s.vcpu(), 2);
        s.accessed = Some(1);
        assert_eq!(s.vcpu(), 1);
        s.stopped(3);
        assert_eq!(s.vcpu(), 3);
    }
}
