//! The VMM core: guest RAM, devices, vCPU threads and the controller that starts, stops and
//! inspects them. It knows nothing about gdb; `src/gdb/` drives it through this API.

pub mod debug;
pub mod devices;
pub mod vcpu;
pub use debug::watch;

use crate::caps::KvmCaps;
use crate::loader::{self, BootInfo};
use crate::memory::{self, GuestMem};
use crate::paging::{self, GuestVirtAddr, PagingRegs};
use debug::{DebugTable, HW_SLOTS, SwBreakpoint};
use devices::Devices;
use kvm_bindings::{
    CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2, kvm_regs, kvm_sregs,
    kvm_userspace_memory_region, kvm_xsave,
};
use kvm_ioctls::{Kvm, VmFd};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;
use vcpu::{CpuSnapshot, KickState, StateChange, VcpuEvent, VcpuReply, VcpuRequest, VcpuStop};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};
use watch::{RamRegion, WatchKind, Watchpoint};

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
    MemorySlot(#[source] kvm_ioctls::Error),
    /// The kernel image could not be loaded.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
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
}

/// Errors inserting breakpoints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BreakpointError {
    /// The address does not translate to guest RAM.
    #[error("address {0:#x} is not mapped to guest RAM")]
    Unmapped(u64),
    /// All four debug-register slots are in use.
    #[error("all {HW_SLOTS} hardware breakpoint slots are in use")]
    NoSlot,
    /// A watchpoint of zero length.
    #[error("a watchpoint needs a length")]
    EmptyWatch,
    /// KVM refused the memory-slot change a watchpoint needs.
    #[error("KVM refused the memory slots for the watchpoint: {0}")]
    Slots(String),
}

/// One vCPU as the controller sees it.
struct VcpuHandle {
    thread: Option<JoinHandle<()>>,
    requests: Sender<VcpuRequest>,
    replies: Receiver<VcpuReply>,
    kick: Arc<KickState>,
    state: CpuSnapshot,
    change: StateChange,
    xsave: Option<Box<kvm_xsave>>,
    running: bool,
    /// Whether the current run is a single step.
    stepping: bool,
    /// The stop that froze this vCPU (triple fault, halt, …); resuming reports it again.
    frozen: Option<VcpuStop>,
    last_stop: Option<VcpuStop>,
}

/// The machine: RAM, devices and vCPUs.
pub struct Vm {
    _kvm: Kvm,
    vm_fd: VmFd,
    caps: KvmCaps,
    mem: Arc<GuestMem>,
    devices: Arc<Mutex<Devices>>,
    debug: Arc<DebugTable>,
    vcpus: Vec<VcpuHandle>,
    events: Receiver<VcpuEvent>,
    /// Stops the controller makes up itself (a frozen vCPU asked to run).
    synthetic: VecDeque<VcpuEvent>,
    notify: Arc<EventFd>,
    boot: BootInfo,
    /// What `reset` goes back to.
    image: Vec<u8>,
    cmdline: String,
    boot_state: CpuSnapshot,
    boot_xsave: Option<Box<kvm_xsave>>,
    phys_mode: bool,
    regions: Vec<RamRegion>,
    /// Software breakpoints held in debug registers because their address was unmapped.
    sw_in_hw: BTreeSet<u64>,
    /// True while an instruction runs with every watched page mapped again.
    all_ram_mapped: bool,
    /// The memory slots registered with KVM now.
    slots: Vec<kvm_userspace_memory_region>,
    /// The CPUID table every vCPU was given (KVM_SET_CPUID2).
    cpuid: CpuId,
}

static SIGNAL_HANDLER: Once = Once::new();

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

/// How long `stop_all` waits for kicked vCPUs without sleeping.
const KICK_SPIN: Duration = Duration::from_micros(300);

/// MSRs that kvm_sregs also holds (SDM Vol. 4, table 2-2).
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;

/// CPUID leaves to fetch from KVM (its documented maximum, KVM_MAX_CPUID_ENTRIES).
const MAX_CPUID_ENTRIES: usize = 256;

