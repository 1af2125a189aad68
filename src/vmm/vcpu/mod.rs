//! One vCPU on its own thread. The thread owns its `VcpuFd`; the controller talks to it
//! through [`handle::VcpuHandle`], and the thread reports each stop with a register
//! snapshot. This file is the thread loop and the dispatch of KVM exits.

pub mod guest_debug;
pub mod halt_watch;
pub mod handle;
pub mod kick;
pub mod tables;

use super::complete::{self, CannotComplete, Done};
use super::debug::table::DebugTable;
use super::debug::watch::WatchKind;
use super::devices::{Devices, IoAction};
use super::quirks::{self, Int3Report, InternalErrorCause, InternalErrorExit};
use super::stop::{CpuSnapshot, VcpuStop};
use crate::memory::GuestMem;
use crate::x86::{Dr6, Rflags};
use guest_debug::AppliedDebug;
use kick::KickState;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// How a run ended, as the vCPU thread tells the controller. Apart from the public stops
/// there is one internal exit, which never leaves the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A stop to report.
    Stop(VcpuStop),
    /// KVM could not run an instruction, and watchpoints have taken pages out of guest
    /// RAM's memory slots: KVM cannot fetch code from such a page, and its emulator cannot
    /// do some accesses (`lidt` from MMIO, say) to one. Run control runs the instruction
    /// again with the pages mapped.
    NeedsRam,
    /// The guest reset the machine (this says how); the I/O that did it has completed.
    /// Run control resets the machine.
    Reset(&'static str),
}

impl From<VcpuStop> for Exit {
    fn from(stop: VcpuStop) -> Exit {
        Exit::Stop(stop)
    }
}

/// The end of a run, sent to the controller.
pub struct ThreadEvent {
    /// Which vCPU.
    pub id: usize,
    /// Why it stopped.
    pub exit: Exit,
    /// Its registers at the stop.
    pub state: CpuSnapshot,
}

/// Work a function does on the vCPU thread, with the vCPU; it sends its own typed reply.
pub type VcpuCall = Box<dyn FnOnce(&mut VcpuFd) + Send>;

/// Work for a vCPU thread.
pub enum VcpuRequest {
    /// Run until the next stop (one instruction when `step`), after applying `state` if given.
    Run {
        /// Single-step instead of continuing.
        step: bool,
        /// Registers changed by the debugger since the last stop.
        state: Option<Box<StateChange>>,
        /// The address the debugger saw this vCPU stopped at, when the run starts from it:
        /// a breakpoint of ours there is the one being resumed from, and is stepped over.
        /// None for a run that starts anywhere else (RIP moved by the debugger, or a run
        /// the debugger never saw stop, such as the memory-slot swap's retry).
        step_over: Option<u64>,
    },
    /// Run a function on the vCPU (an ioctl the controller wants), on its own thread.
    Call(VcpuCall),
    /// End the thread.
    Quit,
}

/// Registers the debugger changed.
#[derive(Clone, Copy, Default)]
pub struct StateChange {
    /// New general-purpose registers.
    pub regs: Option<kvm_regs>,
    /// New system registers.
    pub sregs: Option<kvm_sregs>,
}

/// Everything a vCPU thread owns.
pub struct VcpuThread {
    /// Index of this vCPU.
    pub id: usize,
    /// The KVM vCPU.
    pub vcpu: VcpuFd,
    /// Guest RAM (for planting breakpoint bytes).
    pub mem: Arc<GuestMem>,
    /// The machine's devices.
    pub devices: Arc<Mutex<Devices>>,
    /// The shared debug-state table.
    pub debug: Arc<DebugTable>,
    /// Kick flag.
    pub kick: Arc<KickState>,
    /// Whether kvm_run carries regs and sregs (KVM_CAP_SYNC_REGS).
    pub sync_regs: bool,
    /// Whether KVM_GUESTDBG_BLOCKIRQ may be used for steps.
    pub block_irq: bool,
    /// Requests in.
    pub requests: Receiver<VcpuRequest>,
    /// Stops out.
    pub events: Sender<ThreadEvent>,
    /// Written after each event so the controller's poll wakes.
    pub notify: Arc<EventFd>,
    /// Set when the last stop interrupted an idle `hlt`, which resuming goes back to.
    was_idle_hlt: bool,
    /// The guest-debug configuration last applied.
    applied: Option<AppliedDebug>,
    /// During a step that delivers the guest's own #BP: the debug-register slot and the
    /// handler address where the step ends ([`VcpuThread::inject_guest_breakpoint`]).
    step_to_handler: Option<(usize, u64)>,
    /// The next KVM_RUN delivers a #BP KVM has queued for the guest and ends at its
    /// handler's breakpoint: it runs with the kick signal blocked and immediate_exit clear,
    /// so a kick cannot stop the vCPU with the #BP still queued (a later step would deliver
    /// it with the trap flag saved in the guest's frame; its `iretq` then traps with no
    /// handler). The kick is reported at the handler instead, a state the debugger can see.
    bp_delivery: bool,
    /// During a step: the exception handlers where it ends if the stepped instruction
    /// faults ([`tables::step_fault_handlers`], armed by [`guest_debug::guest_debug`]).
    step_catches: guest_debug::Catches,
    /// Where the step that [`VcpuThread::step_catches`] serves started.
    step_from: tables::StepFrom,
}

