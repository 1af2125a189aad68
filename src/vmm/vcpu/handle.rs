//! The controller's handle on one vCPU thread: spawning it, its per-stop state cache
//! (registers, pending register writes, XSAVE), and typed requests. Each request is a
//! function run on the vCPU's own thread, which sends its typed result back on a reply
//! channel of its own, so no reply can be mistaken for another's.

use super::kick::{self, KickState};
use super::{StateChange, ThreadEvent, VcpuRequest, VcpuThread};
use crate::memory::GuestMem;
use crate::vmm::VmError;
use crate::vmm::debug::table::DebugTable;
use crate::vmm::devices::Devices;
use crate::vmm::stop::{CpuSnapshot, VcpuStop};
use crate::x86::msr;
use crate::x86::paging::PagingRegs;
use kvm_bindings::{
    CpuId, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, kvm_lapic_state, kvm_mp_state,
    kvm_regs, kvm_sregs, kvm_xsave,
};
use kvm_ioctls::{VcpuFd, VmFd};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

/// A vCPU that runs (KVM API 4.38).
const RUNNABLE: kvm_mp_state = kvm_mp_state {
    mp_state: KVM_MP_STATE_RUNNABLE,
};

/// An application processor after INIT, waiting for a startup IPI (KVM API 4.38). KVM_RUN
/// blocks in the kernel until the guest's SIPI starts it in real mode at the vector's page;
/// a signal (a kick) ends the wait with EINTR.
const WAIT_FOR_SIPI: kvm_mp_state = kvm_mp_state {
    mp_state: KVM_MP_STATE_INIT_RECEIVED,
};

/// What every vCPU thread of a machine shares.
pub struct VcpuShared<'a> {
    /// The VM to create vCPUs in.
    pub vm: &'a VmFd,
    /// The CPUID table each vCPU gets (KVM_SET_CPUID2).
    pub cpuid: &'a CpuId,
    /// Guest RAM.
    pub mem: &'a Arc<GuestMem>,
    /// The machine's devices.
    pub devices: &'a Arc<Mutex<Devices>>,
    /// The debug-state table.
    pub debug: &'a Arc<DebugTable>,
    /// Where stops go.
    pub events: &'a Sender<ThreadEvent>,
    /// Written after each stop.
    pub notify: &'a Arc<EventFd>,
    /// Whether kvm_run carries regs and sregs.
    pub sync_regs: bool,
    /// Whether KVM_GUESTDBG_BLOCKIRQ may be used.
    pub block_irq: bool,
    /// Whether the VM has an in-kernel irqchip (so each vCPU has an in-kernel local APIC).
    pub irqchip: bool,
}

/// One vCPU as the controller sees it.
pub struct VcpuHandle {
    id: usize,
    thread: Option<JoinHandle<()>>,
    requests: Sender<VcpuRequest>,
    kick: Arc<KickState>,
    /// The registers at the last stop.
    pub state: CpuSnapshot,
    /// Register writes not yet handed to the vCPU.
    pub change: StateChange,
    /// Per-stop cache: the XSAVE area, once read.
    xsave: Option<Box<kvm_xsave>>,
    /// Per-stop cache: MSRs read or written since the stop (None: KVM cannot read it).
    msrs: BTreeMap<u32, Option<u64>>,
    /// Whether the vCPU is running (a run request is out).
    pub running: bool,
    /// Whether the current run is a single step.
    pub stepping: bool,
    /// The `step_over` the current run was started with.
    pub step_over: Option<u64>,
    /// The stop that froze this vCPU (triple fault, halt, …); resuming reports it again.
    pub frozen: Option<VcpuStop>,
    /// The last stop reported.
    pub last_stop: Option<VcpuStop>,
    /// The linear address of the instruction the debugger last saw this vCPU stopped at
    /// (its entry point before its first run); None once it ran somewhere the debugger
    /// never saw it stop for a reason of its own (see [`VcpuHandle::note_stop`]).
    reported_pc: Option<u64>,
    /// Its in-kernel local APIC at creation, which a machine reset puts back.
    boot_lapic: Option<kvm_lapic_state>,
    /// Whether it starts waiting for INIT-SIPI (an application processor) rather than at
    /// the boot plan's entry; a machine reset puts it back so.
    waits_for_sipi: bool,
}

/// The multiprocessing state a vCPU starts in.
fn mp_state(waits_for_sipi: bool) -> kvm_mp_state {
    if waits_for_sipi {
        WAIT_FOR_SIPI
    } else {
        RUNNABLE
    }
}

