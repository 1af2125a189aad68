//! The gdbstub `Target`: gdb's view of the machine, translated into calls on [`Vm`].

use super::regs::layout::Layout;
use super::stop::StopQueue;
use super::threads::{self, Selection};
use crate::vmm::{DebugAddr, Vm, VmError};
use crate::x86::paging::GuestVirtAddr;
use gdbstub::common::Tid;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{MultiThreadBase, MultiThreadResumeOps};
use gdbstub::target::ext::base::single_register_access::SingleRegisterAccessOps;
use gdbstub::target::ext::breakpoints::BreakpointsOps;
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverrideOps;
use gdbstub::target::ext::thread_extra_info::ThreadExtraInfoOps;
use gdbstub::target::{Target, TargetError, TargetResult};
use std::marker::PhantomData;
use vm_memory::GuestAddress;

/// The machine as gdb sees it, with register layout `A`.
pub struct KvmTarget<'a, A> {
    /// The machine.
    pub vm: &'a mut Vm,
    /// Explicit per-vCPU actions of the pending resume: (vCPU, step).
    pub(super) actions: Vec<(usize, bool)>,
    /// Scheduler locking: only vCPUs with explicit actions run.
    pub(super) locked: bool,
    /// Whether the register layout includes the ymm upper halves (the guest has AVX).
    pub(super) avx: bool,
    /// The target description, chosen once per session.
    pub(super) xml: String,
    /// The thread gdb has selected, for commands that name none.
    pub(super) selection: Selection,
    /// Stops that vCPUs made together with the one reported, to report on later resumes.
    pub(super) queue: StopQueue,
    _arch: PhantomData<A>,
}

impl<'a, A: Layout> KvmTarget<'a, A> {
    /// Wraps the machine for one gdb session.
    pub fn new(vm: &'a mut Vm) -> Self {
        let avx = crate::vmm::cpuid::guest_has_avx(vm);
        KvmTarget {
            vm,
            actions: Vec::new(),
            locked: false,
            avx,
            xml: super::regs::xml::target_xml::<A>(avx),
            selection: Selection::default(),
            queue: StopQueue::default(),
            _arch: PhantomData,
        }
    }
}

impl<A: Layout> KvmTarget<'_, A> {
    /// What gdb's address `addr` names, for a memory access on behalf of vCPU `id`: a
    /// guest-physical address in phys mode (`monitor phys on`, QEMU's `Qqemu.PhyMemMode`),
    /// else a virtual one through that vCPU's page tables.
    pub(crate) fn debug_addr(&self, id: usize, addr: u64) -> DebugAddr {
        if self.vm.phys_mode() {
            DebugAddr::Phys(GuestAddress(addr))
        } else {
            DebugAddr::Virt {
                vcpu: id,
                addr: GuestVirtAddr(addr),
            }
        }
    }
}

/// The packet buffer size: big enough for 64 KiB memory reads in hex (gdb asks for
/// PacketSize/2 bytes per `m` packet).
pub const PACKET_BUFFER: usize = 0x20010;

impl<A: Layout> Target for KvmTarget<'_, A> {
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

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }

    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

/// A failure gdb should see as an error reply, not as the end of the session.
pub(super) fn non_fatal(e: VmError) -> TargetError<VmError> {
    log::debug!("{e}");
    TargetError::NonFatal
}

impl<A: Layout> MultiThreadBase for KvmTarget<'_, A> {
    fn read_registers(&mut self, regs: &mut A::Registers, tid: Tid) -> TargetResult<(), Self> {
        let id = self.accessed(tid).map_err(non_fatal)?;
        self.read_all(id, regs).map_err(non_fatal)
    }

    fn write_registers(&mut self, regs: &A::Registers, tid: Tid) -> TargetResult<(), Self> {
        let writes: Vec<(usize, u128)> = regs.present().map(|(i, _)| (i, regs.vals[i])).collect();
        let id = self.accessed(tid).map_err(non_fatal)?;
        self.write_values(id, &writes).map_err(non_fatal)
    }

    fn read_addrs(
        &mut self,
        start_addr: A::Usize,
        data: &mut [u8],
        tid: Tid,
    ) -> TargetResult<usize, Self> {
        let id = self.accessed(tid).map_err(non_fatal)?;
        let at = self.debug_addr(id, A::to_u64(start_addr));
        let n = self.vm.read_memory(at, data).map_err(non_fatal)?;
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
        let id = self.accessed(tid).map_err(non_fatal)?;
        let at = self.debug_addr(id, A::to_u64(start_addr));
        let n = self.vm.write_memory(at, data).map_err(non_fatal)?;
        if n < data.len() {
            return Err(TargetError::Errno(14));
        }
        Ok(())
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), VmError> {
        threads::all(self.vm).for_each(thread_is_active);
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}
