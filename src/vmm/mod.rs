//! The VMM core: guest RAM, devices, vCPU threads and the controller that starts, stops and
//! inspects them. It knows nothing about gdb; `src/gdb/` drives it through this API.
//!
//! [`Vm`] is a composition of owners and delegates to them:
//! - [`stop`]: the public stop vocabulary;
//! - `vcpu`: the vCPU threads (exit dispatch, guest debug, kicks) and their handles;
//! - `run_control`: resume, kick, stop-all, pending stops, the memory-slot swap;
//! - [`memslots`]: guest RAM's memory slots;
//! - [`debug`]: breakpoints, watchpoints, debugger memory access;
//! - [`quirks`]: where this machine's KVM differs from hardware KVM;
//! - [`sched`]: host scheduling of the controller thread;
//! - [`devices`]: the port-I/O and MMIO devices;
//! - [`irqchip`]: KVM's in-kernel PICs, IOAPIC, local APICs and PIT.

pub mod complete;
pub mod cpuid;
pub mod debug;
pub mod devices;
pub mod irqchip;
pub mod memslots;
pub mod quirks;
mod run_control;
pub mod sched;
pub mod stop;
mod vcpu;

use crate::boot::{BootInfo, BootPlan, VcpuEntry};
use crate::caps::KvmCaps;
use crate::memory::{self, GuestMem};
use crate::x86::Efer;
use crate::x86::paging::PagingRegs;
use debug::table::DebugTable;
use debug::watch::WatchKind;
use debug::{AddrSpace, Debugger};
pub use debug::{BreakpointError, DebugAddr};
use devices::{DeviceConfig, Devices};
use irqchip::{Irqchip, IrqchipError};
use kvm_bindings::{
    CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2, kvm_regs, kvm_sregs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VmFd};
