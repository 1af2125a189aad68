//! Mapping the VMM's stop reasons to gdb's: the one stop→signal policy, used by the live
//! stop replies and by core files alike; and the queue of stops not yet reported.
//!
//! # Stops several vCPUs make at once (all-stop)
//! When one vCPU stops, run control stops all the others before gdb hears of it, and some
//! of them may have stopped for a reason of their own meanwhile: two CPUs at the same
//! breakpoint, a watchpoint written while a step ended. gdb takes one stop per resume, so
//! [`StopQueue`] reports one and keeps the rest, as gdbserver does with its pending
//! statuses:
//! - The first to arrive is reported (an exit before anything else: it ends the machine).
//!   The others wait in arrival order, each vCPU stopped where its stop left it.
//! - On each later resume, before any vCPU runs, the first queued stop of a vCPU that the
//!   resume would run is reported at once, and nothing runs: gdb simply sees the next stop.
//!   With scheduler locking (`vCont;s:2` alone) only the vCPUs being resumed count; the
//!   others' stops wait for a resume that includes them.
//! - A queued stop is checked before it is reported, as gdbserver checks its own: a
//!   software or hardware breakpoint stop is dropped if gdb has since removed that
//!   breakpoint (gdb re-inserts the ones it keeps before it resumes) or moved the vCPU's
//!   PC (`set $pc`, `jump`). The vCPU is then still before the instruction and simply runs
//!   it. A watchpoint hit or a finished step has already happened and cannot be run again,
//!   so it is always reported; so is a fatal stop.
//! - A Ctrl-C reports a vCPU's own stop when the stop-all finds one (including a queued one
//!   being reported at that moment): it is a real event gdb would see next anyway, and the
//!   machine is stopped either way. Only when there is none is it SIGINT.
//! - The queue belongs to the session: a detach or a kill drops it (on a detach gdb's
//!   breakpoints go too, so the queued vCPUs just run on).
//!
//! No stop is reported twice (each leaves the queue when reported or dropped) and none is
//! lost (a vCPU with a queued stop does not run until its stop is reported or dropped).

use super::regs::kvm_map::snapshot_value;
use super::regs::layout::{Layout, Reg};
use super::threads::tid_of;
use crate::vmm::Vm;
use crate::vmm::stop::CpuSnapshot;
use crate::vmm::stop::{VcpuEvent, VcpuStop};
use gdbstub::common::Signal;
use gdbstub::stub::MultiThreadStopReason;
use std::collections::VecDeque;

/// vCPU stops made together with a reported one and not reported yet (see the module doc).
#[derive(Default)]
pub struct StopQueue {
    queued: VecDeque<VcpuEvent>,
}

impl StopQueue {
    /// The stop to report after `events` (every vCPU has stopped), queueing the other
    /// vCPUs' own stops among them. With only kicks there is nothing to report, unless
    /// `interrupted` (Ctrl-C), when the first kick is.
    pub fn report(&mut self, events: Vec<VcpuEvent>, interrupted: bool) -> Option<VcpuEvent> {
        let mut kick = None;
        let mut own = VecDeque::new();
        for ev in events {
            if ev.stop == VcpuStop::Kicked {
                kick.get_or_insert(ev);
            } else {
                own.push_back(ev);
            }
        }
        if let Some(i) = own.iter().position(|e| matches!(e.stop, VcpuStop::Exit(_))) {
            // The machine ends: nothing else will be reported.
            self.queued.clear();
            return own.remove(i);
        }
        match own.pop_front() {
            Some(ev) => {
                self.queued.extend(own);
                Some(ev)
            }
            None if interrupted => kick,
            None => None,
        }
    }

    /// The queued stop to report instead of running the vCPUs `resumed`: the first still
    /// valid one of a vCPU among them. Queued stops of those vCPUs that gdb has made moot
    /// are dropped.
    pub fn next_for(&mut self, vm: &Vm, resumed: &[usize]) -> Option<VcpuEvent> {
        self.queued
            .retain(|ev| !resumed.contains(&ev.id) || still_valid(vm, ev));
        let i = self.queued.iter().position(|ev| resumed.contains(&ev.id))?;
        self.queued.remove(i)
    }

    /// How many stops wait.
    pub(crate) fn len(&self) -> usize {
        self.queued.len()
    }
}

/// Whether a queued stop still happened as far as gdb can tell: a breakpoint stop only if
/// the breakpoint is still there and the vCPU's PC was not moved.
fn still_valid(vm: &Vm, ev: &VcpuEvent) -> bool {
    match ev.stop {
        VcpuStop::SwBreakpoint(_) | VcpuStop::HwBreakpoint { .. } => {
            vm.breakpoint_in_force(ev.stop)
                && vm
                    .state(ev.id)
                    .is_ok_and(|s| s.linear_rip() == ev.state.linear_rip())
        }
        _ => true,
    }
}

/// The signal gdb sees for a stop. Each kind of fatal stop has its own signal so users can
/// tell them apart: SIGSEGV for a triple fault, SIGILL when KVM cannot run the code,
/// SIGSTOP for a halt with interrupts off. An exit has none (gdb's signal 0).
pub fn signal(stop: &VcpuStop) -> Signal {
    match stop {
        VcpuStop::SwBreakpoint(_)
        | VcpuStop::HwBreakpoint { .. }
        | VcpuStop::Watch { .. }
        | VcpuStop::Step
        | VcpuStop::GuestBreakpoint => Signal::SIGTRAP,
        VcpuStop::Kicked => Signal::SIGINT,
        VcpuStop::Halted => Signal::SIGSTOP,
        VcpuStop::Shutdown => Signal::SIGSEGV,
        VcpuStop::InternalError { .. } | VcpuStop::UnhandledExit(_) => Signal::SIGILL,
        VcpuStop::FailEntry(_) | VcpuStop::RunError(_) => Signal::SIGABRT,
        VcpuStop::Exit(_) => Signal::SIGZERO,
    }
}

