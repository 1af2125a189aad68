//! Run control: resuming vCPUs, kicking them, stopping them all, the queue of stops not yet
//! reported, and the stop-the-world memory-slot swap that runs one instruction KVM could not
//! run against a watched page.

use super::VmError;
use super::debug::Debugger;
use super::debug::watch::{self, WatchKind};
use super::memslots::MemSlots;
use super::quirks::KICK_SPIN;
use super::stop::{VcpuEvent, VcpuStop};
use super::vcpu::handle::VcpuHandle;
use super::vcpu::{Exit, ThreadEvent};
use crate::memory::GuestMem;
use kvm_bindings::KVM_INTERNAL_ERROR_EMULATION;
use kvm_ioctls::VmFd;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// What the memory-slot swap needs besides the vCPUs.
pub struct RamSwap<'a> {
    /// The VM whose slots change.
    pub vm: &'a VmFd,
    /// Guest RAM's slots.
    pub slots: &'a mut MemSlots,
    /// The debug state: watchpoints, and software breakpoints held in debug registers.
    pub debug: &'a Debugger,
    /// Guest RAM, to compare watched bytes.
    pub mem: &'a GuestMem,
}

/// The vCPUs and their stops.
pub struct RunControl {
    vcpus: Vec<VcpuHandle>,
    events: Receiver<ThreadEvent>,
    /// Stops received or made up but not yet reported: a frozen vCPU asked to run, stops
    /// that arrived while spinning, and other vCPUs' stops during a memory-slot swap.
    pending: VecDeque<ThreadEvent>,
    notify: Arc<EventFd>,
    /// A guest reset not yet carried out: which vCPU asked, and how.
    reset: Option<(usize, &'static str)>,
    /// The host CPUs this process may run on: spinning for a stop pays only while a core
    /// is left for it ([`RunControl::spare_core`]).
    host_cpus: usize,
}

/// How long the memory-slot swap waits for its one instruction before kicking the vCPU.
const SWAP_STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// The error stop an instruction gets when KVM cannot run it even with all RAM mapped.
const EMULATION_FAILURE: VcpuStop = VcpuStop::InternalError {
    suberror: KVM_INTERNAL_ERROR_EMULATION,
};

impl RunControl {
    /// Run control over `vcpus`, whose stops arrive on `events` and are signalled on
    /// `notify`.
    pub fn new(
        vcpus: Vec<VcpuHandle>,
        events: Receiver<ThreadEvent>,
        notify: Arc<EventFd>,
    ) -> RunControl {
        RunControl {
            vcpus,
            events,
            pending: VecDeque::new(),
            notify,
            reset: None,
            host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Whether a host core is left for the controller once every running vCPU thread has
    /// one. Only then may it spin for a stop or a packet instead of sleeping: with the cores
    /// taken, a spin delays the very vCPU threads it waits for, and the CPU time it burns
    /// makes Linux's scheduler (EEVDF) run the controller later at its next wake-up
    /// (docs/kvm-quirks.md, "Stop latency").
    pub fn spare_core(&self) -> bool {
        self.vcpus.iter().filter(|v| v.running).count() < self.host_cpus
    }

    /// vCPU `id`.
    pub fn vcpu(&self, id: usize) -> Result<&VcpuHandle, VmError> {
        self.vcpus.get(id).ok_or(VmError::NoVcpu(id))
    }

    /// vCPU `id`, to change.
    pub fn vcpu_mut(&mut self, id: usize) -> Result<&mut VcpuHandle, VmError> {
        self.vcpus.get_mut(id).ok_or(VmError::NoVcpu(id))
    }

    /// All vCPUs.
    pub fn vcpus(&self) -> &[VcpuHandle] {
        &self.vcpus
    }

    /// All vCPUs, to change.
    pub fn vcpus_mut(&mut self) -> &mut [VcpuHandle] {
        &mut self.vcpus
    }

    /// Takes the guest reset [`RunControl::poll_event`] or [`RunControl::stop_all`] saw,
    /// for the machine to carry out: the vCPU that asked, and how.
    pub fn take_reset(&mut self) -> Option<(usize, &'static str)> {
        self.reset.take()
    }

    /// Queues `stop` with `state` as vCPU `id`'s next stop, as if it had run to it (the
    /// vCPU counts as running until the stop is taken).
    pub fn report_now(&mut self, id: usize, stop: VcpuStop, state: super::stop::CpuSnapshot) {
        if let Some(v) = self.vcpus.get_mut(id) {
            v.running = true;
            self.pending.push_back(ThreadEvent {
                id,
                exit: Exit::Stop(stop),
                state,
            });
            let _ = self.notify.write(1);
        }
    }

    /// The eventfd that becomes readable when a stop is ready.
    pub fn notify(&self) -> &EventFd {
        &self.notify
    }

    /// True if any vCPU is running.
    pub fn any_running(&self) -> bool {
        self.vcpus.iter().any(|v| v.running)
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
                self.pending.push_back(ThreadEvent {
                    id,
                    exit: Exit::Stop(stop),
                    state: v.state,
                });
                v.running = true;
                let _ = self.notify.write(1);
                continue;
            }
            let from = v.resume_point();
            v.start(step, true, from)?;
        }
        Ok(())
    }

