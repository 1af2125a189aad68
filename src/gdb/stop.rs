//! Mapping the VMM's stop reasons to gdb's: the one stop→signal policy, used by the live
//! stop replies and by core files alike.

use super::regs::kvm_map::snapshot_value;
use super::regs::layout::{Layout, Reg};
use super::threads::tid_of;
use crate::vmm::stop::CpuSnapshot;
use crate::vmm::stop::{VcpuEvent, VcpuStop};
use gdbstub::common::Signal;
use gdbstub::stub::MultiThreadStopReason;

/// The event whose stop gdb should see after `events` (all vCPUs have stopped). A vCPU's
/// own reason wins over vCPUs that were merely kicked to make the stop all-stop; with only
/// kicks there is nothing to report, unless `interrupted` (Ctrl-C), when the first one is.
pub fn reported(events: &[VcpuEvent], interrupted: bool) -> Option<&VcpuEvent> {
    events
        .iter()
        .find(|e| e.stop != VcpuStop::Kicked)
        .or_else(|| if interrupted { events.first() } else { None })
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