impl Vm {
    /// Builds a machine with `memory_size` bytes of RAM, loads `image` and puts vCPU 0 at its
    /// entry point. The vCPUs do not run until [`Vm::resume`].
    pub fn new(
        kvm: Kvm,
        memory_size: u64,
        image: &[u8],
        cmdline: &str,
        serial_out: Box<dyn Write + Send>,
    ) -> Result<Vm, VmError> {
        let caps = KvmCaps::query(&kvm);
        let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
        let mem = memory::create_guest_memory(memory_size)
            .map_err(|e| VmError::Memory(memory_size >> 20, e))?;
        let regions: Vec<RamRegion> = mem
            .iter()
            .map(|r| RamRegion {
                gpa: r.start_addr().0,
                len: r.len(),
                host: r.as_ptr() as u64,
            })
            .collect();
        let slots = watch::slot_layout(&regions, &BTreeMap::new());
        for s in &slots {
            // SAFETY: every slot lies inside a live mmap owned by `mem`, which the Vm keeps
            // (in an Arc) for as long as the VmFd exists, so KVM never sees freed memory.
            unsafe { vm.set_user_memory_region(*s) }.map_err(VmError::MemorySlot)?;
        }
        let boot = loader::load_kernel(&mem, image, cmdline)?;
        let mem = Arc::new(mem);

        SIGNAL_HANDLER.call_once(|| {
            if let Err(e) = register_signal_handler(kick_signal(), vcpu::kick_signal_handler) {
                log::error!("cannot install the vCPU kick signal handler: {e}");
            }
        });

        let notify = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?);
        let (event_tx, events) = mpsc::channel();
        let devices = Arc::new(Mutex::new(Devices::new(serial_out)));
        let debug = Arc::new(DebugTable::default());
        let cpuid = kvm
            .get_supported_cpuid(MAX_CPUID_ENTRIES)
            .map_err(|e| VmError::Vcpu(0, "KVM_GET_SUPPORTED_CPUID", e))?;

        let mut vcpus = Vec::new();
        let id = 0usize;
        let fd = vm
            .create_vcpu(id as u64)
            .map_err(|e| VmError::Vcpu(id, "KVM_CREATE_VCPU", e))?;
        fd.set_cpuid2(&cpuid)
            .map_err(|e| VmError::Vcpu(id, "KVM_SET_CPUID2", e))?;
        let mut sregs = fd
            .get_sregs()
            .map_err(|e| VmError::Vcpu(id, "KVM_GET_SREGS", e))?;
        loader::entry_sregs(&boot, &mut sregs);
        fd.set_sregs(&sregs)
            .map_err(|e| VmError::Vcpu(id, "KVM_SET_SREGS", e))?;
        let regs = loader::entry_regs(&boot);
        fd.set_regs(&regs)
            .map_err(|e| VmError::Vcpu(id, "KVM_SET_REGS", e))?;
        let boot_xsave = fd.get_xsave().ok().map(Box::new);

        let (req_tx, req_rx) = mpsc::channel();
        let (rep_tx, rep_rx) = mpsc::channel();
        let kick = Arc::new(KickState::default());
        let thread = vcpu::VcpuThread {
            id,
            vcpu: fd,
            mem: mem.clone(),
            devices: devices.clone(),
            debug: debug.clone(),
            kick: kick.clone(),
            sync_regs: caps.sync_regs & 3 == 3,
            block_irq: caps.supports_debug_flag(kvm_bindings::KVM_GUESTDBG_BLOCKIRQ),
            requests: req_rx,
            replies: rep_tx,
            events: event_tx.clone(),
            notify: notify.clone(),
            was_idle_hlt: false,
            applied: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || thread.run_loop())
            .map_err(VmError::Thread)?;
        vcpus.push(VcpuHandle {
            thread: Some(handle),
            requests: req_tx,
            replies: rep_rx,
            kick,
            state: CpuSnapshot { regs, sregs },
            change: StateChange::default(),
            xsave: None,
            running: false,
            stepping: false,
            frozen: None,
            last_stop: None,
        });

