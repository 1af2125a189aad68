//! Breakpoint packets: Z0/z0 (software), Z1/z1 (debug-register execute slots) and Z2–Z4
//! (watchpoints of any length, on memory slots). Addresses translate through the page
//! tables of the thread gdb has selected.

use super::regs::layout::Layout;
use super::target::KvmTarget;
use crate::vmm::VmError;
use crate::vmm::debug::watch::WatchKind;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::{TargetError, TargetResult};

impl<A: Layout> Breakpoints for KvmTarget<'_, A> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl From<GdbWatchKind> for WatchKind {
    fn from(kind: GdbWatchKind) -> WatchKind {
        match kind {
            GdbWatchKind::Write => WatchKind::Write,
            GdbWatchKind::Read => WatchKind::Read,
            GdbWatchKind::ReadWrite => WatchKind::Access,
        }
    }
}

impl From<WatchKind> for GdbWatchKind {
    fn from(kind: WatchKind) -> GdbWatchKind {
        match kind {
            WatchKind::Write => GdbWatchKind::Write,
            WatchKind::Read => GdbWatchKind::Read,
            WatchKind::Access => GdbWatchKind::ReadWrite,
        }
    }
}

/// gdb's answer to an insertion: accepted, or refused (logged) so that gdb reports that
/// it cannot insert it; a refusal is no error of the session.
fn accepted<E: std::fmt::Display>(
    result: Result<(), E>,
    packet: &str,
) -> Result<bool, TargetError<VmError>> {
    match result {
        Ok(()) => Ok(true),
        Err(e) => {
            log::info!("{packet} refused: {e}");
            Ok(false)
        }
    }
}

impl<A: Layout> HwWatchpoint for KvmTarget<'_, A> {
    fn add_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let (addr, len) = (A::to_u64(addr), A::to_u64(len));
        let vcpu = self.selection.vcpu();
        accepted(self.vm.add_watchpoint(vcpu, addr, len, kind.into()), "Z2-4")
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let (addr, len) = (A::to_u64(addr), A::to_u64(len));
        Ok(self.vm.remove_watchpoint(addr, len, kind.into()))
    }
}

impl<A: Layout> SwBreakpoint for KvmTarget<'_, A> {
    fn add_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        // Breakpoints are global; the address translates through the selected thread's
        // page tables (all vCPUs of a kernel share its kernel mappings).
        let vcpu = self.selection.vcpu();
        accepted(self.vm.add_sw_breakpoint(vcpu, A::to_u64(addr)), "Z0")
    }

    fn remove_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.vm.remove_sw_breakpoint(A::to_u64(addr)))
    }
}

impl<A: Layout> HwBreakpoint for KvmTarget<'_, A> {
    fn add_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        accepted(self.vm.add_hw_breakpoint(A::to_u64(addr)), "Z1")
    }

    fn remove_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.vm.remove_hw_breakpoint(A::to_u64(addr)))
    }
}