use memslots::{MemSlotError, MemSlots};
use quirks::{MachineFacts, Quirks};
use run_control::{RamSwap, RunControl};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stop::{CpuSnapshot, VcpuEvent, VcpuStop};
use vcpu::halt_watch::HaltWatch;
use vcpu::handle::{VcpuHandle, VcpuShared, copy_xsave};
pub use vcpu::tables::{SegReg, SegmentError};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Errors building or driving the machine.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM refused to create the VM.
    #[error("cannot create the KVM VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// Guest RAM could not be allocated.
    #[error("cannot allocate {0} MiB of guest RAM")]
    Memory(u64, #[source] vm_memory::mmap::FromRangesError),
    /// KVM refused a memory slot.
    #[error("cannot register guest RAM with KVM")]
    MemorySlot(#[source] MemSlotError),
    /// The boot plan could not be written into guest RAM.
    #[error("cannot write the boot plan into guest RAM")]
    Boot(#[source] vm_memory::GuestMemoryError),
    /// vCPU creation or set-up failed.
    #[error("cannot set up vCPU {0}: {1}")]
    Vcpu(usize, &'static str, #[source] kvm_ioctls::Error),
    /// The vCPU thread could not be started.
    #[error("cannot start a vCPU thread")]
    Thread(#[source] std::io::Error),
    /// The notification eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// A vCPU thread has died.
    #[error("vCPU {0} thread is gone")]
    VcpuGone(usize),
    /// A vCPU ioctl failed.
    #[error("vCPU {0}: {1} failed: {2}")]
    VcpuIoctl(usize, &'static str, std::io::Error),
    /// The vCPU is running, so its state cannot be read.
    #[error("vCPU {0} is running")]
    Running(usize),
    /// No such vCPU.
    #[error("no vCPU {0}")]
    NoVcpu(usize),
    /// More vCPUs were asked for than kvmgdb or this KVM can run.
    #[error(
        "{asked} vCPUs asked for: kvmgdb runs at most {MAX_VCPUS}, and this KVM at most {kvm} (KVM_CAP_MAX_VCPUS)"
    )]
    TooManyVcpus {
        /// The number asked for.
        asked: usize,
        /// KVM_CAP_MAX_VCPUS.
        kvm: usize,
    },
    /// An application processor would wait for INIT-SIPI, which needs KVM's local APIC.
    #[error(
        "vCPU {0} cannot wait for INIT-SIPI: KVM has no in-kernel local APIC (KVM_CAP_IRQCHIP)"
    )]
    NoSipi(usize),
    /// KVM refused a system-register state (KVM_SET_SREGS): the vCPU keeps its old one.
    #[error("vCPU {0}: the CPU cannot hold these system registers")]
    SregsRefused(usize, #[source] std::io::Error),
    /// An EFER bit this CPU (its CPUID) does not offer.
    #[error("vCPU {0}: EFER bits {1:#x} are not supported by this CPU")]
    EferUnsupported(usize, u64),
    /// A segment selector that cannot be loaded.
    #[error("vCPU {0}: cannot load the segment")]
    Segment(usize, #[source] SegmentError),
    /// Guest RAM's memory slots could not be swapped to run an instruction on a watched page.
    #[error("cannot change guest RAM's memory slots")]
    MemSlots(#[source] MemSlotError),
    /// The in-kernel interrupt controllers or PIT could not be created or reset.
    #[error("cannot set up the interrupt controllers")]
    Irqchip(#[source] IrqchipError),
    /// COM1's interrupt line could not be wired to the irqchip.
    #[error("cannot connect the serial port's interrupt (KVM_IRQFD)")]
    SerialIrq(#[source] std::io::Error),
}

/// The most vCPUs a machine may have (each local APIC id fits the MADT's and CPUID's byte).
pub const MAX_VCPUS: usize = 64;

/// Refuses a vCPU count above [`MAX_VCPUS`] or this KVM's KVM_CAP_MAX_VCPUS.
pub fn check_vcpus(asked: usize, caps: &KvmCaps) -> Result<(), VmError> {
    if asked > MAX_VCPUS.min(caps.max_vcpus) {
        return Err(VmError::TooManyVcpus {
            asked,
            kvm: caps.max_vcpus,
        });
    }
    Ok(())
}

/// The shape of the machine to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// Bytes of guest RAM.
    pub memory_size: u64,
    /// Number of vCPUs (at least 1).
    pub vcpus: usize,
    /// A guest reset (port 0xcf9, the keyboard controller) ends the machine with status 0
    /// instead of restarting it, as QEMU's `-no-reboot`.
    pub no_reboot: bool,
}

impl MachineConfig {
    /// A machine with `memory_size` bytes of RAM and `vcpus` vCPUs that restarts on a reset.
    pub fn new(memory_size: u64, vcpus: usize) -> MachineConfig {
        MachineConfig {
            memory_size,
            vcpus,
            no_reboot: false,
        }
    }
}

/// The machine: RAM, devices and vCPUs.
///
/// Field order is load-bearing: fields drop in declaration order, and `vm_fd` is declared
/// before `mem` (and before `debug`, which holds guest RAM too), so the VM and its memory
/// slots are gone before the last reference to guest RAM's mapping. The vCPU threads,
/// which hold guest RAM as well, are joined in `Drop::drop`, before any field drops.
pub struct Vm {
    /// Declared first: the watcher must end before the vCPU threads it signals.
    halt_watch: Option<HaltWatch>,
    run: RunControl,
    vm_fd: VmFd,
    slots: MemSlots,
    debug: Debugger,
    mem: Arc<GuestMem>,
    _kvm: Kvm,
    caps: KvmCaps,
    machine: MachineFacts,
    irqchip: Option<Irqchip>,
    devices: Arc<Mutex<Devices>>,
    /// What `reset` goes back to: the plan, and the state it gave each vCPU (an
    /// application processor's is KVM's reset state).
    plan: BootPlan,
    boot_states: Vec<CpuSnapshot>,
    boot_xsave: Option<Box<kvm_xsave>>,
    /// The CPUID table every vCPU was given (KVM_SET_CPUID2).
    cpuid: CpuId,
}

/// CPUID leaves to fetch from KVM (its documented maximum, KVM_MAX_CPUID_ENTRIES).
const MAX_CPUID_ENTRIES: usize = 256;

impl Vm {
    /// Builds a machine as `config` says, applies `plan` (its writes into RAM; the vCPUs it
    /// gives an entry state start there, the boot processor first; every other one waits
    /// for the guest's INIT-SIPI-SIPI as on real hardware) and keeps it for [`Vm::reset`].
    /// The vCPUs do not run until [`Vm::resume`].
    pub fn new(
        kvm: Kvm,
        config: MachineConfig,
        plan: BootPlan,
        serial_out: Box<dyn Write + Send>,
    ) -> Result<Vm, VmError> {
        let caps = KvmCaps::query(&kvm);
        check_vcpus(config.vcpus, &caps)?;
        let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
        // The interrupt controllers and PIT a kernel expects, before any vCPU (KVM API
        // 4.24). Without KVM_CAP_IRQCHIP the machine has none: `hlt` then exits to us.
        let irqchip = if caps.irqchip {
            Some(Irqchip::create(&vm).map_err(VmError::Irqchip)?)
        } else {
            log::warn!("KVM has no in-kernel irqchip: the machine has no interrupts or timer");
            None
        };
        let machine = MachineFacts {
            in_kernel_irqchip: irqchip.is_some(),
            pvm: quirks::detect_pvm(),
        };
        let com1_irq = match &irqchip {
            Some(_) => {
                let fd = EventFd::new(EFD_NONBLOCK).map_err(VmError::SerialIrq)?;
                vm.register_irqfd(&fd, crate::platform::COM1_IRQ)
                    .map_err(|e| {
                        VmError::SerialIrq(std::io::Error::from_raw_os_error(e.errno()))
                    })?;
                Some(fd)
            }
            None => None,
        };
        let mem = memory::create_guest_memory(config.memory_size)
            .map_err(|e| VmError::Memory(config.memory_size >> 20, e))?;
        let slots = MemSlots::new(&vm, &mem, caps.readonly_mem).map_err(VmError::MemorySlot)?;

        // Boot: write the plan into RAM; a vCPU's entry state is the plan's, over KVM's
        // reset system registers (`reset` re-applies the plan).
        plan.write_memory(&mem).map_err(VmError::Boot)?;
        let entry = |e: &VcpuEntry| {
            let e = *e;
            move |reset_sregs: kvm_sregs| {
                let mut sregs = reset_sregs;
                e.sregs.apply(&mut sregs);
                CpuSnapshot {
                    regs: e.regs,
                    sregs,
                }
            }
        };

        let mem = Arc::new(mem);
        vcpu::kick::install_handler();
        let notify = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?);
        let (event_tx, events) = mpsc::channel();
        let below_4g = config.memory_size.min(memory::MMIO_HOLE_START);
        let device_config = DeviceConfig {
            ram_below_4g: below_4g,
            ram_above_4g: config.memory_size - below_4g,
            vcpus: config.vcpus.max(1),
            no_reboot: config.no_reboot,
            com1_irq,
        };
        let devices = Arc::new(Mutex::new(Devices::new(device_config, serial_out)));
        let table = Arc::new(DebugTable::new(machine));
        let supported = kvm
            .get_supported_cpuid(MAX_CPUID_ENTRIES)
            .map_err(|e| VmError::Vcpu(0, "KVM_GET_SUPPORTED_CPUID", e))?;
        let cpuid = cpuid::machine_cpuid(&supported, machine, config.vcpus.max(1));

        let shared = VcpuShared {
            vm: &vm,
            cpuid: &cpuid,
            mem: &mem,
            devices: &devices,
            debug: &table,
            events: &event_tx,
            notify: &notify,
            sync_regs: caps.sync_regs & 3 == 3,
            block_irq: caps.supports_debug_flag(kvm_bindings::KVM_GUESTDBG_BLOCKIRQ),
            irqchip: irqchip.is_some(),
        };
        let mut vcpus = Vec::new();
        let mut boot_states = Vec::new();
        let mut boot_xsave = None;
        for id in 0..config.vcpus.max(1) {
            let start = plan.vcpus.get(id).map(entry);
            let start = start
                .as_ref()
                .map(|f| f as &dyn Fn(kvm_sregs) -> CpuSnapshot);
            let spawned = VcpuHandle::spawn(id, &shared, start)?;
            if id == 0 {
                boot_xsave = spawned.xsave;
            }
            boot_states.push(spawned.entry);
            vcpus.push(spawned.handle);
        }
        drop(event_tx);
        let halt_watch = match &irqchip {
            Some(_) => Some(
                HaltWatch::start(vcpus.iter().filter_map(VcpuHandle::watched).collect())
                    .map_err(VmError::Thread)?,
            ),
            None => None,
        };

        Ok(Vm {
            halt_watch,
            run: RunControl::new(vcpus, events, notify),
            vm_fd: vm,
            slots,
            debug: Debugger::new(table, mem.clone()),
            mem,
            _kvm: kvm,
            caps,
            machine,
            irqchip,
            devices,
            plan,
            boot_states,
            boot_xsave,
            cpuid,
        })
    }

    /// How the kernel was booted.
    pub fn boot_info(&self) -> &BootInfo {
        &self.plan.info
    }

    /// The guest's CPUID leaf `function`, sub-leaf `index` (ignored for leaves without
    /// sub-leaves), as the vCPUs were given it; None if the table has no such leaf.
    pub fn cpuid(&self, function: u32, index: u32) -> Option<kvm_cpuid_entry2> {
        self.cpuid.as_slice().iter().copied().find(|e| {
            e.function == function
                && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == index)
        })
    }

    /// The host's KVM capabilities.
    pub fn caps(&self) -> &KvmCaps {
        &self.caps
    }

    /// What the machine set up that KVM's behaviour depends on (an in-kernel irqchip).
    pub fn machine_facts(&self) -> MachineFacts {
        self.machine
    }

    /// What was learned about this KVM's deviations at run time.
    pub fn quirks(&self) -> Quirks {
        self.debug.table().quirks()
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMem {
        &self.mem
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.run.vcpus().len()
    }

    /// A file descriptor that becomes readable when a vCPU event is ready.
    pub fn event_fd(&self) -> RawFd {
        self.run.notify().as_raw_fd()
    }

    /// True if any vCPU is running.
    pub fn any_running(&self) -> bool {
        self.run.any_running()
    }

    /// The last stop of vCPU `id`.
    pub fn last_stop(&self, id: usize) -> Option<VcpuStop> {
        self.run.vcpu(id).ok().and_then(|v| v.last_stop)
    }

    /// What vCPU `id` is doing: running while it runs (no ioctl), else its activity from
    /// KVM's multiprocessing state at this stop (one KVM_GET_MP_STATE on its thread).
    pub fn activity(&self, id: usize) -> Result<stop::CpuActivity, VmError> {
        let v = self.run.vcpu(id)?;
        if v.running {
            return Ok(stop::CpuActivity::Running);
        }
        Ok(stop::CpuActivity::of_stopped(v.mp_state()?, v.last_stop))
    }

    /// The stop that froze vCPU `id`, if one did.
    pub fn frozen(&self, id: usize) -> Option<VcpuStop> {
        self.run.vcpu(id).ok().and_then(|v| v.frozen)
    }

    /// Resumes the vCPUs: each `(id, step)` pair runs vCPU `id`, one instruction if `step`.
    pub fn resume(&mut self, actions: &[(usize, bool)]) -> Result<(), VmError> {
        self.run.resume(actions)
    }

    /// Runs the vCPUs `ids`, stopped by a kick the debugger never saw, on as they were
    /// running: one that was single-stepping still makes its one step.
    pub fn rerun(&mut self, ids: &[usize]) {
        self.run.rerun(ids);
    }

    /// Reports `ev` as vCPU `ev.id`'s next stop without running it: [`Vm::poll_event`]
    /// returns it, as if the vCPU had run to it (it counts as running until then). For a
    /// stop made earlier and not reported yet.
    pub fn report_now(&mut self, ev: VcpuEvent) {
        self.run.report_now(ev.id, ev.stop, ev.state);
    }

    /// Whether the breakpoint a breakpoint stop `stop` names is still set (as the same
    /// kind: a software breakpoint, wherever it lives, or a debug-register one).
    pub fn breakpoint_in_force(&self, stop: VcpuStop) -> bool {
        match stop {
            VcpuStop::SwBreakpoint(addr) => {
                self.debug.is_sw_via_debugreg(addr)
                    || self.debug.table().with(|b| b.sw.contains_key(&addr))
            }
            VcpuStop::HwBreakpoint { addr, .. } => {
                !self.debug.is_sw_via_debugreg(addr)
                    && self.debug.table().with(|b| b.hw_slot_at(addr).is_some())
            }
            _ => false,
        }
    }

    /// Waits up to `max` for a vCPU stop by polling the queue, without sleeping (see
    /// [`Vm::poll_event`] to take it).
    pub fn spin_for_event(&mut self, max: Duration) -> bool {
        self.run.spin_for_event(max)
    }

    /// Whether a host core is left for the controller beside the running vCPUs: only then
    /// does spinning (for a stop or a packet) pay.
    pub fn spare_core(&self) -> bool {
        self.run.spare_core()
    }

    fn ram_swap(&mut self) -> (&mut RunControl, RamSwap<'_>) {
        (
            &mut self.run,
            RamSwap {
                vm: &self.vm_fd,
                slots: &mut self.slots,
                debug: &self.debug,
                mem: &self.mem,
            },
        )
    }

    /// Takes the next vCPU stop if one is ready, without blocking. A guest's reset of the
    /// machine is handled here, unseen by the caller: the machine restarts from the boot
    /// plan with the breakpoints kept, as a PC's reset button would (a vCPU that was
    /// single-stepping reports the step's end at the entry point).
    pub fn poll_event(&mut self) -> Option<VcpuEvent> {
        loop {
            let (run, mut ram) = self.ram_swap();
            let ev = run.poll_event(&mut ram);
            let Some((id, how)) = self.run.take_reset() else {
                return ev;
            };
            if let Err(e) = self.guest_reset(id) {
                log::error!("the guest reset the machine ({how}), and the reset failed: {e}");
                return ev;
            }
            log::info!("the guest reset the machine ({how})");
            if ev.is_some() {
                return ev;
            }
        }
    }

    /// The machine reset that vCPU `id` asked for: every vCPU stopped, [`Vm::reset`], then
    /// all resumed, except that a vCPU stepping when it reset reports the step.
    fn guest_reset(&mut self, id: usize) -> Result<(), VmError> {
        let stepping = self.run.vcpu(id)?.stepping;
        // Whatever else stopped meanwhile is moot: the machine starts over.
        drop(self.stop_all());
        self.reset()?;
        let resume: Vec<(usize, bool)> = (0..self.vcpu_count())
            .filter(|&v| !(stepping && v == id))
            .map(|v| (v, false))
            .collect();
        self.resume(&resume)?;
        if stepping {
            self.run
                .report_now(id, VcpuStop::Step, self.boot_states[id]);
        }
        Ok(())
    }

    /// Kicks every running vCPU out of KVM_RUN and waits until all have stopped. Returns the
    /// stops that arrived, in order (a vCPU may have stopped for its own reason first).
    /// A guest reset that arrives meanwhile is carried out, and the stops show the vCPUs
    /// at their entry point.
    pub fn stop_all(&mut self) -> Vec<VcpuEvent> {
        let (run, mut ram) = self.ram_swap();
        let mut events = run.stop_all(&mut ram);
        if let Some((_, how)) = self.run.take_reset() {
            match self.reset() {
                Ok(()) => {
                    log::info!("the guest reset the machine ({how})");
                    for ev in &mut events {
                        ev.state = self.boot_states[ev.id];
                    }
                }
                Err(e) => {
                    log::error!("the guest reset the machine ({how}), and the reset failed: {e}")
                }
            }
        }
        events
    }

    /// The registers of a stopped vCPU.
    pub fn state(&self, id: usize) -> Result<CpuSnapshot, VmError> {
        self.run.vcpu(id)?.snapshot()
    }

    /// Sets the general-purpose registers of a stopped vCPU (applied when it next runs).
    pub fn set_regs(&mut self, id: usize, regs: kvm_regs) -> Result<(), VmError> {
        self.run.vcpu_mut(id)?.set_regs(regs)
    }

    /// Sets the system registers of a stopped vCPU, at once. A state the CPU cannot hold
    /// is refused and the vCPU keeps its old one: KVM_SET_SREGS checks CR0, CR4 and the
    /// long-mode rules; EFER bits this CPU's CPUID does not offer are checked here, as
    /// KVM_SET_SREGS leaves them to VM entry (which would then fail on every run).
    pub fn set_sregs(&mut self, id: usize, sregs: kvm_sregs) -> Result<(), VmError> {
        let old = self.run.vcpu(id)?.snapshot()?.sregs.efer;
        let unsupported = sregs.efer & !old & !self.supported_efer();
        if unsupported != 0 {
            return Err(VmError::EferUnsupported(id, unsupported));
        }
        self.run.vcpu_mut(id)?.set_sregs(sregs)
    }

    /// The EFER bits this CPU offers: from CPUID 8000_0001h (SDM Vol. 2A, CPUID; AMD APM
    /// Vol. 3, E.4.2).
    fn supported_efer(&self) -> u64 {
        const EDX_SYSCALL: u32 = 1 << 11;
        const EDX_NX: u32 = 1 << 20;
        const EDX_FFXSR: u32 = 1 << 25;
        const EDX_LM: u32 = 1 << 29;
        const ECX_SVM: u32 = 1 << 2;
        const ECX_TCE: u32 = 1 << 17;
        let Some(e) = self.cpuid(0x8000_0001, 0) else {
            return 0;
        };
        let mut efer = Efer::empty();
        for (on, bits) in [
            (e.edx & EDX_SYSCALL, Efer::SCE),
            (e.edx & EDX_NX, Efer::NXE),
            (e.edx & EDX_FFXSR, Efer::FFXSR),
            (e.edx & EDX_LM, Efer::LME | Efer::LMA),
            (e.ecx & ECX_SVM, Efer::SVME),
            (e.ecx & ECX_TCE, Efer::TCE),
        ] {
            if on != 0 {
                efer |= bits;
            }
        }
        efer.bits()
    }

    /// What loading `selector` into segment register `reg` of a stopped vCPU gives, as
    /// `mov` (or a far jump, for CS) would load it from the GDT or LDT of `sregs` (its
    /// system registers as the debugger is about to set them), or why the CPU would refuse.
    pub fn load_segment(
        &self,
        id: usize,
        sregs: &kvm_sregs,
        reg: SegReg,
        selector: u16,
        old: &kvm_bindings::kvm_segment,
    ) -> Result<kvm_bindings::kvm_segment, VmError> {
        self.run.vcpu(id)?;
        vcpu::tables::load_segment(&self.mem, sregs, reg, selector, old)
            .map_err(|e| VmError::Segment(id, e))
    }

    /// The FPU/SSE/AVX state of a stopped vCPU (cached until it runs again).
    pub fn xsave(&mut self, id: usize) -> Result<Box<kvm_xsave>, VmError> {
        self.run.vcpu_mut(id)?.xsave().map(copy_xsave)
    }

    /// Writes the FPU/SSE/AVX state of a stopped vCPU.
    pub fn set_xsave(&mut self, id: usize, xsave: &kvm_xsave) -> Result<(), VmError> {
        self.run.vcpu_mut(id)?.set_xsave(xsave)
    }

    /// Reads MSRs of a stopped vCPU; MSRs KVM cannot read are left out of the result.
    pub fn read_msrs(&mut self, id: usize, indices: &[u32]) -> Result<Vec<(u32, u64)>, VmError> {
        self.run.vcpu(id)?.read_msrs(indices)
    }

    /// Reads MSRs of a stopped vCPU and, in the same hand-off to its thread, its XSAVE area
    /// into the cache [`Vm::xsave`] serves from (one thread wake-up instead of two).
    pub fn read_msrs_and_xsave(
        &mut self,
        id: usize,
        indices: &[u32],
    ) -> Result<Vec<(u32, u64)>, VmError> {
        self.run.vcpu_mut(id)?.read_msrs_and_xsave(indices)
    }

    /// MSR `index` of a stopped vCPU as it is at this stop (None if KVM cannot read it):
    /// read from KVM at most once per stop, kept in the vCPU's per-stop state cache beside
    /// its registers and XSAVE area, and forgotten when it runs again.
    pub fn msr_at_stop(&mut self, id: usize, index: u32) -> Result<Option<u64>, VmError> {
        self.run.vcpu_mut(id)?.msr_at_stop(index)
    }

    /// Writes one MSR of a stopped vCPU.
    pub fn write_msr(&mut self, id: usize, index: u32, value: u64) -> Result<(), VmError> {
        self.run.vcpu_mut(id)?.write_msr(index, value)
    }

    /// The debug registers of a stopped vCPU.
    pub fn debug_regs(&mut self, id: usize) -> Result<kvm_bindings::kvm_debugregs, VmError> {
        self.run.vcpu(id)?.debug_regs()
    }

    /// Pending exception, interrupt and NMI state of a stopped vCPU.
    pub fn vcpu_events(&mut self, id: usize) -> Result<kvm_bindings::kvm_vcpu_events, VmError> {
        self.run.vcpu(id)?.vcpu_events()
    }

    /// The paging registers of vCPU `id` (its last known state); an unknown vCPU is an
    /// error, never "paging off".
    pub fn paging_regs(&self, id: usize) -> Result<PagingRegs, VmError> {
        Ok(self.run.vcpu(id)?.paging_regs())
    }

    /// Chooses whether single steps keep interrupts blocked (KVM_GUESTDBG_BLOCKIRQ where
    /// KVM offers it). On by default.
    pub fn set_step_masks_irq(&self, on: bool) {
        self.debug.table().set_step_masks_irq(on);
    }

    /// Whether single steps keep interrupts blocked.
    pub fn step_masks_irq(&self) -> bool {
        self.debug.table().step_masks_irq()
    }

    /// Chooses how debugger addresses are read: as virtual addresses through vCPU page
    /// tables (the default), or as guest-physical addresses (`phys` on).
    pub fn set_phys_mode(&mut self, phys: bool) {
        self.debug.set_phys_mode(phys);
    }

    /// True when debugger addresses are guest-physical.
    pub fn phys_mode(&self) -> bool {
        self.debug.phys_mode()
    }

    /// Reads guest memory at `at` into `buf`. Returns how many bytes were readable: a read
    /// stops at the first unmapped page. Our planted breakpoint bytes read as the original
    /// bytes. A virtual address through an unknown vCPU is an error, never a physical read.
    pub fn read_memory(&self, at: DebugAddr, buf: &mut [u8]) -> Result<usize, VmError> {
        Ok(match at {
            DebugAddr::Phys(gpa) => self.debug.read(AddrSpace::Phys, gpa.0, buf),
            DebugAddr::Virt { vcpu, addr } => {
                let regs = self.paging_regs(vcpu)?;
                self.debug.read(AddrSpace::Virt(&regs), addr.0, buf)
            }
        })
    }

    /// Writes guest memory at `at` (as for [`Vm::read_memory`]). Returns how many bytes
    /// were written. Bytes under our breakpoints update the saved original instead, so the
    /// breakpoint stays planted.
    pub fn write_memory(&mut self, at: DebugAddr, data: &[u8]) -> Result<usize, VmError> {
        Ok(match at {
            DebugAddr::Phys(gpa) => self.debug.write(AddrSpace::Phys, gpa.0, data),
            DebugAddr::Virt { vcpu, addr } => {
                let regs = self.paging_regs(vcpu)?;
                self.debug.write(AddrSpace::Virt(&regs), addr.0, data)
            }
        })
    }

    fn breakpoint_regs(&self, id: usize) -> Result<PagingRegs, BreakpointError> {
        self.paging_regs(id)
            .map_err(|_| BreakpointError::NoVcpu(id))
    }

    /// Plants a software breakpoint at linear address `addr`, translated as vCPU `id` sees it.
    pub fn add_sw_breakpoint(&mut self, id: usize, addr: u64) -> Result<(), BreakpointError> {
        let regs = self.breakpoint_regs(id)?;
        self.debug.add_sw_breakpoint(&regs, addr)
    }

    /// Removes the software breakpoint at `addr`; false if there was none.
    pub fn remove_sw_breakpoint(&mut self, addr: u64) -> bool {
        self.debug.remove_sw_breakpoint(addr)
    }

    /// Arms a debug-register execute breakpoint at linear address `addr`.
    pub fn add_hw_breakpoint(&mut self, addr: u64) -> Result<(), BreakpointError> {
        self.debug.add_hw_breakpoint(addr)
    }

    /// Disarms the execute breakpoint at `addr`; false if there was none.
    pub fn remove_hw_breakpoint(&mut self, addr: u64) -> bool {
        self.debug.remove_hw_breakpoint(addr)
    }

    /// Removes every breakpoint and watchpoint (when a debugger goes away).
    pub fn clear_breakpoints(&mut self) {
        if self.debug.clear() {
            if let Err(e) = self.relayout_slots() {
                log::error!("cannot restore guest RAM's memory slots: {e}");
            }
        }
    }

    /// Watches `len` bytes at debugger address `addr` (translated as vCPU `id` sees it) for
    /// accesses of `kind`. Any length; any number.
    pub fn add_watchpoint(
        &mut self,
        id: usize,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> Result<(), BreakpointError> {
        let regs = self.breakpoint_regs(id)?;
        let w = self.debug.add_watchpoint(&regs, addr, len, kind)?;
        if let Err(e) = self.relayout_slots() {
            self.debug.forget_watchpoint(&w);
            let _ = self.relayout_slots();
            return Err(BreakpointError::Slots(e));
        }
        Ok(())
    }

    /// Removes a watchpoint; false if there was none.
    pub fn remove_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> bool {
        let removed = self.debug.remove_watchpoint(addr, len, kind);
        if removed {
            if let Err(e) = self.relayout_slots() {
                log::error!("cannot update memory slots after removing a watchpoint: {e}");
            }
        }
        removed
    }

    /// Lays guest RAM's memory slots out for the watchpoints in force. Only while every
    /// vCPU is stopped.
    fn relayout_slots(&mut self) -> Result<(), MemSlotError> {
        let watches = self.debug.watches();
        self.slots.relayout(&self.vm_fd, &watches)
    }

    /// Puts the machine back into its boot entry state: RAM cleared and the boot plan re-applied,
    /// vCPU registers as at entry, frozen state forgotten. Breakpoints are kept (re-planted
    /// over the reloaded code). All vCPUs must be stopped.
    pub fn reset(&mut self) -> Result<(), VmError> {
        if let Some(id) = self.run.vcpus().iter().position(|v| v.running) {
            return Err(VmError::Running(id));
        }
        discard_ram(&self.mem);
        if let Some(chip) = &self.irqchip {
            chip.reset(&self.vm_fd).map_err(VmError::Irqchip)?;
        }
        for v in self.run.vcpus() {
            v.reset_interrupt_state()?;
        }
        if let Ok(mut d) = self.devices.lock() {
            d.reset();
        }
        // Boot: re-apply the plan; every vCPU goes back to the entry state below.
        self.plan.write_memory(&self.mem).map_err(VmError::Boot)?;
        self.debug.replant();
        let boot_xsave = self.boot_xsave.as_deref().map(copy_xsave);
        for (v, &boot_state) in self.run.vcpus_mut().iter_mut().zip(&self.boot_states) {
            v.frozen = None;
            v.last_stop = None;
            v.note_reset(&boot_state);
            v.forget_stop_cache();
            v.change = vcpu::StateChange {
                regs: Some(boot_state.regs),
                sregs: Some(boot_state.sregs),
            };
            if let Some(x) = &boot_xsave {
                v.set_xsave(x)?;
            }
        }
        Ok(())
    }

    /// Feeds `input` to COM1's receive side from a thread of its own (see
    /// [`devices::serial::spawn_input`]); for `-serial stdio`, standard input when
    /// [`devices::serial::stdin_is_interactive`].
    pub fn attach_serial_input(&self, input: Box<dyn std::io::Read + Send>) -> Result<(), VmError> {
        devices::serial::spawn_input(self.devices.clone(), input).map_err(VmError::Thread)
    }

    /// Flushes device output (the serial port).
    pub fn flush_devices(&self) {
        if let Ok(mut d) = self.devices.lock() {
            d.flush();
        }
    }
}

/// Makes all of guest RAM read back as zeros.
fn discard_ram(mem: &GuestMem) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for region in mem.iter() {
        // SAFETY: the range is exactly one of guest RAM's private anonymous mappings,
        // owned by `mem`; MADV_DONTNEED makes it read back as zeros without touching (and
        // so committing) every page, as writing zeros would.
        let r = unsafe {
            libc::madvise(
                region.as_ptr().cast(),
                region.len() as usize,
                libc::MADV_DONTNEED,
            )
        };
        if r != 0 {
            log::warn!(
                "MADV_DONTNEED on guest RAM failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        drop(self.halt_watch.take());
        self.run.shutdown();
        self.flush_devices();
    }
}

// Non-stop mode: one vCPU stopped or resumed while the others run on.
impl Vm {
    /// True while vCPU `id` runs (a vCPU the machine lacks does not).
    pub fn is_running(&self, id: usize) -> bool {
        self.run.vcpu(id).is_ok_and(|v| v.running)
    }

    /// Kicks vCPU `id` out of KVM_RUN, leaving the others running; its stop arrives
    /// through [`Vm::poll_event`].
    pub fn kick_vcpu(&self, id: usize) -> Result<(), VmError> {
        self.run.kick_one(id)
    }

    /// Runs vCPU `id` on from a stop the debugger was not told of (see
    /// [`RunControl::resume_unseen`]).
    pub fn resume_unseen(&mut self, id: usize) -> Result<(), VmError> {
        self.run.resume_unseen(id)
    }
}