/// What one KVM_RUN exit asks of the run loop.
enum Outcome {
    /// The run ends with this exit.
    Done(Exit),
    /// The VMM handled an I/O or MMIO access; a watchpoint may have caught it.
    Io(Option<(WatchKind, u64)>),
    /// Nothing to report: enter the guest again.
    Again,
}

/// #DB and #BP (SDM Vol. 3, 6.3.1).
const DB_VECTOR: u32 = 1;
const BP_VECTOR: u32 = 3;

impl VcpuThread {
    /// The thread body: serve requests until `Quit` or the controller goes away.
    pub fn run_loop(mut self) {
        kick::set_immediate_exit(&mut self.vcpu.get_kvm_run().immediate_exit);
        if self.sync_regs {
            self.vcpu.set_sync_valid_reg(SyncReg::Register);
            self.vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
            self.fill_sync_regs();
        }
        let mut halted_idle = false;
        while let Ok(req) = self.requests.recv() {
            match req {
                VcpuRequest::Run {
                    step,
                    state,
                    step_over,
                } => {
                    // New registers from the debugger (a reset, a changed RIP) end an idle halt.
                    if state.is_some() {
                        halted_idle = false;
                    }
                    self.kick.set_in_run(true);
                    let exit = match self.apply_state(state.as_deref()) {
                        Err(e) => VcpuStop::RunError(e).into(),
                        Ok(()) if halted_idle && !step => self.idle_until_kick().into(),
                        Ok(()) => self.run(step, step_over),
                    };
                    self.kick.set_in_run(false);
                    halted_idle = exit == Exit::Stop(VcpuStop::Kicked) && self.was_idle_hlt;
                    self.was_idle_hlt = false;
                    let (exit, state) = match self.snapshot() {
                        Ok(state) => (exit, state),
                        // No registers to report: the stop is this error, never zeros
                        // passed off as the guest's state.
                        Err(e) => (VcpuStop::RunError(e).into(), CpuSnapshot::default()),
                    };
                    // Any stop satisfies a kick that raced it: the controller only waits for
                    // this vCPU to stop, and a kick left pending would end the next run
                    // before it starts.
                    self.kick.take();
                    let event = ThreadEvent {
                        id: self.id,
                        exit,
                        state,
                    };
                    if self.events.send(event).is_err() {
                        break;
                    }
                    let _ = self.notify.write(1);
                }
                VcpuRequest::Call(f) => f(&mut self.vcpu),
                VcpuRequest::Quit => break,
            }
        }
        kick::set_immediate_exit(std::ptr::null_mut());
    }