/// The signal a core file reports (pr_cursig) for a vCPU's last stop: [`signal`] in Linux
/// numbering, which differs from gdb's for SIGSTOP; 0 for a vCPU that never stopped.
pub fn core_signal(stop: Option<VcpuStop>) -> u16 {
    let Some(stop) = stop else {
        return 0;
    };
    let linux = match signal(&stop) {
        Signal::SIGINT => libc::SIGINT,
        Signal::SIGILL => libc::SIGILL,
        Signal::SIGTRAP => libc::SIGTRAP,
        Signal::SIGABRT => libc::SIGABRT,
        Signal::SIGSEGV => libc::SIGSEGV,
        Signal::SIGSTOP => libc::SIGSTOP,
        _ => 0,
    };
    linux as u16
}

/// The gdb stop reply for one vCPU event.
pub fn to_gdb<A: Layout>(ev: &VcpuEvent) -> MultiThreadStopReason<A::Usize> {
    let tid = tid_of(ev.id);
    match ev.stop {
        VcpuStop::SwBreakpoint(_) => MultiThreadStopReason::SwBreak(tid),
        VcpuStop::HwBreakpoint { .. } => MultiThreadStopReason::HwBreak(tid),
        VcpuStop::Watch { kind, addr } => MultiThreadStopReason::Watch {
            tid,
            kind: kind.into(),
            addr: A::from_u64(addr),
        },
        VcpuStop::Exit(code) => MultiThreadStopReason::Exited(code as u8),
        // A T packet (not S05): it names the thread and carries the expedited registers.
        stop => MultiThreadStopReason::SignalWithThread {
            tid,
            signal: signal(&stop),
        },
    }
}

/// The registers gdbserver sends with every stop (pc, sp, fp), so gdb can show where the
/// guest stopped without first reading the whole register file.
pub fn expedited<A: Layout>(state: &CpuSnapshot) -> Vec<(A::RegId, Vec<u8>)> {
    use gdbstub::arch::RegId;
    [Reg::Rbp, Reg::Rsp, Reg::Rip]
        .into_iter()
        .filter_map(|reg| {
            let n = A::number_of(reg)?;
            let (id, size) = <A::RegId as RegId>::from_raw_id(n)?;
            let value = snapshot_value(state, reg)?.to_le_bytes();
            let len = size.map_or(8, |s| s.get()).min(8);
            Some((id, value[..len].to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: usize, stop: VcpuStop) -> VcpuEvent {
        VcpuEvent {
            id,
            stop,
            state: CpuSnapshot::default(),
        }
    }

    fn ids(q: &StopQueue) -> Vec<usize> {
        q.queued.iter().map(|e| e.id).collect()
    }

    #[test]
    fn the_first_own_stop_is_reported_and_the_others_wait_in_order() {
        let mut q = StopQueue::default();
        let events = vec![
            ev(2, VcpuStop::Kicked),
            ev(1, VcpuStop::SwBreakpoint(0x10)),
            ev(3, VcpuStop::Kicked),
            ev(0, VcpuStop::Step),
            ev(4, VcpuStop::SwBreakpoint(0x10)),
        ];
        assert_eq!(q.report(events, false).map(|e| e.id), Some(1));
        assert_eq!(ids(&q), [0, 4]);
        // Only kicks: nothing to report, unless it is a Ctrl-C; the queue stays.
        assert!(q.report(vec![ev(5, VcpuStop::Kicked)], false).is_none());
        let sigint = q.report(vec![ev(5, VcpuStop::Kicked)], true);
        assert_eq!(sigint.map(|e| (e.id, e.stop)), Some((5, VcpuStop::Kicked)));
        assert_eq!(ids(&q), [0, 4]);
    }

    #[test]
    fn an_exit_is_reported_first_and_ends_the_queue() {
        let mut q = StopQueue::default();
        q.report(vec![ev(0, VcpuStop::Step), ev(1, VcpuStop::Step)], false);
        let events = vec![ev(2, VcpuStop::SwBreakpoint(1)), ev(3, VcpuStop::Exit(7))];
        let first = q.report(events, false).map(|e| e.stop);
        assert_eq!(first, Some(VcpuStop::Exit(7)));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn core_files_use_the_live_signals_in_linux_numbering() {
        assert_eq!(core_signal(None), 0);
        assert_eq!(core_signal(Some(VcpuStop::Step)), 5);
        assert_eq!(core_signal(Some(VcpuStop::Kicked)), 2);
        assert_eq!(core_signal(Some(VcpuStop::Shutdown)), 11);
        assert_eq!(core_signal(Some(VcpuStop::UnhandledExit(0))), 4);
        assert_eq!(core_signal(Some(VcpuStop::Halted)), 19);
        assert_eq!(core_signal(Some(VcpuStop::Exit(3))), 0);
        assert_eq!(signal(&VcpuStop::Halted), Signal::SIGSTOP);
    }
}