/// What [`VcpuHandle::spawn`] returns besides the handle: the vCPU's entry state.
pub struct Spawned {
    /// The handle.
    pub handle: VcpuHandle,
    /// The registers the vCPU starts with.
    pub entry: CpuSnapshot,
    /// Its XSAVE area at start, if KVM gave one.
    pub xsave: Option<Box<kvm_xsave>>,
}

impl VcpuHandle {
    /// Creates vCPU `id` and starts its thread; it does not run until asked to. With an
    /// `entry`, the vCPU is put in the state it makes of KVM's reset system registers and
    /// starts there; without one it is an application processor waiting for the guest's
    /// INIT-SIPI-SIPI in KVM's reset state, as on real hardware, which needs the in-kernel
    /// local APIC.
    pub fn spawn(
        id: usize,
        shared: &VcpuShared<'_>,
        entry: Option<&dyn Fn(kvm_sregs) -> CpuSnapshot>,
    ) -> Result<Spawned, VmError> {
        if entry.is_none() && !shared.irqchip {
            return Err(VmError::NoSipi(id));
        }
        let fd = shared
            .vm
            .create_vcpu(id as u64)
            .map_err(|e| VmError::Vcpu(id, "KVM_CREATE_VCPU", e))?;
        fd.set_cpuid2(&crate::vmm::cpuid::for_vcpu(shared.cpuid, id))
            .map_err(|e| VmError::Vcpu(id, "KVM_SET_CPUID2", e))?;
        let reset = fd
            .get_sregs()
            .map_err(|e| VmError::Vcpu(id, "KVM_GET_SREGS", e))?;
        let state = match entry {
            Some(entry) => {
                let state = entry(reset);
                fd.set_sregs(&state.sregs)
                    .map_err(|e| VmError::Vcpu(id, "KVM_SET_SREGS", e))?;
                fd.set_regs(&state.regs)
                    .map_err(|e| VmError::Vcpu(id, "KVM_SET_REGS", e))?;
                state
            }
            None => CpuSnapshot {
                regs: fd
                    .get_regs()
                    .map_err(|e| VmError::Vcpu(id, "KVM_GET_REGS", e))?,
                sregs: reset,
            },
        };
        let waits_for_sipi = entry.is_none();
        let xsave = fd.get_xsave().ok().map(Box::new);
        let boot_lapic = if shared.irqchip {
            // With an in-kernel irqchip KVM makes every vCPU but the boot one (KVM_SET_
            // BOOT_CPU_ID, vCPU 0 by default) KVM_MP_STATE_UNINITIALIZED (KVM API 4.38):
            // its first KVM_RUN waits for INIT and then returns EAGAIN. Say what each vCPU
            // is outright instead: one the plan starts is runnable, any other has had its
            // INIT and waits for the SIPI, so the guest's INIT-SIPI-SIPI starts it.
            fd.set_mp_state(mp_state(waits_for_sipi))
                .map_err(|e| VmError::Vcpu(id, "KVM_SET_MP_STATE", e))?;
            Some(
                fd.get_lapic()
                    .map_err(|e| VmError::Vcpu(id, "KVM_GET_LAPIC", e))?,
            )
        } else {
            None
        };

        let (req_tx, req_rx) = mpsc::channel();
        let kick = Arc::new(KickState::default());
        let thread = VcpuThread {
            id,
            vcpu: fd,
            mem: shared.mem.clone(),
            devices: shared.devices.clone(),
            debug: shared.debug.clone(),
            kick: kick.clone(),
            sync_regs: shared.sync_regs,
            block_irq: shared.block_irq,
            requests: req_rx,
            events: shared.events.clone(),
            notify: shared.notify.clone(),
            was_idle_hlt: false,
            applied: None,
            step_to_handler: None,
            bp_delivery: false,
            step_catches: Default::default(),
            step_from: Default::default(),
        };
        let join = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || thread.run_loop())
            .map_err(VmError::Thread)?;
        let handle = VcpuHandle {
            id,
            thread: Some(join),
            requests: req_tx,
            kick,
            state,
            change: StateChange::default(),
            xsave: None,
            msrs: BTreeMap::new(),
            running: false,
            stepping: false,
            step_over: None,
            frozen: None,
            last_stop: None,
            reported_pc: Some(state.linear_rip()),
            boot_lapic,
            waits_for_sipi,
        };
        Ok(Spawned {
            handle,
            entry: state,
            xsave,
        })
    }

    /// Hands the vCPU a run (one instruction if `step`), with the register writes made
    /// since its last stop when `with_changes`. `step_over` as for [`VcpuRequest::Run`]:
    /// [`VcpuHandle::resume_point`] for a debugger's resume.
    pub fn start(
        &mut self,
        step: bool,
        with_changes: bool,
        step_over: Option<u64>,
    ) -> Result<(), VmError> {
        let state = if with_changes {
            let change = std::mem::take(&mut self.change);
            (change.regs.is_some() || change.sregs.is_some()).then(|| Box::new(change))
        } else {
            None
        };
        self.forget_stop_cache();
        self.requests
            .send(VcpuRequest::Run {
                step,
                state,
                step_over,
            })
            .map_err(|_| VmError::VcpuGone(self.id))?;
        self.running = true;
        self.stepping = step;
        self.step_over = step_over;
        Ok(())
    }

    /// Where a debugger's resume starts if that is where the debugger saw the vCPU stop
    /// (RIP not moved since): a breakpoint there is the one it resumes from. None when the
    /// debugger moved RIP, so a breakpoint at the new RIP is reported, not skipped.
    pub fn resume_point(&self) -> Option<u64> {
        let pc = crate::vmm::stop::linear_pc(
            &self.change.regs.unwrap_or(self.state.regs),
            &self.change.sregs.unwrap_or(self.state.sregs),
        );
        (Some(pc) == self.reported_pc).then_some(pc)
    }

    /// Forgets the per-stop cache (XSAVE area and MSRs): the vCPU's state changed under it.
    pub fn forget_stop_cache(&mut self) {
        self.xsave = None;
        self.msrs.clear();
    }

    /// Records the stop of the run in progress, as the debugger sees it.
    ///
    /// A kick that caught the vCPU somewhere new leaves it with no resume point: with many
    /// vCPUs at one breakpoint, a vCPU kicked at the breakpoint's address (its int3 not yet
    /// run) must hit it when it runs again, not step over a hit no one saw (measured: the
    /// smp-together test lost such hits). A kick before the vCPU moved keeps the point it
    /// was resumed from, so a step over the breakpoint it started at still steps over it.
    pub fn note_stop(&mut self, stop: VcpuStop, state: CpuSnapshot) {
        self.running = false;
        self.state = state;
        let pc = state.linear_rip();
        if stop != VcpuStop::Kicked || self.reported_pc != Some(pc) {
            self.reported_pc = (stop != VcpuStop::Kicked).then_some(pc);
        }
        self.last_stop = Some(stop);
        if stop.freezes() {
            self.frozen = Some(stop);
        }
    }

    /// Records that the machine was reset to `boot`: the debugger sees the vCPU stopped at
    /// its entry point again.
    pub fn note_reset(&mut self, boot: &CpuSnapshot) {
        self.reported_pc = Some(boot.linear_rip());
    }

    /// Puts the vCPU's interrupt state back as at power-on, for a machine reset: its
    /// local APIC as created, runnable (out of a `hlt`) or, for an application processor,
    /// waiting for SIPI again, and no exception, interrupt or NMI in flight.
    pub fn reset_interrupt_state(&self) -> Result<(), VmError> {
        let lapic = self.boot_lapic;
        let id = self.id;
        let mp = mp_state(self.waits_for_sipi);
        self.call(move |fd| {
            if let Some(lapic) = &lapic {
                fd.set_lapic(lapic)
                    .map_err(|e| ioctl_error(id, "KVM_SET_LAPIC", e))?;
                fd.set_mp_state(mp)
                    .map_err(|e| ioctl_error(id, "KVM_SET_MP_STATE", e))?;
            }
            fd.set_vcpu_events(&kvm_bindings::kvm_vcpu_events::default())
                .map_err(|e| ioctl_error(id, "KVM_SET_VCPU_EVENTS", e))
        })?
    }

    /// The thread's pthread id and kick state, for the halt watcher.
    pub fn watched(&self) -> Option<super::halt_watch::Watched> {
        use std::os::unix::thread::JoinHandleExt;
        Some(super::halt_watch::Watched {
            thread: self.thread.as_ref()?.as_pthread_t(),
            kick: self.kick.clone(),
        })
    }

    /// Kicks the vCPU out of KVM_RUN.
    pub fn kick(&self) {
        kick::kick(&self.kick, self.thread.as_ref());
    }

    /// Asks the thread to end, kicking it if it runs.
    pub fn quit(&self) {
        let _ = self.requests.send(VcpuRequest::Quit);
        if self.running {
            self.kick();
        }
    }

    /// Waits for the thread to end (after [`VcpuHandle::quit`]).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stopped(&self) -> Result<&VcpuHandle, VmError> {
        if self.running {
            return Err(VmError::Running(self.id));
        }
        Ok(self)
    }

    /// Runs `f` on the stopped vCPU's thread and returns its result.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut VcpuFd) -> R + Send + 'static,
    ) -> Result<R, VmError> {
        self.stopped()?;
        let (tx, rx) = mpsc::sync_channel(1);
        let call = Box::new(move |fd: &mut VcpuFd| {
            let _ = tx.send(f(fd));
        });
        self.requests
            .send(VcpuRequest::Call(call))
            .map_err(|_| VmError::VcpuGone(self.id))?;
        rx.recv().map_err(|_| VmError::VcpuGone(self.id))
    }

    /// The registers of the stopped vCPU, with the writes not yet handed to it.
    pub fn snapshot(&self) -> Result<CpuSnapshot, VmError> {
        self.stopped()?;
        Ok(CpuSnapshot {
            regs: self.change.regs.unwrap_or(self.state.regs),
            sregs: self.change.sregs.unwrap_or(self.state.sregs),
        })
    }

    /// The paging registers (its last known state, running or not).
    pub fn paging_regs(&self) -> PagingRegs {
        crate::vmm::stop::paging_regs(&self.change.sregs.unwrap_or(self.state.sregs))
    }

    /// Sets the general-purpose registers (applied when it next runs).
    pub fn set_regs(&mut self, regs: kvm_regs) -> Result<(), VmError> {
        self.stopped()?;
        if regs != self.state.regs || self.change.regs.is_some() {
            self.change.regs = Some(regs);
        }
        Ok(())
    }

    /// Sets the system registers, at once: KVM_SET_SREGS checks them as VM entry would
    /// (KVM API 4.8; CR0/CR4 reserved bits and the bits this CPUID lacks, CR0.PG without
    /// PE, EFER.LMA/LME against CR0.PG and CR4.PAE), and a state it refuses is refused here
    /// with the vCPU left as it was, instead of failing every later KVM_RUN. One hand-off
    /// and two ioctls per system-register write; reads and runs pay nothing. The state is
    /// read back, so the registers shown are KVM's.
    pub fn set_sregs(&mut self, sregs: kvm_sregs) -> Result<(), VmError> {
        self.stopped()?;
        let current = self.change.sregs.unwrap_or(self.state.sregs);
        if sregs == current {
            return Ok(());
        }
        let id = self.id;
        let applied = self
            .call(move |fd| {
                fd.set_sregs(&sregs)?;
                let now = fd.get_sregs()?;
                // Without an in-kernel local APIC every KVM_RUN loads CR8 from kvm_run.cr8
                // (KVM API 5. "cr8"); the sync_regs area (used or not) must hold the state
                // KVM has, or a stop before the next KVM_RUN would show the old one.
                let run = fd.get_kvm_run();
                run.cr8 = now.cr8;
                fd.sync_regs_mut().sregs = now;
                Ok::<_, kvm_ioctls::Error>(now)
            })?
            .map_err(|e| VmError::SregsRefused(id, std::io::Error::from_raw_os_error(e.errno())))?;
        self.state.sregs = applied;
        self.change.sregs = None;
        self.forget_stop_cache();
        Ok(())
    }

    /// The FPU/SSE/AVX state, cached until the vCPU runs again.
    pub fn xsave(&mut self) -> Result<&kvm_xsave, VmError> {
        self.stopped()?;
        if self.xsave.is_none() {
            let id = self.id;
            let x = self
                .call(|fd| fd.get_xsave().map(Box::new))?
                .map_err(|e| ioctl_error(id, "KVM_GET_XSAVE", e))?;
            self.xsave = Some(x);
        }
        self.xsave.as_deref().ok_or(VmError::VcpuGone(self.id))
    }

    /// Writes the FPU/SSE/AVX state.
    pub fn set_xsave(&mut self, xsave: &kvm_xsave) -> Result<(), VmError> {
        self.stopped()?;
        if self
            .xsave
            .as_deref()
            .is_some_and(|x| x.region == xsave.region)
        {
            return Ok(());
        }
        let copy = copy_xsave(xsave);
        self.call(move |fd| {
            // SAFETY: `copy` is a whole `kvm_xsave` (4 KiB), the size KVM_SET_XSAVE reads.
            unsafe { fd.set_xsave(&copy) }
        })?
        .map_err(|e| ioctl_error(self.id, "KVM_SET_XSAVE", e))?;
        self.xsave = Some(copy_xsave(xsave));
        Ok(())
    }

    /// Reads MSRs; MSRs KVM cannot read are left out of the result.
    pub fn read_msrs(&self, indices: &[u32]) -> Result<Vec<(u32, u64)>, VmError> {
        let indices = indices.to_vec();
        self.call(move |fd| get_msrs(fd, &indices))?
            .map_err(|e| ioctl_error(self.id, "KVM_GET_MSRS", e))
    }

    /// Reads MSRs and, in the same hand-off to the thread, the XSAVE area into the cache
    /// [`VcpuHandle::xsave`] serves from (one thread wake-up instead of two).
    pub fn read_msrs_and_xsave(&mut self, indices: &[u32]) -> Result<Vec<(u32, u64)>, VmError> {
        if self.stopped()?.xsave.is_some() {
            return self.read_msrs(indices);
        }
        let indices = indices.to_vec();
        let (x, m) = self.call(move |fd| {
            let x = fd.get_xsave().map(Box::new);
            (x, get_msrs(fd, &indices))
        })?;
        if let Ok(x) = x {
            self.xsave = Some(x);
        }
        m.map_err(|e| ioctl_error(self.id, "KVM_GET_MSRS", e))
    }

    /// MSR `index` as it is at this stop (None if KVM cannot read it), read from KVM at most
    /// once per stop; the first read brings the XSAVE area along, since a debugger reading
    /// registers wants both.
    pub fn msr_at_stop(&mut self, index: u32) -> Result<Option<u64>, VmError> {
        if let Some(&cached) = self.stopped()?.msrs.get(&index) {
            return Ok(cached);
        }
        let value = self
            .read_msrs_and_xsave(&[index])?
            .first()
            .filter(|(i, _)| *i == index)
            .map(|(_, v)| *v);
        self.msrs.insert(index, value);
        Ok(value)
    }

    /// Writes one MSR.
    pub fn write_msr(&mut self, index: u32, value: u64) -> Result<(), VmError> {
        self.call(move |fd| set_msr(fd, index, value))?
            .map_err(|e| ioctl_error(self.id, "KVM_SET_MSRS", e))?;
        self.msrs.insert(index, Some(value));
        // MSRs that kvm_sregs mirrors: keep our copy (and any pending sregs write) in step,
        // or the next run would put the old value back.
        for sregs in std::iter::once(&mut self.state.sregs).chain(self.change.sregs.as_mut()) {
            match index {
                // MSRs that kvm_sregs also holds (SDM Vol. 4, table 2-2).
                msr::EFER => sregs.efer = value,
                msr::FS_BASE => sregs.fs.base = value,
                msr::GS_BASE => sregs.gs.base = value,
                msr::APIC_BASE => sregs.apic_base = value,
                _ => {}
            }
        }
        Ok(())
    }

    /// The debug registers DR0–DR3, DR6, DR7.
    pub fn debug_regs(&self) -> Result<kvm_bindings::kvm_debugregs, VmError> {
        self.call(|fd| fd.get_debug_regs())?
            .map_err(|e| ioctl_error(self.id, "KVM_GET_DEBUGREGS", e))
    }

    /// The multiprocessing state (KVM_GET_MP_STATE): runnable, halted, waiting for SIPI.
    pub fn mp_state(&self) -> Result<u32, VmError> {
        self.call(|fd| fd.get_mp_state())?
            .map(|s| s.mp_state)
            .map_err(|e| ioctl_error(self.id, "KVM_GET_MP_STATE", e))
    }

    /// Pending exception, interrupt and NMI state.
    pub fn vcpu_events(&self) -> Result<kvm_bindings::kvm_vcpu_events, VmError> {
        self.call(|fd| fd.get_vcpu_events())?
            .map_err(|e| ioctl_error(self.id, "KVM_GET_VCPU_EVENTS", e))
    }
}

fn ioctl_error(id: usize, what: &'static str, e: kvm_ioctls::Error) -> VmError {
    VmError::VcpuIoctl(id, what, std::io::Error::from_raw_os_error(e.errno()))
}

/// A copy of an XSAVE area (the bindings type is not `Clone`).
pub fn copy_xsave(x: &kvm_xsave) -> Box<kvm_xsave> {
    Box::new(kvm_xsave {
        region: x.region,
        ..Default::default()
    })
}

fn get_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>, kvm_ioctls::Error> {
    let entries: Vec<kvm_bindings::kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_bindings::kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = kvm_bindings::Msrs::from_entries(&entries)
        .map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
    // KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it read.
    let n = fd.get_msrs(&mut msrs)?;
    Ok(msrs.as_slice()[..n]
        .iter()
        .map(|e| (e.index, e.data))
        .collect())
}

fn set_msr(fd: &VcpuFd, index: u32, data: u64) -> Result<(), kvm_ioctls::Error> {
    let msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }])
    .map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
    match fd.set_msrs(&msrs)? {
        1 => Ok(()),
        _ => Err(kvm_ioctls::Error::new(libc::EINVAL)),
    }
}
