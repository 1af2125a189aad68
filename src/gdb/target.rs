//! The gdbstub `Target`: gdb's view of the machine, translated into calls on [`Vm`].

use super::regs::{GuestArch, fx_bytes, set_fx_bytes};
use crate::vmm::{Vm, VmError};
use gdbstub::common::Tid;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{MultiThreadBase, MultiThreadResumeOps};
use gdbstub::target::ext::breakpoints::BreakpointsOps;
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::{Target, TargetError, TargetResult};
use std::marker::PhantomData;

/// vCPU `n` is gdb thread `n + 1` (thread ids start at 1).
pub fn tid_of(vcpu: usize) -> Tid {
    Tid::new(vcpu + 1).unwrap_or(Tid::MIN)
}

/// The vCPU index of a gdb thread id.
pub fn vcpu_of(tid: Tid) -> usize {
    tid.get() - 1
}

/// The machine as gdb sees it, with register layout `A`.
pub struct KvmTarget<'a, A> {
    /// The machine.
    pub vm: &'a mut Vm,
    /// Explicit per-vCPU actions of the pending resume: (vCPU, step).
    pub(super) actions: Vec<(usize, bool)>,
    /// Scheduler locking: only vCPUs with explicit actions run.
    pub(super) locked: bool,
    _arch: PhantomData<A>,
}

impl<'a, A> KvmTarget<'a, A> {
    /// Wraps the machine for one gdb session.
    pub fn new(vm: &'a mut Vm) -> Self {
        KvmTarget {
            vm,
            actions: Vec::new(),
            locked: false,
            _arch: PhantomData,
        }
    }
}

/// The packet buffer size: big enough for 64 KiB memory reads in hex (gdb asks for
/// PacketSize/2 bytes per `m` packet).
pub const PACKET_BUFFER: usize = 0x20010;

impl<A: GuestArch> Target for KvmTarget<'_, A> {
    type Arch = A;
    type Error = VmError;

    fn base_ops(&mut self) -> BaseOps<'_, A, VmError> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

/// A failure gdb should see as an error reply, not as the end of the session.
fn non_fatal(e: VmError) -> TargetError<VmError> {
    log::debug!("{e}");
    TargetError::NonFatal
}

impl<A: GuestArch> MultiThreadBase for KvmTarget<'_, A> {
    fn read_registers(&mut self, regs: &mut A::Registers, tid: Tid) -> TargetResult<(), Self> {
        let id = vcpu_of(tid);
        let state = self.vm.state(id).map_err(non_fatal)?;
        let fx = fx_bytes(&*self.vm.xsave(id).map_err(non_fatal)?);
        A::read(&state, &fx, regs);
        Ok(())
    }

    fn write_registers(&mut self, regs: &A::Registers, tid: Tid) -> TargetResult<(), Self> {
        let id = vcpu_of(tid);
        let mut state = self.vm.state(id).map_err(non_fatal)?;
        let mut xsave = self.vm.xsave(id).map_err(non_fatal)?;
        let mut fx = fx_bytes(&xsave);
        let old = state;
        A::write(regs, &mut state, &mut fx);
        self.vm.set_regs(id, state.regs).map_err(non_fatal)?;
        if state.sregs != old.sregs {
            self.vm.set_sregs(id, state.sregs).map_err(non_fatal)?;
        }
        set_fx_bytes(&mut xsave, &fx);
        self.vm.set_xsave(id, &xsave).map_err(non_fatal)?;
        Ok(())
    }

    fn read_addrs(
        &mut self,
        start_addr: A::Usize,
        data: &mut [u8],
        tid: Tid,
    ) -> TargetResult<usize, Self> {
        let n = self.vm.read_virt(vcpu_of(tid), A::to_u64(start_addr), data);
        if n == 0 && !data.is_empty() {
            return Err(TargetError::Errno(14)); // EFAULT: nothing mapped there
        }
        Ok(n)
    }

    fn write_addrs(
        &mut self,
        start_addr: A::Usize,
        data: &[u8],
        tid: Tid,
    ) -> TargetResult<(), Self> {
        let n = self
            .vm
            .write_virt(vcpu_of(tid), A::to_u64(start_addr), data);
        if n < data.len() {
            return Err(TargetError::Errno(14));
        }
        Ok(())
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), VmError> {
        for id in 0..self.vm.vcpu_count() {
            thread_is_active(tid_of(id));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}
