//! Mapping the VMM's stop reasons to gdb's.

use super::arch::Reg;
use super::regs::{GuestArch, snapshot_value};
use super::target::tid_of;
use crate::vmm::debug::watch::WatchKind;
use crate::vmm::stop::CpuSnapshot;
use crate::vmm::stop::{VcpuEvent, VcpuStop};
use gdbstub::common::Signal;
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::breakpoints::WatchKind as GdbWatchKind;

/// The registers of the vCPU whose stop [`choose`] reports.
pub fn reporting_state(events: &[VcpuEvent]) -> CpuSnapshot {
    events
        .iter()
        .find(|e| e.stop != VcpuStop::Kicked)
        .or(events.first())
        .map(|e| e.state)
        .unwrap_or_default()
}

/// The stop gdb should see after `events` (all vCPUs have stopped). A vCPU's own reason wins
/// over vCPUs that were merely kicked to make the stop all-stop. `interrupted` is true for
/// Ctrl-C.
pub fn choose<A: GuestArch>(
    events: &[VcpuEvent],
    interrupted: bool,
) -> Option<MultiThreadStopReason<A::Usize>> {
    let ev = events
        .iter()
        .find(|e| e.stop != VcpuStop::Kicked)
        .or_else(|| if interrupted { events.first() } else { None })?;
    Some(to_gdb::<A>(ev))
}

/// The gdb stop reply for one vCPU event. Each kind of fatal stop has its own signal so
/// users can tell them apart: SIGSEGV for a triple fault, SIGILL when KVM cannot run the
/// code, SIGSTOP for a halt with interrupts off.
pub fn to_gdb<A: GuestArch>(ev: &VcpuEvent) -> MultiThreadStopReason<A::Usize> {
    let tid = tid_of(ev.id);
    let signal = |signal| MultiThreadStopReason::SignalWithThread { tid, signal };
    match ev.stop {
        VcpuStop::SwBreakpoint(_) => MultiThreadStopReason::SwBreak(tid),
        VcpuStop::HwBreakpoint { .. } => MultiThreadStopReason::HwBreak(tid),
        VcpuStop::Watch { kind, addr } => MultiThreadStopReason::Watch {
            tid,
            kind: match kind {
                WatchKind::Write => GdbWatchKind::Write,
                WatchKind::Read => GdbWatchKind::Read,
                WatchKind::Access => GdbWatchKind::ReadWrite,
            },
            addr: A::from_u64(addr),
        },
        // A T packet (not S05): it names the thread and carries the expedited registers.
        VcpuStop::Step => signal(Signal::SIGTRAP),
        VcpuStop::Kicked => signal(Signal::SIGINT),
        VcpuStop::GuestBreakpoint => signal(Signal::SIGTRAP),
        VcpuStop::Halted => signal(Signal::SIGSTOP),
        VcpuStop::Shutdown => signal(Signal::SIGSEGV),
        VcpuStop::InternalError { .. } | VcpuStop::UnhandledExit(_) => signal(Signal::SIGILL),
        VcpuStop::FailEntry(_) | VcpuStop::RunError(_) => signal(Signal::SIGABRT),
        VcpuStop::Exit(code) => MultiThreadStopReason::Exited(code as u8),
    }
}

/// The registers gdbserver sends with every stop (pc, sp, fp), so gdb can show where the
/// guest stopped without first reading the whole register file.
pub fn expedited<A: GuestArch>(state: &CpuSnapshot) -> Vec<(A::RegId, Vec<u8>)> {
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