    /// Waits up to `max` for a vCPU stop by polling the queue, without sleeping. A single
    /// step comes back within microseconds; sleeping in poll(2) and being woken would add a
    /// context switch (tens of µs here) to every step, the hot path of a debugger.
    /// Without a spare core ([`RunControl::spare_core`]) it only looks once.
    pub fn spin_for_event(&mut self, max: Duration) -> bool {
        if !self.pending.is_empty() {
            return true;
        }
        if !self.spare_core() {
            if let Ok(ev) = self.events.try_recv() {
                self.pending.push_back(ev);
                return true;
            }
            return false;
        }
        let start = std::time::Instant::now();
        loop {
            if let Ok(ev) = self.events.try_recv() {
                self.pending.push_back(ev);
                return true;
            }
            if start.elapsed() >= max {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Takes the next vCPU stop if one is ready, without blocking. An instruction KVM could
    /// not run against a watched page is run here with guest RAM mapped (`ram`).
    pub fn poll_event(&mut self, ram: &mut RamSwap<'_>) -> Option<VcpuEvent> {
        let _ = self.notify.read();
        loop {
            let ev = self
                .pending
                .pop_front()
                .or_else(|| self.events.try_recv().ok())?;
            let id = ev.id;
            let mut ev = match ev.exit {
                Exit::Stop(stop) => VcpuEvent {
                    id,
                    stop,
                    state: ev.state,
                },
                Exit::Reset(how) => {
                    // The machine carries it out (`Vm::poll_event`); nothing to report.
                    if let Some(v) = self.vcpus.get_mut(id) {
                        v.running = false;
                        v.state = ev.state;
                    }
                    self.reset = Some((id, how));
                    return None;
                }
                Exit::NeedsRam => {
                    // A run that was stepping over the breakpoint it started from and could
                    // not run that instruction: the retry steps over it too. Any other
                    // instruction is one the debugger never saw the vCPU stop at, and a
                    // breakpoint there must be reported, not skipped.
                    let mut step_over = None;
                    if let Some(v) = self.vcpus.get_mut(id) {
                        v.running = false;
                        v.state = ev.state;
                        step_over = v.step_over.filter(|&pc| pc == ev.state.linear_rip());
                    }
                    match self.step_with_ram_mapped(id, step_over, ram) {
                        // The vCPU was continuing: let it go on; a later event reports it.
                        // The debugger saw no stop here, so nothing is stepped over.
                        Ok(next) if next.stop == VcpuStop::Step && !self.vcpus[id].stepping => {
                            if let Err(e) = self.vcpus[id].start(false, false, None) {
                                log::error!("cannot resume vCPU {id}: {e}");
                            }
                            continue;
                        }
                        Ok(next) => next,
                        Err(e) => {
                            log::error!("cannot step through a watched page: {e}");
                            VcpuEvent {
                                id,
                                stop: EMULATION_FAILURE,
                                state: ev.state,
                            }
                        }
                    }
                }
            };
            self.note_stop(&mut ev, ram.debug);
            return Some(ev);
        }
    }

    /// Runs one instruction of vCPU `id` with all of guest RAM back in its memory slots,
    /// for an instruction KVM could not run against a watched page. Every other vCPU is
    /// paused meanwhile ([`RunControl::pause_others`]), or one of them could write a watched
    /// byte unseen while the slots are swapped. Reads that instruction makes of watched
    /// bytes are not seen; writes are, by comparing the watched bytes. `step_over`: the
    /// breakpoint the failed run was stepping over.
    fn step_with_ram_mapped(
        &mut self,
        id: usize,
        step_over: Option<u64>,
        ram: &mut RamSwap<'_>,
    ) -> Result<VcpuEvent, VmError> {
        let watches = ram.debug.watches();
        // Only watches that catch writes are compared afterwards; a read watch's bytes are
        // not copied at all.
        let before: Vec<Vec<u8>> = watches
            .iter()
            .map(|w| {
                if w.kind == WatchKind::Read {
                    Vec::new()
                } else {
                    watch::watched_bytes(ram.mem, w)
                }
            })
            .collect();
        let paused = self.pause_others(id);
        ram.slots.set_all_ram_mapped(true);
        if let Err(e) = ram.slots.relayout(ram.vm, &watches) {
            self.rerun(&paused);
            return Err(VmError::MemSlots(e));
        }
        // The swap's own step is no run of the debugger's: the vCPU keeps its flags.
        let stepping = self.vcpus[id].stepping;
        let result = match self.vcpus[id].start(true, false, step_over) {
            Err(e) => Err(e),
            Ok(()) => loop {
                match self.events.recv_timeout(SWAP_STEP_TIMEOUT) {
                    Ok(ev) if ev.id == id => break Ok(ev),
                    Ok(ev) => self.pending.push_back(ev),
                    // One instruction that does not finish (PVM hangs on `vmcall` until a
                    // kick: docs/kvm-quirks.md) must not hang the stub: kick it out (again,
                    // should a kick be lost); the stop then reads as an interruption.
                    Err(RecvTimeoutError::Timeout) => self.vcpus[id].kick(),
                    Err(RecvTimeoutError::Disconnected) => break Err(VmError::VcpuGone(id)),
                }
            },
        };
        self.vcpus[id].running = false;
        self.vcpus[id].stepping = stepping;
        ram.slots.set_all_ram_mapped(false);
        let relaid = ram.slots.relayout(ram.vm, &watches);
        self.rerun(&paused);
        relaid.map_err(VmError::MemSlots)?;
        let ev = result?;
        let mut out = VcpuEvent {
            id,
            // Still failing with all RAM mapped: a genuine emulation failure.
            stop: match ev.exit {
                Exit::Stop(stop) => stop,
                Exit::NeedsRam => EMULATION_FAILURE,
                Exit::Reset(how) => {
                    self.reset = Some((id, how));
                    VcpuStop::Step
                }
            },
            state: ev.state,
        };
        if out.stop == VcpuStop::Step {
            for (w, old) in watches.iter().zip(&before) {
                if w.kind != WatchKind::Read {
                    let new = watch::watched_bytes(ram.mem, w);
                    if let Some(i) = new.iter().zip(old).position(|(a, b)| a != b) {
                        out.stop = VcpuStop::Watch {
                            kind: w.kind,
                            addr: w.addr + i as u64,
                        };
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Stops every running vCPU but `id` for the memory-slot swap, unseen by the debugger:
    /// returns the ones a kick stopped, which [`RunControl::rerun`] runs on. One that
    /// stopped for a reason of its own meanwhile stays stopped, its stop queued as it came
    /// (it counts as running until that stop is taken), and so does one already stopped
    /// with its stop still queued.
    fn pause_others(&mut self, id: usize) -> Vec<usize> {
        let queued: Vec<usize> = self.pending.iter().map(|ev| ev.id).collect();
        let mut waiting: Vec<usize> = (0..self.vcpus.len())
            .filter(|&o| o != id && self.vcpus[o].running && !queued.contains(&o))
            .collect();
        if waiting.is_empty() {
            return Vec::new();
        }
        let start = std::time::Instant::now();
        for &o in &waiting {
            self.vcpus[o].kick();
        }
        let mut paused = Vec::new();
        while !waiting.is_empty() {
            let ev = match self.events.recv_timeout(SWAP_STEP_TIMEOUT) {
                Ok(ev) => ev,
                // As in stop_all: kick again rather than wait for ever.
                Err(RecvTimeoutError::Timeout) => {
                    for &o in &waiting {
                        self.vcpus[o].kick();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            waiting.retain(|&o| o != ev.id);
            match ev.exit {
                // An instruction that needed RAM is retried (and handled) on the next run.
                Exit::Stop(VcpuStop::Kicked) | Exit::NeedsRam => {
                    if let Some(v) = self.vcpus.get_mut(ev.id) {
                        v.running = false;
                        v.state = ev.state;
                        paused.push(ev.id);
                    }
                }
                _ => self.pending.push_back(ev),
            }
        }
        log::debug!(
            "memory-slot swap: {} other vCPUs paused in {:?}",
            paused.len(),
            start.elapsed()
        );
        paused
    }

    /// Runs the vCPUs `ids` on as they were running before a kick stopped them unseen by
    /// the debugger (the memory-slot swap's pause, a stop-all that found nothing to
    /// report): a step steps, and a breakpoint being stepped over is stepped over if the
    /// vCPU had not got past it yet.
    pub fn rerun(&mut self, ids: &[usize]) {
        for &o in ids {
            let Some(v) = self.vcpus.get_mut(o) else {
                continue;
            };
            if v.running {
                continue;
            }
            let step_over = v.step_over.filter(|&pc| pc == v.state.linear_rip());
            let step = v.stepping;
            if let Err(e) = v.start(step, false, step_over) {
                log::error!("cannot run vCPU {o} on after a kick: {e}");
            }
        }
    }

    /// Records a stop in its vCPU's handle, as the debugger will see it.
    fn note_stop(&mut self, ev: &mut VcpuEvent, debug: &Debugger) {
        // A software breakpoint that lives in a debug register is still a software
        // breakpoint to the debugger.
        if let VcpuStop::HwBreakpoint { addr, .. } = ev.stop {
            if debug.is_sw_via_debugreg(addr) {
                ev.stop = VcpuStop::SwBreakpoint(addr);
            }
        }
        if let Some(v) = self.vcpus.get_mut(ev.id) {
            v.note_stop(ev.stop, ev.state);
        }
    }

    /// A stop that arrives while stopping anyway: an instruction that needed RAM is retried
    /// (and handled) on the next run, so it reads as the kick.
    fn settle(&mut self, ev: ThreadEvent, debug: &Debugger) -> VcpuEvent {
        let mut ev = VcpuEvent {
            id: ev.id,
            stop: match ev.exit {
                Exit::Stop(stop) => stop,
                Exit::NeedsRam => VcpuStop::Kicked,
                // Carried out by the machine once every vCPU has stopped.
                Exit::Reset(how) => {
                    self.reset = Some((ev.id, how));
                    VcpuStop::Kicked
                }
            },
            state: ev.state,
        };
        self.note_stop(&mut ev, debug);
        ev
    }

    fn kick_running(&self) {
        for v in &self.vcpus {
            if v.running {
                v.kick();
            }
        }
    }

    /// Kicks every running vCPU out of KVM_RUN and waits until all have stopped. Returns the
    /// stops that arrived, in order (a vCPU may have stopped for its own reason first).
    pub fn stop_all(&mut self, ram: &mut RamSwap<'_>) -> Vec<VcpuEvent> {
        // The usual case on the stop path (one vCPU, already stopped): nothing to drain or
        // kick, and no eventfd reads to waste.
        if !self.any_running() && self.pending.is_empty() {
            return Vec::new();
        }
        let mut got = Vec::new();
        while let Some(ev) = self.poll_event(ram) {
            got.push(ev);
        }
        self.kick_running();
        while self.any_running() {
            if let Some(ev) = self.pending.pop_front() {
                got.push(self.settle(ev, ram.debug));
                continue;
            }
            // A kick lands in 80–120 µs on PVM: wait that long without sleeping, so the
            // stop is not delayed further by a wake-up (quirks::KICK_SPIN).
            if self.spin_for_event(KICK_SPIN) {
                continue;
            }
            match self.events.recv_timeout(Duration::from_millis(500)) {
                Ok(ev) => got.push(self.settle(ev, ram.debug)),
                Err(RecvTimeoutError::Timeout) => {
                    // A kick can be lost only in theory (the flag is rechecked before every
                    // KVM_RUN); kick again rather than wait forever.
                    self.kick_running();
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

    /// Ends every vCPU thread and waits for them.
    pub fn shutdown(&mut self) {
        for v in &self.vcpus {
            v.quit();
        }
        for v in &mut self.vcpus {
            v.join();
        }
    }
}

// Non-stop mode: one vCPU stopped or resumed while the others run on.
impl RunControl {
    /// Kicks vCPU `id` out of KVM_RUN if it runs; its stop arrives as an event
    /// ([`RunControl::poll_event`]), and the other vCPUs run on.
    pub fn kick_one(&self, id: usize) -> Result<(), VmError> {
        let v = self.vcpu(id)?;
        if v.running {
            v.kick();
        }
        Ok(())
    }

    /// Runs stopped vCPU `id` on from a stop the debugger never saw (a pause to change
    /// the debug state under it): nothing is stepped over, so a breakpoint planted at its
    /// current instruction meanwhile is hit, not skipped.
    pub fn resume_unseen(&mut self, id: usize) -> Result<(), VmError> {
        let v = self.vcpu_mut(id)?;
        if v.running {
            return Ok(());
        }
        v.start(false, true, None)
    }
}
