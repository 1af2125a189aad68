//! Breakpoint packets: Z0/z0 (software), Z1/z1 (debug-register execute slots) and Z2–Z4
//! (watchpoints of any length, on memory slots).

use super::regs::GuestArch;
use super::target::KvmTarget;
use crate::vmm::debug::watch::WatchKind;
use gdbstub::target::TargetResult;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind as GdbWatchKind,
};

impl<A: GuestArch> Breakpoints for KvmTarget<'_, A> {
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

fn watch_kind(kind: GdbWatchKind) -> WatchKind {
    match kind {
        GdbWatchKind::Write => WatchKind::Write,
        GdbWatchKind::Read => WatchKind::Read,
        GdbWatchKind::ReadWrite => WatchKind::Access,
    }
}

impl<A: GuestArch> HwWatchpoint for KvmTarget<'_, A> {
    fn add_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let (addr, len) = (A::to_u64(addr), A::to_u64(len));
        match self.vm.add_watchpoint(0, addr, len, watch_kind(kind)) {
            Ok(()) => Ok(true),
            Err(e) => {
                log::info!("Z2-4 refused: {e}");
                Ok(false)
            }
        }
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let (addr, len) = (A::to_u64(addr), A::to_u64(len));
        Ok(self.vm.remove_watchpoint(addr, len, watch_kind(kind)))
    }
}

impl<A: GuestArch> SwBreakpoint for KvmTarget<'_, A> {
    fn add_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        // Breakpoints are global; addresses translate through the first vCPU's page tables
        // (all vCPUs of a kernel share its kernel mappings).
        match self.vm.add_sw_breakpoint(0, A::to_u64(addr)) {
            Ok(()) => Ok(true),
            Err(e) => {
                log::info!("Z0 refused: {e}");
                Ok(false)
            }
        }
    }

    fn remove_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.vm.remove_sw_breakpoint(A::to_u64(addr)))
    }
}

impl<A: GuestArch> HwBreakpoint for KvmTarget<'_, A> {
    fn add_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        match self.vm.add_hw_breakpoint(A::to_u64(addr)) {
            Ok(()) => Ok(true),
            Err(e) => {
                log::info!("Z1 refused: {e}");
                Ok(false)
            }
        }
    }

    fn remove_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.vm.remove_hw_breakpoint(A::to_u64(addr)))
    }
}