        Ok(Vm {
            _kvm: kvm,
            vm_fd: vm,
            caps,
            mem,
            devices,
            debug,
            vcpus,
            events,
            synthetic: VecDeque::new(),
            notify,
            boot,
            image: image.to_vec(),
            cmdline: cmdline.to_string(),
            boot_state: CpuSnapshot { regs, sregs },
            boot_xsave,
            phys_mode: false,
            regions,
            all_ram_mapped: false,
            sw_in_hw: BTreeSet::new(),
            slots,
            cpuid,
        })
    }

    /// How the kernel was booted.
    pub fn boot_info(&self) -> &BootInfo {
        &self.boot
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

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMem {
        &self.mem
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// A file descriptor that becomes readable when a vCPU event is ready.
    pub fn event_fd(&self) -> RawFd {
        self.notify.as_raw_fd()
    }

    /// True if any vCPU is running.
    pub fn any_running(&self) -> bool {
        self.vcpus.iter().any(|v| v.running)
    }

    /// The last stop of vCPU `id`.
    pub fn last_stop(&self, id: usize) -> Option<VcpuStop> {
        self.vcpus.get(id).and_then(|v| v.last_stop)
    }

    /// The stop that froze vCPU `id`, if one did.
    pub fn frozen(&self, id: usize) -> Option<VcpuStop> {
        self.vcpus.get(id).and_then(|v| v.frozen)
    }

    /// Resumes the vCPUs: each `(id, step)` pair runs vCPU `id`, one instruction if `step`.
    pub fn resume(&mut self, actions: &[(usize, bool)]) -> Result<(), VmError> {
        for &(id, step) in actions {
            let v = self.vcpus.get_mut(id).ok_or(VmError::NoVcpu(id))?;
            if v.running {
                continue;
            }
            if let Some(stop) = v.frozen {
                // A frozen vCPU does not run again; report the same stop so the debugger
                // shows it instead of waiting forever.
                self.synthetic.push_back(VcpuEvent {
                    id,
                    stop,
                    state: v.state,
                });
                v.running = true;
                let _ = self.notify.write(1);
                continue;
            }
            let change = std::mem::take(&mut v.change);
            let state = (change.regs.is_some() || change.sregs.is_some()).then(|| Box::new(change));
            v.xsave = None;
            v.requests
                .send(VcpuRequest::Run { step, state })
                .map_err(|_| VmError::VcpuGone(id))?;
            v.running = true;
            v.stepping = step;
        }
        Ok(())
    }

    /// Waits up to `max` for a vCPU stop by polling the queue, without sleeping. A single
    /// step comes back within microseconds; sleeping in poll(2) and being woken would add a
    /// context switch (tens of µs here) to every step, the hot path of a debugger.
    pub fn spin_for_event(&mut self, max: Duration) -> bool {
        if !self.synthetic.is_empty() {
            return true;
        }
        let start = std::time::Instant::now();
        loop {
            if let Ok(ev) = self.events.try_recv() {
                self.synthetic.push_back(ev);
                return true;
            }
            if start.elapsed() >= max {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Takes the next vCPU stop if one is ready, without blocking.
    pub fn poll_event(&mut self) -> Option<VcpuEvent> {
        let _ = self.notify.read();
        loop {
            let mut ev = self
                .synthetic
                .pop_front()
                .or_else(|| self.events.try_recv().ok())?;
            if ev.stop == VcpuStop::NeedsRam {
                self.record(&mut ev);
                match self.step_with_ram_mapped(ev.id) {
                    // The vCPU was continuing: let it go on; a later event reports it.
                    Ok(next) if next.stop == VcpuStop::Step && !self.vcpus[ev.id].stepping => {
                        if let Err(e) = self.resume(&[(ev.id, false)]) {
                            log::error!("cannot resume vCPU {}: {e}", ev.id);
                        }
                        continue;
                    }
                    Ok(next) => ev = next,
                    Err(e) => {
                        log::error!("cannot step through a watched page: {e}");
                        ev.stop = VcpuStop::InternalError {
                            suberror: kvm_bindings::KVM_INTERNAL_ERROR_EMULATION,
                        };
                    }
                }
            }
            self.record(&mut ev);
            return Some(ev);
        }
    }

    /// Runs one instruction of vCPU `id` with all of guest RAM back in its memory slots,
    /// for an instruction KVM could not run against a watched page. Reads that instruction
    /// makes of watched bytes are not seen; writes are, by comparing the watched bytes.
    fn step_with_ram_mapped(&mut self, id: usize) -> Result<VcpuEvent, VmError> {
        let watches = self.debug.with(|b| b.watch.clone());
        let before: Vec<Vec<u8>> = watches.iter().map(|w| self.watched_bytes(w)).collect();
        self.all_ram_mapped = true;
        let relayout = |vm: &mut Vm| {
            vm.relayout_slots().map_err(|e| {
                VcpuIoctl(
                    id,
                    "KVM_SET_USER_MEMORY_REGION",
                    std::io::Error::other(e.to_string()),
                )
            })
        };
        use VmError::VcpuIoctl;
        relayout(self)?;
        let v = &mut self.vcpus[id];
        let sent = v.requests.send(VcpuRequest::Run {
            step: true,
            state: None,
        });
        let result = match sent {
            Err(_) => Err(VmError::VcpuGone(id)),
            Ok(()) => loop {
                match self.events.recv() {
                    Ok(ev) if ev.id == id => break Ok(ev),
                    Ok(ev) => self.synthetic.push_back(ev),
                    Err(_) => break Err(VmError::VcpuGone(id)),
                }
            },
        };
        self.all_ram_mapped = false;
        relayout(self)?;
        let mut ev = result?;
        if ev.stop == VcpuStop::NeedsRam {
            // Still failing with all RAM mapped: a genuine emulation failure.
            ev.stop = VcpuStop::InternalError {
                suberror: kvm_bindings::KVM_INTERNAL_ERROR_EMULATION,
            };
        } else if ev.stop == VcpuStop::Step {
            for (w, old) in watches.iter().zip(&before) {
                let new = self.watched_bytes(w);
                if w.kind != WatchKind::Read {
                    if let Some(i) = new.iter().zip(old).position(|(a, b)| a != b) {
                        ev.stop = VcpuStop::Watch {
                            kind: w.kind,
                            addr: w.addr + i as u64,
                        };
                        break;
                    }
                }
            }
        }
        Ok(ev)
    }

    /// The current contents of a watchpoint's range.
    fn watched_bytes(&self, w: &Watchpoint) -> Vec<u8> {
        let mut out = Vec::with_capacity(w.len as usize);
        for &(gpa, len, _) in &w.pieces {
            let mut buf = vec![0u8; len as usize];
            let _ = self.mem.read_slice(&mut buf, gpa);
            out.extend_from_slice(&buf);
        }
        out
    }

    fn record(&mut self, ev: &mut VcpuEvent) {
        // A software breakpoint that lives in a debug register is still a software
        // breakpoint to the debugger.
        if let VcpuStop::HwBreakpoint { addr, .. } = ev.stop {
            if self.sw_in_hw.contains(&addr) {
                ev.stop = VcpuStop::SwBreakpoint(addr);
            }
        }
        if let Some(v) = self.vcpus.get_mut(ev.id) {
            v.running = false;
            v.state = ev.state;
            v.last_stop = Some(ev.stop);
            if ev.stop.is_fatal() {
                v.frozen = Some(ev.stop);
            }
        }
    }

    /// Kicks every running vCPU out of KVM_RUN and waits until all have stopped. Returns the
    /// stops that arrived, in order (a vCPU may have stopped for its own reason first).
    pub fn stop_all(&mut self) -> Vec<VcpuEvent> {
        // The usual case on the stop path (one vCPU, already stopped): nothing to drain or
        // kick, and no eventfd reads to waste.
        if !self.any_running() && self.synthetic.is_empty() {
            return Vec::new();
        }
        let mut got = Vec::new();
        while let Some(ev) = self.poll_event() {
            got.push(ev);
        }
        for v in &self.vcpus {
            if v.running {
                kick(v);
            }
        }
        while self.any_running() {
            if let Some(mut ev) = self.synthetic.pop_front() {
                self.record(&mut ev);
                got.push(ev);
                continue;
            }
            // A kick lands in 80–120 µs on PVM (KVM-FACTS.md): wait that long without
            // sleeping, so the stop is not delayed further by a wake-up.
            if self.spin_for_event(KICK_SPIN) {
                continue;
            }
            match self.events.recv_timeout(Duration::from_millis(500)) {
                Ok(mut ev) => {
                    // Stopping anyway: the fetch is retried (and handled) on the next run.
                    if ev.stop == VcpuStop::NeedsRam {
                        ev.stop = VcpuStop::Kicked;
                    }
                    self.record(&mut ev);
                    got.push(ev);
                }
                Err(RecvTimeoutError::Timeout) => {
                    // A kick can be lost only in theory (the flag is rechecked before every
                    // KVM_RUN); kick again rather than wait forever.
                    for v in &self.vcpus {
                        if v.running {
                            kick(v);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    for v in &mut self.vcpus {
                        v.running = false;
                    }
                }
            }
        }
        let _ = self.notify.read();
        got
    }

    fn stopped(&self, id: usize) -> Result<&VcpuHandle, VmError> {
        let v = self.vcpus.get(id).ok_or(VmError::NoVcpu(id))?;
        if v.running {
            return Err(VmError::Running(id));
        }
        Ok(v)
    }

    /// The registers of a stopped vCPU.
    pub fn state(&self, id: usize) -> Result<CpuSnapshot, VmError> {
        let v = self.stopped(id)?;
        Ok(CpuSnapshot {
            regs: v.change.regs.unwrap_or(v.state.regs),
            sregs: v.change.sregs.unwrap_or(v.state.sregs),
        })
    }

    /// Sets the general-purpose registers of a stopped vCPU (applied when it next runs).
    pub fn set_regs(&mut self, id: usize, regs: kvm_regs) -> Result<(), VmError> {
        self.stopped(id)?;
        let v = &mut self.vcpus[id];
        if regs != v.state.regs || v.change.regs.is_some() {
            v.change.regs = Some(regs);
        }
        Ok(())
    }

    /// Sets the system registers of a stopped vCPU (applied when it next runs).
    pub fn set_sregs(&mut self, id: usize, sregs: kvm_sregs) -> Result<(), VmError> {
        self.stopped(id)?;
        let v = &mut self.vcpus[id];
        if sregs != v.state.sregs || v.change.sregs.is_some() {
            v.change.sregs = Some(sregs);
        }
        Ok(())
    }

    /// The FPU/SSE/AVX state of a stopped vCPU (cached until it runs again).
    pub fn xsave(&mut self, id: usize) -> Result<Box<kvm_xsave>, VmError> {
        self.xsave_ref(id).map(copy_xsave)
    }

    fn xsave_ref(&mut self, id: usize) -> Result<&kvm_xsave, VmError> {
        self.stopped(id)?;
        if self.vcpus[id].xsave.is_none() {
            match self.request(id, VcpuRequest::GetXsave)? {
                VcpuReply::Xsave(Ok(x)) => self.vcpus[id].xsave = Some(x),
                VcpuReply::Xsave(Err(e)) => return Err(ioctl_error(id, "KVM_GET_XSAVE", e)),
                _ => return Err(VmError::VcpuGone(id)),
            }
        }
        self.vcpus[id].xsave.as_deref().ok_or(VmError::VcpuGone(id))
    }

    /// Writes the FPU/SSE/AVX state of a stopped vCPU.
    pub fn set_xsave(&mut self, id: usize, xsave: &kvm_xsave) -> Result<(), VmError> {
        self.stopped(id)?;
        if self.vcpus[id]
            .xsave
            .as_deref()
            .is_some_and(|x| x.region == xsave.region)
        {
            return Ok(());
        }
        match self.request(id, VcpuRequest::SetXsave(copy_xsave(xsave)))? {
            VcpuReply::Done(Ok(())) => {
                self.vcpus[id].xsave = Some(copy_xsave(xsave));
                Ok(())
            }
            VcpuReply::Done(Err(e)) => Err(ioctl_error(id, "KVM_SET_XSAVE", e)),
            _ => Err(VmError::VcpuGone(id)),
        }
    }

    fn request(&mut self, id: usize, req: VcpuRequest) -> Result<VcpuReply, VmError> {
        self.stopped(id)?;
        let v = &self.vcpus[id];
        v.requests.send(req).map_err(|_| VmError::VcpuGone(id))?;
        v.replies.recv().map_err(|_| VmError::VcpuGone(id))
    }

    /// Reads MSRs of a stopped vCPU; MSRs KVM cannot read are left out of the result.
    pub fn read_msrs(&mut self, id: usize, indices: &[u32]) -> Result<Vec<(u32, u64)>, VmError> {
        match self.request(id, VcpuRequest::GetMsrs(indices.to_vec()))? {
            VcpuReply::Msrs(r) => r.map_err(|e| ioctl_error(id, "KVM_GET_MSRS", e)),
            _ => Err(VmError::VcpuGone(id)),
        }
    }

    /// Reads MSRs of a stopped vCPU and, in the same hand-off to its thread, its XSAVE area
    /// into the cache [`Vm::xsave`] serves from (one thread wake-up instead of two).
    pub fn read_msrs_and_xsave(
        &mut self,
        id: usize,
        indices: &[u32],
    ) -> Result<Vec<(u32, u64)>, VmError> {
        if self.stopped(id)?.xsave.is_some() {
            return self.read_msrs(id, indices);
        }
        match self.request(id, VcpuRequest::GetXsaveAndMsrs(indices.to_vec()))? {
            VcpuReply::XsaveAndMsrs(x, m) => {
                if let Ok(x) = x {
                    self.vcpus[id].xsave = Some(x);
                }
                m.map_err(|e| ioctl_error(id, "KVM_GET_MSRS", e))
            }
            _ => Err(VmError::VcpuGone(id)),
        }
    }

    /// Writes one MSR of a stopped vCPU.
    pub fn write_msr(&mut self, id: usize, index: u32, value: u64) -> Result<(), VmError> {
        match self.request(id, VcpuRequest::SetMsr(index, value))? {
            VcpuReply::Done(r) => r.map_err(|e| ioctl_error(id, "KVM_SET_MSRS", e))?,
            _ => return Err(VmError::VcpuGone(id)),
        }
        // MSRs that kvm_sregs mirrors: keep our copy (and any pending sregs write) in step,
        // or the next run would put the old value back.
        let v = &mut self.vcpus[id];
        for sregs in std::iter::once(&mut v.state.sregs).chain(v.change.sregs.as_mut()) {
            match index {
                MSR_EFER => sregs.efer = value,
                MSR_FS_BASE => sregs.fs.base = value,
                MSR_GS_BASE => sregs.gs.base = value,
                MSR_APIC_BASE => sregs.apic_base = value,
                _ => {}
            }
        }
        Ok(())
    }

    /// The debug registers of a stopped vCPU.
    pub fn debug_regs(&mut self, id: usize) -> Result<kvm_bindings::kvm_debugregs, VmError> {
        match self.request(id, VcpuRequest::GetDebugRegs)? {
            VcpuReply::DebugRegs(r) => r.map_err(|e| ioctl_error(id, "KVM_GET_DEBUGREGS", e)),
            _ => Err(VmError::VcpuGone(id)),
        }
    }

    /// Pending exception, interrupt and NMI state of a stopped vCPU.
    pub fn vcpu_events(&mut self, id: usize) -> Result<kvm_bindings::kvm_vcpu_events, VmError> {
        match self.request(id, VcpuRequest::GetEvents)? {
            VcpuReply::Events(r) => r.map_err(|e| ioctl_error(id, "KVM_GET_VCPU_EVENTS", e)),
            _ => Err(VmError::VcpuGone(id)),
        }
    }

    /// The paging registers of vCPU `id` (its last known state).
    pub fn paging_regs(&self, id: usize) -> PagingRegs {
        let s = self
            .vcpus
            .get(id)
            .map(|v| v.change.sregs.unwrap_or(v.state.sregs))
            .unwrap_or_default();
        PagingRegs {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }
    }

    /// Chooses whether single steps keep interrupts blocked (KVM_GUESTDBG_BLOCKIRQ where
    /// KVM offers it). On by default.
    pub fn set_step_masks_irq(&self, on: bool) {
        self.debug.set_step_masks_irq(on);
    }

    /// Whether single steps keep interrupts blocked.
    pub fn step_masks_irq(&self) -> bool {
        self.debug.step_masks_irq()
    }

    /// Chooses how debugger addresses are read: as virtual addresses through vCPU page
    /// tables (the default), or as guest-physical addresses (`phys` on).
    pub fn set_phys_mode(&mut self, phys: bool) {
        self.phys_mode = phys;
    }

    /// True when debugger addresses are guest-physical.
    pub fn phys_mode(&self) -> bool {
        self.phys_mode
    }

    /// The guest-physical address behind debugger address `addr` and how many bytes from it
    /// lie in the same page, at most `want`; None if nothing is mapped there.
    fn chunk(&self, regs: &PagingRegs, addr: u64, want: usize) -> Option<(GuestAddress, usize)> {
        let (gpa, page_size) = if self.phys_mode {
            (GuestAddress(addr), 4096)
        } else {
            paging::translate_fast(&*self.mem, regs, GuestVirtAddr(addr)).ok()?
        };
        let in_page = page_size - (addr & (page_size - 1));
        Some((gpa, in_page.min(want as u64) as usize))
    }

    /// Reads guest memory at debugger address `addr` (virtual as vCPU `id` sees it, or
    /// physical in phys mode) into `buf`. Returns how many bytes were readable: a read stops
    /// at the first unmapped page. Our planted breakpoint bytes read as the original bytes.
    pub fn read_virt(&self, id: usize, addr: u64, buf: &mut [u8]) -> usize {
        let regs = self.paging_regs(id);
        let mut done = 0;
        while done < buf.len() {
            let Some((gpa, n)) =
                self.chunk(&regs, addr.wrapping_add(done as u64), buf.len() - done)
            else {
                break;
            };
            let chunk = &mut buf[done..done + n];
            if self.mem.read_slice(chunk, gpa).is_err() {
                break;
            }
            self.debug.with(|b| {
                for bp in b.sw.values() {
                    if bp.gpa >= gpa && bp.gpa.0 < gpa.0 + n as u64 {
                        chunk[(bp.gpa.0 - gpa.0) as usize] = bp.orig;
                    }
                }
            });
            done += n;
        }
        done
    }

    /// Writes guest memory at debugger address `addr` (as for [`Vm::read_virt`]). Returns
    /// how many bytes were written. Bytes under our breakpoints update the saved original
    /// instead, so the breakpoint stays planted.
    pub fn write_virt(&mut self, id: usize, addr: u64, data: &[u8]) -> usize {
        let regs = self.paging_regs(id);
        let mut done = 0;
        while done < data.len() {
            let Some((gpa, n)) =
                self.chunk(&regs, addr.wrapping_add(done as u64), data.len() - done)
            else {
                break;
            };
            let mut chunk = data[done..done + n].to_vec();
            let end = gpa.0 + n as u64;
            let covers_bp = self
                .debug
                .with(|b| b.sw.values().any(|bp| bp.gpa >= gpa && bp.gpa.0 < end));
            if covers_bp {
                self.debug.update(|b| {
                    for bp in b.sw.values_mut() {
                        if bp.gpa >= gpa && bp.gpa.0 < end {
                            let i = (bp.gpa.0 - gpa.0) as usize;
                            bp.orig = chunk[i];
                            chunk[i] = bp.insn;
                        }
                    }
                });
            }
            if self.mem.write_slice(&chunk, gpa).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    /// Plants a software breakpoint at linear address `addr`, translated as vCPU `id` sees it.
    pub fn add_sw_breakpoint(&mut self, id: usize, addr: u64) -> Result<(), BreakpointError> {
        if self.debug.with(|b| b.sw.contains_key(&addr)) {
            return Ok(());
        }
        let regs = self.paging_regs(id);
        let Ok((gpa, _)) = paging::translate_fast(&*self.mem, &regs, GuestVirtAddr(addr)) else {
            // Not mapped yet (say, a higher-half kernel before it loads its page tables):
            // there is no byte to patch, but a debug-register breakpoint watches the linear
            // address whatever the mapping becomes.
            self.add_hw_breakpoint(addr)
                .map_err(|_| BreakpointError::Unmapped(addr))?;
            self.sw_in_hw.insert(addr);
            return Ok(());
        };
        let orig: u8 = self
            .mem
            .read_obj(gpa)
            .map_err(|_| BreakpointError::Unmapped(addr))?;
        let insn = self.debug.sw_insn();
        self.mem
            .write_obj(insn, gpa)
            .map_err(|_| BreakpointError::Unmapped(addr))?;
        self.debug.update(|b| {
            b.sw.insert(addr, SwBreakpoint { gpa, orig, insn });
            b.sw_sticky = true;
        });
        Ok(())
    }

    /// Removes the software breakpoint at `addr`; false if there was none.
    pub fn remove_sw_breakpoint(&mut self, addr: u64) -> bool {
        if self.sw_in_hw.remove(&addr) {
            return self.remove_hw_breakpoint(addr);
        }
        let Some(bp) = self.debug.update(|b| b.sw.remove(&addr)) else {
            return false;
        };
        unplant(&self.mem, &bp);
        true
    }

    /// Arms a debug-register execute breakpoint at linear address `addr`.
    pub fn add_hw_breakpoint(&mut self, addr: u64) -> Result<(), BreakpointError> {
        self.debug.update(|b| {
            if b.hw_slot_at(addr).is_some() {
                return Ok(());
            }
            let slot =
                b.hw.iter()
                    .position(Option::is_none)
                    .ok_or(BreakpointError::NoSlot)?;
            b.hw[slot] = Some(addr);
            Ok(())
        })
    }

    /// Disarms the execute breakpoint at `addr`; false if there was none.
    pub fn remove_hw_breakpoint(&mut self, addr: u64) -> bool {
        self.debug.update(|b| match b.hw_slot_at(addr) {
            Some(slot) => {
                b.hw[slot] = None;
                true
            }
            None => false,
        })
    }

    /// Removes every breakpoint and watchpoint (when a debugger goes away).
    pub fn clear_breakpoints(&mut self) {
        self.sw_in_hw.clear();
        let old = self.debug.update(std::mem::take);
        for bp in old.sw.values() {
            unplant(&self.mem, bp);
        }
        if !old.watch.is_empty() {
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
        if len == 0 {
            return Err(BreakpointError::EmptyWatch);
        }
        let regs = self.paging_regs(id);
        let mut pieces: Vec<(GuestAddress, u64, u64)> = Vec::new();
        let mut done = 0u64;
        while done < len {
            let linear = addr.wrapping_add(done);
            let want = (len - done).min(usize::MAX as u64) as usize;
            let (gpa, n) = self
                .chunk(&regs, linear, want)
                .filter(|(gpa, n)| {
                    self.mem.address_in_range(*gpa)
                        && self
                            .mem
                            .address_in_range(GuestAddress(gpa.0 + *n as u64 - 1))
                })
                .ok_or(BreakpointError::Unmapped(linear))?;
            match pieces.last_mut() {
                Some(last) if last.0.0 + last.1 == gpa.0 => last.1 += n as u64,
                _ => pieces.push((gpa, n as u64, linear)),
            }
            done += n as u64;
        }
        let w = Watchpoint {
            addr,
            len,
            kind,
            pieces,
        };
        self.debug.update(|b| b.watch.push(w.clone()));
        if let Err(e) = self.relayout_slots() {
            self.debug.update(|b| b.watch.retain(|x| *x != w));
            let _ = self.relayout_slots();
            return Err(e);
        }
        Ok(())
    }

    /// Removes a watchpoint; false if there was none.
    pub fn remove_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> bool {
        let removed = self.debug.update(|b| {
            match b
                .watch
                .iter()
                .position(|w| w.addr == addr && w.len == len && w.kind == kind)
            {
                Some(i) => {
                    b.watch.remove(i);
                    true
                }
                None => false,
            }
        });
        if removed {
            if let Err(e) = self.relayout_slots() {
                log::error!("cannot update memory slots after removing a watchpoint: {e}");
            }
        }
        removed
    }

    /// Re-registers guest RAM with KVM so that watched pages are read-only or absent. Only
    /// while every vCPU is stopped: a vCPU must never run against a half-changed layout.
    fn relayout_slots(&mut self) -> Result<(), BreakpointError> {
        let watches = self.debug.with(|b| b.watch.clone());
        let modes = if self.all_ram_mapped {
            BTreeMap::new()
        } else {
            watch::page_modes(&watches, self.caps.readonly_mem)
        };
        let want = watch::slot_layout(&self.regions, &modes);
        let key = |s: &kvm_userspace_memory_region| {
            (s.guest_phys_addr, s.memory_size, s.userspace_addr, s.flags)
        };
        if want.iter().map(key).eq(self.slots.iter().map(key)) {
            return Ok(());
        }
        // Slots may not overlap, so remove the old layout before adding the new one.
        for s in &self.slots {
            let gone = kvm_userspace_memory_region {
                memory_size: 0,
                ..*s
            };
            // SAFETY: deleting a slot never makes KVM access host memory.
            unsafe { self.vm_fd.set_user_memory_region(gone) }
                .map_err(|e| BreakpointError::Slots(e.to_string()))?;
        }
        self.slots.clear();
        for s in &want {
            // SAFETY: every slot lies inside guest RAM's live mmap, which outlives the VmFd.
            unsafe { self.vm_fd.set_user_memory_region(*s) }
                .map_err(|e| BreakpointError::Slots(e.to_string()))?;
            self.slots.push(*s);
        }
        Ok(())
    }

    /// Puts the machine back into its boot entry state: RAM cleared and the kernel reloaded,
    /// vCPU registers as at entry, frozen state forgotten. Breakpoints are kept (re-planted
    /// over the reloaded code). All vCPUs must be stopped.
    pub fn reset(&mut self) -> Result<(), VmError> {
        if let Some(id) = self.vcpus.iter().position(|v| v.running) {
            return Err(VmError::Running(id));
        }
        for region in self.mem.iter() {
            // SAFETY: the range is exactly one of guest RAM's private anonymous mappings,
            // owned by `self.mem`; MADV_DONTNEED makes it read back as zeros without
            // touching (and so committing) every page, as writing zeros would.
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
        loader::load_kernel(&self.mem, &self.image, &self.cmdline)?;
        self.debug.update(|b| {
            for bp in b.sw.values_mut() {
                bp.orig = self.mem.read_obj(bp.gpa).unwrap_or(0);
                let _ = self.mem.write_obj(bp.insn, bp.gpa);
            }
        });
        let boot_state = self.boot_state;
        let boot_xsave = self.boot_xsave.as_deref().map(copy_xsave);
        for id in 0..self.vcpus.len() {
            let v = &mut self.vcpus[id];
            v.frozen = None;
            v.last_stop = None;
            v.change = StateChange {
                regs: Some(boot_state.regs),
                sregs: Some(boot_state.sregs),
            };
            if let Some(x) = &boot_xsave {
                self.set_xsave(id, x)?;
            }
        }
        Ok(())
    }

    /// Flushes device output (the serial port).
    pub fn flush_devices(&self) {
        if let Ok(mut d) = self.devices.lock() {
            d.flush();
        }
    }
}

fn ioctl_error(id: usize, what: &'static str, errno: i32) -> VmError {
    VmError::VcpuIoctl(id, what, std::io::Error::from_raw_os_error(errno))
}

/// A copy of an XSAVE area (the bindings type is not `Clone`).
fn copy_xsave(x: &kvm_xsave) -> Box<kvm_xsave> {
    Box::new(kvm_xsave {
        region: x.region,
        ..Default::default()
    })
}

/// Restores the original byte under a breakpoint, unless the guest has overwritten the int3.
fn unplant(mem: &GuestMem, bp: &SwBreakpoint) {
    let byte: u8 = mem.read_obj(bp.gpa).unwrap_or(bp.orig);
    if byte == bp.insn {
        let _ = mem.write_obj(bp.orig, bp.gpa);
    }
}

fn kick(v: &VcpuHandle) {
    v.kick.request();
    if let Some(t) = &v.thread {
        let _ = t.kill(kick_signal());
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        for v in &self.vcpus {
            let _ = v.requests.send(VcpuRequest::Quit);
            if v.running {
                kick(v);
            }
        }
        for v in &mut self.vcpus {
            if let Some(t) = v.thread.take() {
                let _ = t.join();
            }
        }
        self.flush_devices();
    }
}

/// Reads a guest-physical range, for tests and tools.
pub fn read_phys(mem: &GuestMem, gpa: u64, buf: &mut [u8]) -> bool {
    mem.read_slice(buf, GuestAddress(gpa)).is_ok()
}