    /// Puts the vCPU's registers, read from KVM, into kvm_run's sync_regs area. KVM fills
    /// that area only when a KVM_RUN returns (KVM API 5. "kvm_valid_regs"); until the first
    /// one it holds zeros, and a stop before it (a kick that lands before the vCPU entered
    /// KVM) would report them as the guest's registers, and a debugger writing them back
    /// would wreck the guest. Two ioctls, once per thread; from then on the area always
    /// holds the vCPU's state: as of the last exit, or as the debugger last set it.
    fn fill_sync_regs(&mut self) {
        match (self.vcpu.get_regs(), self.vcpu.get_sregs()) {
            (Ok(regs), Ok(sregs)) => {
                let s = self.vcpu.sync_regs_mut();
                s.regs = regs;
                s.sregs = sregs;
            }
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("vCPU {}: cannot read the entry registers: {e}", self.id);
                // Report what KVM has from now on, never the unfilled area.
                self.sync_regs = false;
            }
        }
    }

    fn apply_state(&mut self, change: Option<&StateChange>) -> Result<(), i32> {
        let Some(change) = change else { return Ok(()) };
        if let Some(sregs) = change.sregs {
            // Without an in-kernel local APIC, every KVM_RUN loads CR8 from kvm_run.cr8,
            // after KVM_SET_SREGS or sync_regs (KVM API 5. "cr8"): a debugger's CR8 write must
            // go there too or it is lost.
            self.vcpu.get_kvm_run().cr8 = sregs.cr8;
        }
        if self.sync_regs {
            // kvm_run sync_regs: KVM loads dirty sets on the next KVM_RUN, saving an ioctl.
            if let Some(regs) = change.regs {
                self.vcpu.sync_regs_mut().regs = regs;
                self.vcpu.set_sync_dirty_reg(SyncReg::Register);
            }
            if let Some(sregs) = change.sregs {
                self.vcpu.sync_regs_mut().sregs = sregs;
                self.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
            }
            return Ok(());
        }
        if let Some(regs) = change.regs {
            self.vcpu.set_regs(&regs).map_err(|e| e.errno())?;
        }
        if let Some(sregs) = change.sregs {
            self.vcpu.set_sregs(&sregs).map_err(|e| e.errno())?;
        }
        Ok(())
    }

    /// The registers as of the last exit, or as the debugger last set them (with sync_regs,
    /// dirty sets not yet loaded by KVM are the newest values). Free with sync_regs;
    /// otherwise KVM_GET_REGS and KVM_GET_SREGS, whose errno is returned if one fails.
    fn snapshot(&mut self) -> Result<CpuSnapshot, i32> {
        if self.sync_regs {
            let s = self.vcpu.sync_regs();
            return Ok(CpuSnapshot {
                regs: s.regs,
                sregs: s.sregs,
            });
        }
        Ok(CpuSnapshot {
            regs: self.vcpu.get_regs().map_err(|e| e.errno())?,
            sregs: self.vcpu.get_sregs().map_err(|e| e.errno())?,
        })
    }

    /// Runs to the next stop. A breakpoint of ours under the current instruction, when the
    /// run starts from the stop the debugger saw there (`step_over`), is stepped over first
    /// with that breakpoint masked ([`quirks::step_masked_first`]), so resuming executes
    /// the instruction under it exactly once. Anywhere else the breakpoint is reported
    /// before its instruction runs, as it would be on arriving there.
    fn run(&mut self, step: bool, step_over: Option<u64>) -> Exit {
        self.step_to_handler = None;
        let state = match self.snapshot() {
            Ok(s) => s,
            Err(e) => return VcpuStop::RunError(e).into(),
        };
        let pc = state.linear_rip();
        let bp_here = step_over == Some(pc)
            && self
                .debug
                .with(|b| b.sw.contains_key(&pc) || b.hw_slot_at(pc).is_some());
        // Every run that steps (the masked step of a continue too) catches the handlers of
        // the IDT as it is now: guest-memory reads, no ioctl.
        self.step_catches = if step || bp_here {
            tables::step_fault_handlers(&self.mem, &state.sregs, pc)
        } else {
            Default::default()
        };
        self.step_from = tables::StepFrom {
            rip: state.regs.rip,
            cs: state.sregs.cs.selector,
            rflags: state.regs.rflags,
        };
        if quirks::step_masked_first(bp_here) {
            let exit = self.run_masked(true, pc);
            match exit {
                Exit::Stop(stop) if quirks::continue_after_masked_step(step, stop) => {}
                _ => return exit,
            }
        }
        self.run_until_stop(step, None)
    }

    /// Runs with our breakpoint at `pc` out of the way: its original byte back in RAM and
    /// its debug register masked; replants it after.
    fn run_masked(&mut self, step: bool, pc: u64) -> Exit {
        let sw = self.debug.with(|b| b.sw.get(&pc).copied());
        if let Some(bp) = sw {
            let _ = self.mem.write_obj(bp.orig, bp.gpa);
        }
        let exit = self.run_until_stop(step, Some(pc));
        if let Some(bp) = sw {
            // Replant only if the breakpoint is still wanted and the guest left the byte alone.
            let still = self
                .debug
                .with(|b| b.sw.get(&pc).is_some_and(|x| x.gpa == bp.gpa));
            let byte: u8 = self.mem.read_obj(bp.gpa).unwrap_or(bp.orig);
            if still && byte == bp.orig {
                let insn = self
                    .debug
                    .with(|b| b.sw.get(&pc).map_or(bp.insn, |x| x.insn));
                let _ = self.mem.write_obj(insn, bp.gpa);
            }
        }
        exit
    }

    /// Finishes an I/O or MMIO exit without running guest code: KVM completes the access
    /// when re-entered, and immediate_exit makes it return straight after (KVM API, kvm_run
    /// "immediate_exit"). On hardware KVM a pending single-step then reports
    /// KVM_EXIT_DEBUG; on PVM it returns EINTR with RIP past the instruction. Either way the
    /// instruction has executed exactly once.
    fn complete_io(&mut self) {
        self.vcpu.set_kvm_immediate_exit(1);
        let _ = self.vcpu.run();
        self.vcpu.set_kvm_immediate_exit(0);
    }

    /// Enters the guest until something must be reported (`mask` as for
    /// [`guest_debug::guest_debug`]).
    fn run_until_stop(&mut self, step: bool, mask: Option<u64>) -> Exit {
        self.apply_debug(step, mask);
        if self.kick.take() {
            return VcpuStop::Kicked.into();
        }
        loop {
            match self.run_once(step, mask) {
                Outcome::Done(exit) => return exit,
                Outcome::Io(Some((kind, addr))) => {
                    // Report after the instruction has completed, as a data breakpoint does.
                    self.complete_io();
                    return VcpuStop::Watch { kind, addr }.into();
                }
                Outcome::Io(None) => {
                    if let Some(stop) = self.after_io(step) {
                        return stop.into();
                    }
                }
                Outcome::Again => {}
            }
        }
    }

    /// After an I/O or MMIO access the VMM handled: the stop to report, if any.
    fn after_io(&mut self, step: bool) -> Option<VcpuStop> {
        if quirks::finish_step_after_io(step, true) {
            self.complete_io();
            return Some(VcpuStop::Step);
        }
        if self.kick.take() {
            self.complete_io();
            return Some(VcpuStop::Kicked);
        }
        None
    }

    /// One KVM_RUN and what its exit asks for.
    fn run_once(&mut self, step: bool, mask: Option<u64>) -> Outcome {
        let result = if std::mem::take(&mut self.bp_delivery) {
            // Bounded by the handler's breakpoint; a kick meanwhile stays pending.
            kick::with_kick_blocked(|| {
                self.vcpu.set_kvm_immediate_exit(0);
                self.vcpu.run()
            })
        } else {
            self.vcpu.run()
        };
        match result {
            Ok(VcpuExit::IoOut(port, data)) => {
                let action = lock(&self.devices).io_out(port, data);
                match action {
                    IoAction::Exit(code) => Outcome::Done(VcpuStop::Exit(code).into()),
                    IoAction::Reset(how) => {
                        // Finish the `out` inside KVM so no I/O is pending across the reset.
                        self.complete_io();
                        Outcome::Done(Exit::Reset(how))
                    }
                    IoAction::Continue => Outcome::Io(None),
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                lock(&self.devices).io_in(port, data);
                Outcome::Io(None)
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                // RAM behind a watchpoint's missing slot: complete the read from RAM.
                if self.mem.read_slice(data, GuestAddress(addr)).is_ok() {
                    let len = data.len() as u64;
                    return Outcome::Io(self.debug.with(|b| b.watch_hit(addr, len, false)));
                }
                lock(&self.devices).mmio_read(addr, data);
                Outcome::Io(None)
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                // RAM behind a watchpoint's read-only or missing slot: the VMM performs the
                // write the guest asked for.
                if self.mem.write_slice(data, GuestAddress(addr)).is_ok() {
                    let len = data.len() as u64;
                    return Outcome::Io(self.debug.with(|b| b.watch_hit(addr, len, true)));
                }
                lock(&self.devices).mmio_write(addr, data);
                Outcome::Io(None)
            }
            Ok(VcpuExit::Hlt) => Outcome::Done(self.on_hlt(step).into()),
            Ok(VcpuExit::Debug(arch)) => match self.on_debug(step, mask, arch) {
                Some(stop) => Outcome::Done(stop.into()),
                None => Outcome::Again,
            },
            Ok(VcpuExit::Shutdown) => Outcome::Done(VcpuStop::Shutdown.into()),
            Ok(VcpuExit::InternalError) => match self.on_internal_error(step, mask) {
                Some(exit) => Outcome::Done(exit),
                None => Outcome::Again,
            },
            Ok(VcpuExit::FailEntry(reason, _cpu)) => {
                Outcome::Done(VcpuStop::FailEntry(reason).into())
            }
            Ok(VcpuExit::Intr) => self.kicked_or_again(),
            Ok(VcpuExit::Unsupported(r)) => Outcome::Done(VcpuStop::UnhandledExit(r).into()),
            Ok(other) => {
                log::warn!("vCPU {}: unexpected exit {other:?}", self.id);
                Outcome::Done(VcpuStop::UnhandledExit(u32::MAX).into())
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.vcpu.set_kvm_immediate_exit(0);
                self.kicked_or_again()
            }
            Err(e) => Outcome::Done(VcpuStop::RunError(e.errno()).into()),
        }
    }

    fn kicked_or_again(&mut self) -> Outcome {
        if self.kick.take() {
            return Outcome::Done(VcpuStop::Kicked.into());
        }
        if self.kick.take_probe() && self.halted_for_good() {
            return Outcome::Done(VcpuStop::Halted.into());
        }
        Outcome::Again
    }

    /// For a halt probe ([`halt_watch`]): whether the vCPU sits in `hlt` inside KVM
    /// (KVM_MP_STATE_HALTED, which only an in-kernel local APIC reports) with interrupts
    /// off, which nothing but an NMI or INIT could end. RIP is then past the `hlt`, as
    /// after a KVM_EXIT_HLT.
    fn halted_for_good(&mut self) -> bool {
        let halted = self
            .vcpu
            .get_mp_state()
            .is_ok_and(|s| s.mp_state == kvm_bindings::KVM_MP_STATE_HALTED);
        halted
            && self
                .snapshot()
                .is_ok_and(|s| !Rflags::from_bits_retain(s.regs.rflags).contains(Rflags::IF))
    }

    /// A `hlt` exit: one of our `hlt` breakpoints, the end of a step, or the guest idling.
    fn on_hlt(&mut self, step: bool) -> VcpuStop {
        let state = match self.snapshot() {
            Ok(s) => s,
            Err(e) => return VcpuStop::RunError(e),
        };
        if let Some(pc) = self.hlt_breakpoint(state) {
            return VcpuStop::SwBreakpoint(pc);
        }
        if step {
            return VcpuStop::Step;
        }
        if !Rflags::from_bits_retain(state.regs.rflags).contains(Rflags::IF) {
            return VcpuStop::Halted;
        }
        // Interrupts are on but nothing in this machine raises one yet: idle without
        // spinning until the debugger kicks us.
        self.idle_until_kick()
    }

    /// At one of our `hlt` breakpoints ([`quirks::hlt_breakpoint`]) RIP is past it: move it
    /// back onto the breakpoint, as an int3 hit reports it, and return its address.
    fn hlt_breakpoint(&mut self, mut state: CpuSnapshot) -> Option<u64> {
        let planted = |pc| {
            self.debug
                .with(|b| b.sw.get(&pc).map(|bp| (bp.insn, bp.gpa)))
        };
        let bp = planted(state.linear_rip().wrapping_sub(1));
        let pc = quirks::hlt_breakpoint(
            state.linear_rip(),
            |_| bp.map(|(insn, _)| insn),
            |_| bp.and_then(|(_, gpa)| self.mem.read_obj::<u8>(gpa).ok()),
        )?;
        state.regs.rip = state.regs.rip.wrapping_sub(1);
        self.apply_state(Some(&StateChange {
            regs: Some(state.regs),
            sregs: None,
        }))
        .ok()?;
        Some(pc)
    }

    fn idle_until_kick(&mut self) -> VcpuStop {
        self.was_idle_hlt = true;
        self.kick.wait();
        self.vcpu.set_kvm_immediate_exit(0);
        VcpuStop::Kicked
    }

    /// A debug exit: a step, one of our breakpoints, or the guest's own int3 (which goes
    /// back to the guest; None means "keep running").
    fn on_debug(
        &mut self,
        step: bool,
        mask: Option<u64>,
        arch: kvm_bindings::kvm_debug_exit_arch,
    ) -> Option<VcpuStop> {
        Some(match arch.exception {
            DB_VECTOR => {
                let dr6 = Dr6::from_bits_retain(arch.dr6);
                if let Some((slot, handler)) = self.step_to_handler.take() {
                    if dr6.hit_slot() == Some(slot) && arch.pc == handler {
                        // The delivery of the guest's #BP reached its handler: the end of a
                        // step, or of a kicked continue; else the continue goes on without
                        // the handler's breakpoint.
                        if step {
                            return Some(VcpuStop::Step);
                        }
                        if self.kick.take() {
                            return Some(VcpuStop::Kicked);
                        }
                        self.applied = None;
                        self.apply_debug(step, mask);
                        return None;
                    }
                }
                if step && self.is_step_catch(dr6, arch.pc) {
                    // The stepped instruction faulted and its handler is about to run.
                    if let Ok(s) = self.snapshot() {
                        tables::untrap_fault_frame(&self.mem, &s.regs, &s.sregs, self.step_from);
                    }
                    return Some(VcpuStop::Step);
                }
                // An execute breakpoint is a fault taken before its instruction runs, with
                // its B bit set and BS clear (SDM Vol. 3, 18.2.3, 18.3.1.1); on a step it
                // means the step never left the instruction, which is that breakpoint's
                // (an unreported stop there: the run did not start from it). BS is the
                // step's own trap.
                let ours = dr6
                    .hit_slot()
                    .filter(|&n| self.debug.with(|b| b.hw[n] == Some(arch.pc)));
                match ours {
                    Some(slot) if !dr6.contains(Dr6::BS) => VcpuStop::HwBreakpoint {
                        slot,
                        addr: arch.pc,
                    },
                    _ => VcpuStop::Step,
                }
            }
            BP_VECTOR => {
                // Hardware KVM with KVM_GUESTDBG_USE_SW_BP: pc is the int3's address.
                let ours = self.debug.with(|b| b.sw.contains_key(&arch.pc));
                if ours {
                    VcpuStop::SwBreakpoint(arch.pc)
                } else if self.inject_guest_breakpoint(step, mask, Int3Report::DebugExit) {
                    return None;
                } else {
                    VcpuStop::GuestBreakpoint
                }
            }
            other => {
                log::warn!("vCPU {}: debug exit with exception {other}", self.id);
                VcpuStop::Step
            }
        })
    }

    /// Whether a debug exit at `pc` with `dr6` is one of the step's execute breakpoints at
    /// an exception handler ([`VcpuThread::step_catches`]), not the user's.
    fn is_step_catch(&self, dr6: Dr6, pc: u64) -> bool {
        self.step_catches.contains(&Some(pc))
            && self.debug.with(|b| {
                !b.hw.contains(&Some(pc))
                    && (0..crate::x86::DEBUG_SLOTS)
                        .any(|n| dr6.bits() & (1 << n) != 0 && b.hw[n].is_none())
            })
    }

    /// KVM_EXIT_INTERNAL_ERROR, classified by [`quirks::classify_internal_error`]; None
    /// means "keep running" (the guest's own int3 was delivered to it, or an instruction
    /// KVM could not run was completed).
    fn on_internal_error(&mut self, step: bool, mask: Option<u64>) -> Option<Exit> {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
        // member KVM filled in.
        let suberror = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let genuine = Exit::Stop(VcpuStop::InternalError { suberror });
        let Ok(state) = self.snapshot() else {
            return Some(genuine);
        };
        let pc = state.linear_rip();
        let planted = self.debug.with(|b| b.sw.get(&pc).copied());
        let mut exit = InternalErrorExit {
            suberror,
            planted_byte: planted.and_then(|bp| self.mem.read_obj::<u8>(bp.gpa).ok()),
            code_byte: self.code_byte(&state, pc),
            watches: self.debug.with(|b| !b.watch.is_empty()),
            completable: false,
        };
        // A breakpoint hit (ours, or the guest's int3) is the hot path on PVM: it is told
        // apart without decoding. Only what remains is decoded and, where the table has the
        // instruction, classified again as one to complete.
        let mut insn = None;
        if matches!(
            quirks::classify_internal_error(&exit),
            InternalErrorCause::Genuine | InternalErrorCause::NeedsRam
        ) && suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION
        {
            let decoded = complete::decode(&self.mem, &state);
            exit.completable = decoded
                .as_ref()
                .is_ok_and(|i| complete::lookup(i.mnemonic()).is_some());
            insn = Some(decoded);
        }
        let cause = match quirks::classify_internal_error(&exit) {
            InternalErrorCause::GuestInt3 => {
                // Deliver it to the guest, past the instruction.
                if self.inject_guest_breakpoint(step, mask, Int3Report::EmulationFailure) {
                    return None;
                }
                quirks::unexplained_emulation_failure(exit.watches)
            }
            InternalErrorCause::Complete => {
                let done = match &insn {
                    Some(Ok(i)) => self.complete_instruction(step, &state, i),
                    _ => Err(CannotComplete::Undecodable(pc)),
                };
                match done {
                    Ok(exit) => return exit,
                    Err(e) => {
                        log::warn!("vCPU {}: at {pc:#x}: {e}", self.id);
                        quirks::unexplained_emulation_failure(exit.watches)
                    }
                }
            }
            cause => cause,
        };
        if cause == InternalErrorCause::Genuine {
            match &insn {
                None => {}
                Some(Ok(i)) => log::warn!(
                    "vCPU {}: KVM could not run `{:?}` at {pc:#x} (no completion for it)",
                    self.id,
                    i.code()
                ),
                Some(Err(e)) => log::warn!(
                    "vCPU {}: KVM could not run the code at {pc:#x}: {e}",
                    self.id
                ),
            }
        }
        Some(match cause {
            InternalErrorCause::OurBreakpoint => {
                self.debug.learn_int3_fails(&self.mem);
                VcpuStop::SwBreakpoint(pc).into()
            }
            InternalErrorCause::NeedsRam => Exit::NeedsRam,
            InternalErrorCause::GuestInt3
            | InternalErrorCause::Complete
            | InternalErrorCause::Genuine => genuine,
        })
    }

    /// Completes `insn`, an instruction KVM could not run (`vmm::complete`), and says what
    /// follows: None to run on; the end of a step; or a watchpoint the instruction's memory
    /// access hit (reported after it, as the MMIO path reports one). An exception the
    /// instruction raises is handed to KVM, which delivers it on the next run (a step
    /// then ends at the handler, as for any faulting instruction).
    fn complete_instruction(
        &mut self,
        step: bool,
        state: &CpuSnapshot,
        insn: &iced_x86::Instruction,
    ) -> Result<Option<Exit>, CannotComplete> {
        match complete::complete(&self.vcpu, &self.mem, state, insn)? {
            Done::Executed { regs, accesses } => {
                let change = StateChange {
                    regs: Some(regs),
                    sregs: None,
                };
                if let Err(e) = self.apply_state(Some(&change)) {
                    return Ok(Some(VcpuStop::RunError(e).into()));
                }
                let hit = self.debug.with(|b| {
                    accesses
                        .iter()
                        .find_map(|a| b.watch_hit(a.gpa, a.len, a.write))
                });
                if let Some((kind, addr)) = hit {
                    return Ok(Some(VcpuStop::Watch { kind, addr }.into()));
                }
                Ok(step.then_some(VcpuStop::Step.into()))
            }
            Done::Raised(exception) => {
                log::debug!(
                    "vCPU {}: `{:?}` raises vector {} for the guest",
                    self.id,
                    insn.code(),
                    exception.vector
                );
                let sregs = complete::inject(&self.vcpu, &state.sregs, exception)?;
                if self.sync_regs {
                    self.vcpu.sync_regs_mut().sregs = sregs;
                }
                Ok(None)
            }
        }
    }

    /// The code byte at linear address `pc`, read through the guest's page tables.
    fn code_byte(&self, state: &CpuSnapshot, pc: u64) -> Option<u8> {
        let regs = state.paging_regs();
        let (gpa, _) = crate::x86::paging::translate_fast(
            &*self.mem,
            &regs,
            crate::x86::paging::GuestVirtAddr(pc),
        )
        .ok()?;
        self.mem.read_obj(gpa).ok()
    }
}

fn lock(d: &Mutex<Devices>) -> std::sync::MutexGuard<'_, Devices> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}
