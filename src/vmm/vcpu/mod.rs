//! One vCPU on its own thread. The thread owns its `VcpuFd`; everything else talks to it
//! through requests, and it reports each stop as a [`VcpuStop`] with a register snapshot.

use super::debug::{DebugTable, HLT, INT3};
use super::devices::{Devices, IoAction};
use crate::memory::GuestMem;
use kvm_bindings::{
    KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP, KVM_INTERNAL_ERROR_EMULATION, kvm_guest_debug,
    kvm_regs, kvm_sregs, kvm_xsave,
};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// Why a vCPU stopped. This is the VMM's own vocabulary; only `src/gdb/` maps it to gdb's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStop {
    /// A software breakpoint of ours at this linear address.
    SwBreakpoint(u64),
    /// A debug-register execute breakpoint in slot `slot` at linear address `addr`.
    HwBreakpoint {
        /// DR0–DR3 index.
        slot: usize,
        /// The breakpoint's linear address.
        addr: u64,
    },
    /// A watchpoint caught an access; `addr` is the linear address of the first watched
    /// byte the access touched. The access has completed.
    Watch {
        /// What the watchpoint catches.
        kind: super::debug::watch::WatchKind,
        /// Linear address hit.
        addr: u64,
    },
    /// KVM could not run an instruction, and watchpoints have taken pages out of guest
    /// RAM's memory slots: KVM cannot fetch code from such a page, and its emulator cannot
    /// do some accesses (`lidt` from MMIO, say) to one. The controller runs the instruction
    /// again with the pages mapped; this never reaches gdb.
    NeedsRam,
    /// A single step finished.
    Step,
    /// Pulled out of KVM_RUN by a kick.
    Kicked,
    /// `hlt` with interrupts disabled: nothing can ever wake it.
    Halted,
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    Shutdown,
    /// The guest executed an `int3` that is not one of our breakpoints.
    GuestBreakpoint,
    /// The guest wrote to isa-debug-exit; the machine ends with this status.
    Exit(u32),
    /// KVM could not run the guest (KVM_EXIT_INTERNAL_ERROR).
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
    },
    /// VM entry failed (KVM_EXIT_FAIL_ENTRY).
    FailEntry(u64),
    /// KVM_RUN returned an error.
    RunError(i32),
    /// An exit kvmgdb does not handle.
    UnhandledExit(u32),
}

impl VcpuStop {
    /// True if the vCPU cannot usefully run again: it stays frozen for inspection.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            VcpuStop::Halted
                | VcpuStop::Shutdown
                | VcpuStop::Exit(_)
                | VcpuStop::InternalError { .. }
                | VcpuStop::FailEntry(_)
                | VcpuStop::RunError(_)
                | VcpuStop::UnhandledExit(_)
        )
    }

    /// A one-line description for users.
    pub fn describe(&self) -> String {
        match self {
            VcpuStop::SwBreakpoint(a) => format!("software breakpoint at {a:#x}"),
            VcpuStop::HwBreakpoint { slot, addr } => {
                format!("hardware breakpoint {slot} at {addr:#x}")
            }
            VcpuStop::Watch { kind, addr } => format!("{kind:?} watchpoint hit at {addr:#x}"),
            VcpuStop::NeedsRam => "an instruction KVM cannot run against a watched page".into(),
            VcpuStop::Step => "single step".into(),
            VcpuStop::Kicked => "interrupted".into(),
            VcpuStop::Halted => "halted with interrupts disabled (hlt, IF=0)".into(),
            VcpuStop::Shutdown => "triple fault: the guest shut down (KVM_EXIT_SHUTDOWN)".into(),
            VcpuStop::GuestBreakpoint => "the guest executed its own int3".into(),
            VcpuStop::Exit(c) => format!("the guest exited through isa-debug-exit with status {c}"),
            VcpuStop::InternalError { suberror } => format!(
                "KVM internal error (suberror {suberror}{}): KVM could not run the instruction",
                if *suberror == KVM_INTERNAL_ERROR_EMULATION {
                    ", emulation failure"
                } else {
                    ""
                }
            ),
            VcpuStop::FailEntry(r) => format!("VM entry failed (hardware reason {r:#x})"),
            VcpuStop::RunError(e) => {
                format!("KVM_RUN failed: {}", std::io::Error::from_raw_os_error(*e))
            }
            VcpuStop::UnhandledExit(r) => format!("unhandled KVM exit reason {r}"),
        }
    }
}

/// The registers every stop carries (from kvm_run sync_regs when KVM offers it).
#[derive(Clone, Copy, Default)]
pub struct CpuSnapshot {
    /// General-purpose registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER.
    pub sregs: kvm_sregs,
}

impl CpuSnapshot {
    /// The linear address of the next instruction: CS.base + RIP outside 64-bit mode.
    pub fn linear_rip(&self) -> u64 {
        linear_pc(&self.regs, &self.sregs)
    }
}

fn linear_pc(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    if sregs.cs.l != 0 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    }
}

/// Work for a vCPU thread.
pub enum VcpuRequest {
    /// Run until the next stop (one instruction when `step`), after applying `state` if given.
    Run {
        /// Single-step instead of continuing.
        step: bool,
        /// Registers changed by the debugger since the last stop.
        state: Option<Box<StateChange>>,
    },
    /// Read the FPU/SSE/AVX state (KVM_GET_XSAVE).
    GetXsave,
    /// Write the FPU/SSE/AVX state (KVM_SET_XSAVE).
    SetXsave(Box<kvm_xsave>),
    /// Read model-specific registers (KVM_GET_MSRS).
    GetMsrs(Vec<u32>),
    /// Read the XSAVE area and some MSRs in one hand-off: what a debugger's full register
    /// read needs beyond the snapshot.
    GetXsaveAndMsrs(Vec<u32>),
    /// Write one model-specific register (KVM_SET_MSRS).
    SetMsr(u32, u64),
    /// Read the debug registers DR0–DR3, DR6, DR7 (KVM_GET_DEBUGREGS).
    GetDebugRegs,
    /// Read pending exception/interrupt/NMI state (KVM_GET_VCPU_EVENTS).
    GetEvents,
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

/// Synchronous answers to requests other than `Run`.
pub enum VcpuReply {
    /// The FPU state, or the error reading it.
    Xsave(Result<Box<kvm_xsave>, i32>),
    /// The result of a write.
    Done(Result<(), i32>),
    /// MSR values read; MSRs KVM would not read are missing.
    Msrs(Result<Vec<(u32, u64)>, i32>),
    /// Both, for `GetXsaveAndMsrs`.
    XsaveAndMsrs(Result<Box<kvm_xsave>, i32>, Result<Vec<(u32, u64)>, i32>),
    /// Debug registers.
    DebugRegs(Result<kvm_bindings::kvm_debugregs, i32>),
    /// Pending events.
    Events(Result<kvm_bindings::kvm_vcpu_events, i32>),
}

/// A stop, sent to the controller.
pub struct VcpuEvent {
    /// Which vCPU.
    pub id: usize,
    /// Why it stopped.
    pub stop: VcpuStop,
    /// Its registers at the stop.
    pub state: CpuSnapshot,
}

/// State shared between a vCPU thread and whoever kicks it.
#[derive(Default)]
pub struct KickState {
    kicked: AtomicBool,
    idle: Mutex<()>,
    wake: Condvar,
}

impl KickState {
    /// Marks a kick; the caller then signals the thread (see `Vm::kick`).
    pub fn request(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        let _guard = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    fn take(&self) -> bool {
        self.kicked.swap(false, Ordering::SeqCst)
    }
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, for the kick signal handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal's handler: make the current or next KVM_RUN return EINTR at once
/// (KVM API 5. "immediate_exit"), closing the race where the signal lands just before
/// the thread enters KVM_RUN.
pub extern "C" fn kick_signal_handler(
    _num: libc::c_int,
    _info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // `try_with` and a const-initialised Cell: no allocation and no lock, async-signal-safe.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let ptr = p.get();
        if !ptr.is_null() {
            // SAFETY: a non-null pointer was stored by this thread's `VcpuThread::run_loop`
            // and points into its kvm_run mapping, which outlives the pointer: it is reset
            // to null before the `VcpuFd` (and the mapping) is dropped.
            unsafe { std::ptr::write_volatile(ptr, 1) };
        }
    });
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
    /// Synchronous replies out.
    pub replies: Sender<VcpuReply>,
    /// Stops out.
    pub events: Sender<VcpuEvent>,
    /// Written after each event so the controller's poll wakes.
    pub notify: Arc<EventFd>,
    /// Set when the last stop interrupted an idle `hlt`, which resuming goes back to.
    pub(super) was_idle_hlt: bool,
    /// The guest-debug configuration last applied.
    pub(super) applied: Option<AppliedDebug>,
}

/// The guest-debug configuration last applied, so an unchanged one costs no ioctl: every
/// vCPU ioctl costs as much as a VM exit on PVM (KVM-FACTS.md). Compared by value, so
/// breakpoint edits that leave KVM's view alone (gdb re-inserting its software breakpoints
/// on every resume) cost nothing either.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct AppliedDebug {
    generation: u64,
    step: bool,
    mask: Option<u64>,
    control: u32,
    debugreg: [u64; 8],
}

const RFLAGS_IF: u64 = 1 << 9;
const DR6_BS: u64 = 1 << 14;
const DB_VECTOR: u32 = 1;
const BP_VECTOR: u32 = 3;

impl VcpuThread {
    /// The thread body: serve requests until `Quit` or the controller goes away.
    pub fn run_loop(mut self) {
        let ptr: *mut u8 = &mut self.vcpu.get_kvm_run().immediate_exit;
        IMMEDIATE_EXIT.with(|p| p.set(ptr));
        if self.sync_regs {
            self.vcpu.set_sync_valid_reg(SyncReg::Register);
            self.vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        }
        let mut halted_idle = false;
        while let Ok(req) = self.requests.recv() {
            match req {
                VcpuRequest::Run { step, state } => {
                    // New registers from the debugger (a reset, a changed RIP) end an idle halt.
                    if state.is_some() {
                        halted_idle = false;
                    }
                    let stop = match self.apply_state(state.as_deref()) {
                        Err(e) => VcpuStop::RunError(e),
                        Ok(()) if halted_idle && !step => self.idle_until_kick(),
                        Ok(()) => self.run(step),
                    };
                    halted_idle = stop == VcpuStop::Kicked && self.was_idle_hlt;
                    self.was_idle_hlt = false;
                    let state = self.snapshot();
                    let event = VcpuEvent {
                        id: self.id,
                        stop,
                        state,
                    };
                    if self.events.send(event).is_err() {
                        break;
                    }
                    let _ = self.notify.write(1);
                }
                VcpuRequest::GetXsave => {
                    let r = self.vcpu.get_xsave().map(Box::new).map_err(|e| e.errno());
                    let _ = self.replies.send(VcpuReply::Xsave(r));
                }
                VcpuRequest::SetXsave(x) => {
                    // SAFETY: `x` is a whole `kvm_xsave` (4 KiB), the size KVM_SET_XSAVE reads.
                    let r = unsafe { self.vcpu.set_xsave(&x) }.map_err(|e| e.errno());
                    let _ = self.replies.send(VcpuReply::Done(r));
                }
                VcpuRequest::GetXsaveAndMsrs(indices) => {
                    let x = self.vcpu.get_xsave().map(Box::new).map_err(|e| e.errno());
                    let m = self.get_msrs(&indices);
                    let _ = self.replies.send(VcpuReply::XsaveAndMsrs(x, m));
                }
                VcpuRequest::GetMsrs(indices) => {
                    let _ = self.replies.send(VcpuReply::Msrs(self.get_msrs(&indices)));
                }
                VcpuRequest::SetMsr(index, data) => {
                    let r = self.set_msr(index, data);
                    let _ = self.replies.send(VcpuReply::Done(r));
                }
                VcpuRequest::GetDebugRegs => {
                    let r = self.vcpu.get_debug_regs().map_err(|e| e.errno());
                    let _ = self.replies.send(VcpuReply::DebugRegs(r));
                }
                VcpuRequest::GetEvents => {
                    let r = self.vcpu.get_vcpu_events().map_err(|e| e.errno());
                    let _ = self.replies.send(VcpuReply::Events(r));
                }
                VcpuRequest::Quit => break,
            }
        }
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
    }

    fn get_msrs(&self, indices: &[u32]) -> Result<Vec<(u32, u64)>, i32> {
        let entries: Vec<kvm_bindings::kvm_msr_entry> = indices
            .iter()
            .map(|&index| kvm_bindings::kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = kvm_bindings::Msrs::from_entries(&entries).map_err(|_| libc::E2BIG)?;
        // KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it read.
        let n = self.vcpu.get_msrs(&mut msrs).map_err(|e| e.errno())?;
        Ok(msrs.as_slice()[..n]
            .iter()
            .map(|e| (e.index, e.data))
            .collect())
    }

    fn set_msr(&self, index: u32, data: u64) -> Result<(), i32> {
        let msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
            index,
            data,
            ..Default::default()
        }])
        .map_err(|_| libc::E2BIG)?;
        match self.vcpu.set_msrs(&msrs) {
            Ok(1) => Ok(()),
            Ok(_) => Err(libc::EINVAL),
            Err(e) => Err(e.errno()),
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
    /// dirty sets not yet loaded by KVM are the newest values). Free with sync_regs.
    fn snapshot(&mut self) -> CpuSnapshot {
        if self.sync_regs {
            let s = self.vcpu.sync_regs();
            return CpuSnapshot {
                regs: s.regs,
                sregs: s.sregs,
            };
        }
        CpuSnapshot {
            regs: self.vcpu.get_regs().unwrap_or_default(),
            sregs: self.vcpu.get_sregs().unwrap_or_default(),
        }
    }

    /// Runs to the next stop. A breakpoint of ours under the current instruction is stepped
    /// over first with that breakpoint masked (RF is not honoured everywhere; KVM-FACTS.md),
    /// so resuming executes the instruction under it exactly once.
    fn run(&mut self, step: bool) -> VcpuStop {
        let pc = self.snapshot().linear_rip();
        let bp_here = self
            .debug
            .with(|b| b.sw.contains_key(&pc) || b.hw_slot_at(pc).is_some());
        if bp_here {
            let stop = self.run_masked(true, pc);
            if step || stop != VcpuStop::Step {
                return stop;
            }
        }
        self.run_inner(step, None)
    }

    fn run_masked(&mut self, step: bool, pc: u64) -> VcpuStop {
        let sw = self.debug.with(|b| b.sw.get(&pc).copied());
        if let Some(bp) = sw {
            let _ = self.mem.write_obj(bp.orig, bp.gpa);
        }
        let stop = self.run_inner(step, Some(pc));
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
        stop
    }

    fn apply_debug(&mut self, step: bool, mask: Option<u64>) {
        let generation = self.debug.generation();
        if let Some(a) = self.applied {
            if a.generation == generation && a.step == step && a.mask == mask {
                return;
            }
        }
        let dbg = self.guest_debug(step, mask);
        let want = AppliedDebug {
            generation,
            step,
            mask,
            control: dbg.control,
            debugreg: dbg.arch.debugreg,
        };
        if self
            .applied
            .is_some_and(|a| (a.control, a.debugreg) == (want.control, want.debugreg))
        {
            self.applied = Some(want);
            return;
        }
        match self.vcpu.set_guest_debug(&dbg) {
            Ok(()) => self.applied = Some(want),
            Err(e) => log::warn!("vCPU {}: KVM_SET_GUEST_DEBUG failed: {e}", self.id),
        }
    }

    /// The KVM_SET_GUEST_DEBUG argument for the current table, `step`, and `mask` (a
    /// breakpoint address to leave out while stepping over it).
    fn guest_debug(&self, step: bool, mask: Option<u64>) -> kvm_guest_debug {
        let mut dbg = kvm_guest_debug::default();
        let mut control = 0;
        self.debug.with(|b| {
            if !b.sw.is_empty() || b.sw_sticky {
                control |= KVM_GUESTDBG_USE_SW_BP;
            }
            let mut any_hw = false;
            let mut hw = b.hw;
            for slot in hw.iter_mut() {
                if mask.is_some() && *slot == mask {
                    *slot = None;
                }
            }
            for (n, slot) in hw.iter().enumerate() {
                if let Some(addr) = slot {
                    dbg.arch.debugreg[n] = *addr;
                    any_hw = true;
                }
            }
            if any_hw {
                control |= KVM_GUESTDBG_USE_HW_BP;
                let masked = super::debug::Breakpoints {
                    hw,
                    ..Default::default()
                };
                dbg.arch.debugreg[7] = masked.dr7();
            }
        });
        if step {
            control |= KVM_GUESTDBG_SINGLESTEP;
            if self.block_irq && self.debug.step_masks_irq() {
                control |= KVM_GUESTDBG_BLOCKIRQ;
            }
        }
        if control != 0 {
            control |= KVM_GUESTDBG_ENABLE;
        }
        dbg.control = control;
        dbg
    }

    /// Delivers a `#BP` the guest raised itself to the guest's own handler. `advance` is
    /// how far RIP must move first so the handler's frame points after the int3: 0 on
    /// hardware KVM, which injects #BP as a software exception with the exit's instruction
    /// length; the int3's length on PVM, whose injection pushes RIP as it is (KVM-FACTS.md).
    fn inject_guest_breakpoint(&mut self, step: bool, mask: Option<u64>, advance: u64) -> bool {
        if advance != 0 {
            // KVM_SET_REGS drops a pending exception, so RIP must be written before the
            // injection, and by ioctl: a dirty sync_regs set would land after it.
            let mut regs = self.snapshot().regs;
            regs.rip = regs.rip.wrapping_add(advance);
            if let Err(e) = self.vcpu.set_regs(&regs) {
                log::warn!("vCPU {}: KVM_SET_REGS failed: {e}", self.id);
                return false;
            }
            if self.sync_regs {
                self.vcpu.sync_regs_mut().regs = regs;
            }
        }
        let mut dbg = self.guest_debug(step, mask);
        dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP;
        // The inject bit is an action, not a setting: re-apply the plain table next run.
        self.applied = None;
        match self.vcpu.set_guest_debug(&dbg) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("vCPU {}: injecting the guest's #BP failed: {e}", self.id);
                false
            }
        }
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

    fn run_inner(&mut self, step: bool, mask: Option<u64>) -> VcpuStop {
        self.apply_debug(step, mask);
        if self.kick.take() {
            return VcpuStop::Kicked;
        }
        loop {
            let mut io_done = false;
            let mut watch_hit = None;
            let stop = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    io_done = true;
                    let action = lock(&self.devices).io_out(port, data);
                    match action {
                        IoAction::Exit(code) => Some(VcpuStop::Exit(code)),
                        IoAction::Continue => None,
                    }
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    io_done = true;
                    lock(&self.devices).io_in(port, data);
                    None
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    io_done = true;
                    // RAM behind a watchpoint's missing slot: complete the read from RAM.
                    if self.mem.read_slice(data, GuestAddress(addr)).is_ok() {
                        let len = data.len() as u64;
                        watch_hit = self.debug.with(|b| b.watch_hit(addr, len, false));
                    } else {
                        lock(&self.devices).mmio_read(addr, data);
                    }
                    None
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    io_done = true;
                    // RAM behind a watchpoint's read-only or missing slot: the VMM performs
                    // the write the guest asked for.
                    if self.mem.write_slice(data, GuestAddress(addr)).is_ok() {
                        let len = data.len() as u64;
                        watch_hit = self.debug.with(|b| b.watch_hit(addr, len, true));
                    } else {
                        lock(&self.devices).mmio_write(addr, data);
                    }
                    None
                }
                Ok(VcpuExit::Hlt) => Some(match self.hlt_breakpoint() {
                    Some(pc) => VcpuStop::SwBreakpoint(pc),
                    None if step => VcpuStop::Step,
                    None => self.on_hlt(),
                }),
                Ok(VcpuExit::Debug(arch)) => self.on_debug(step, mask, arch),
                Ok(VcpuExit::Shutdown) => Some(VcpuStop::Shutdown),
                Ok(VcpuExit::InternalError) => self.on_internal_error(step, mask),
                Ok(VcpuExit::FailEntry(reason, _cpu)) => Some(VcpuStop::FailEntry(reason)),
                Ok(VcpuExit::Intr) => {
                    if self.kick.take() {
                        Some(VcpuStop::Kicked)
                    } else {
                        None
                    }
                }
                Ok(VcpuExit::Unsupported(r)) => Some(VcpuStop::UnhandledExit(r)),
                Ok(other) => {
                    log::warn!("vCPU {}: unexpected exit {other:?}", self.id);
                    Some(VcpuStop::UnhandledExit(u32::MAX))
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.vcpu.set_kvm_immediate_exit(0);
                    if self.kick.take() {
                        Some(VcpuStop::Kicked)
                    } else {
                        None
                    }
                }
                Err(e) => Some(VcpuStop::RunError(e.errno())),
            };
            if let Some((kind, addr)) = watch_hit {
                // Report after the instruction has completed, as a data breakpoint does.
                self.complete_io();
                return VcpuStop::Watch { kind, addr };
            }
            match stop {
                Some(VcpuStop::Exit(code)) => return VcpuStop::Exit(code),
                Some(stop) => return stop,
                None if io_done && step => {
                    // KVM-FACTS.md: stepping over an I/O or MMIO-write exit gets no #DB on
                    // PVM, and a plain re-entry would run one more instruction.
                    self.complete_io();
                    return VcpuStop::Step;
                }
                None if io_done && self.kick.take() => {
                    self.complete_io();
                    return VcpuStop::Kicked;
                }
                None => {}
            }
        }
    }

    /// A `hlt` exit at one of our `hlt` breakpoints: RIP is past it, so move it back onto the
    /// breakpoint, as an int3 hit reports it, and return the breakpoint's address.
    fn hlt_breakpoint(&mut self) -> Option<u64> {
        let mut state = self.snapshot();
        let pc = state.linear_rip().wrapping_sub(1);
        let bp = self.debug.with(|b| b.sw.get(&pc).copied())?;
        if bp.insn != HLT || self.mem.read_obj::<u8>(bp.gpa).ok() != Some(HLT) {
            return None;
        }
        state.regs.rip = state.regs.rip.wrapping_sub(1);
        self.apply_state(Some(&StateChange {
            regs: Some(state.regs),
            sregs: None,
        }))
        .ok()?;
        Some(pc)
    }

    fn on_hlt(&mut self) -> VcpuStop {
        let rflags = self.snapshot().regs.rflags;
        if rflags & RFLAGS_IF == 0 {
            return VcpuStop::Halted;
        }
        // Interrupts are on but nothing in this machine raises one yet: idle without
        // spinning until the debugger kicks us.
        self.idle_until_kick()
    }

    fn idle_until_kick(&mut self) -> VcpuStop {
        self.was_idle_hlt = true;
        let mut guard = self.kick.idle.lock().unwrap_or_else(|e| e.into_inner());
        while !self.kick.kicked.load(Ordering::SeqCst) {
            guard = self
                .kick
                .wake
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(guard);
        self.kick.take();
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
                let slot = (0..4).find(|n| arch.dr6 & (1 << n) != 0);
                if step || arch.dr6 & DR6_BS != 0 {
                    return Some(VcpuStop::Step);
                }
                match slot {
                    Some(slot) => VcpuStop::HwBreakpoint {
                        slot,
                        addr: arch.pc,
                    },
                    None => VcpuStop::Step,
                }
            }
            BP_VECTOR => {
                // Hardware KVM with KVM_GUESTDBG_USE_SW_BP: pc is the int3's address.
                let ours = self.debug.with(|b| b.sw.contains_key(&arch.pc));
                if ours {
                    VcpuStop::SwBreakpoint(arch.pc)
                } else if self.inject_guest_breakpoint(step, mask, 0) {
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

    /// PVM (KVM-FACTS.md): with no hardware VMX, CPL0 code is emulated and the emulator gives
    /// up on `int3`: KVM_EXIT_INTERNAL_ERROR, suberror EMULATION, RIP at the int3, vCPU
    /// intact. When that int3 is one we planted, it is our breakpoint; anything else is a
    /// real internal error.
    fn on_internal_error(&mut self, step: bool, mask: Option<u64>) -> Option<VcpuStop> {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
        // member KVM filled in.
        let suberror = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
        if suberror == KVM_INTERNAL_ERROR_EMULATION {
            let state = self.snapshot();
            let pc = state.linear_rip();
            let bp = self.debug.with(|b| b.sw.get(&pc).copied());
            if let Some(bp) = bp {
                let byte: u8 = self.mem.read_obj(bp.gpa).unwrap_or(0);
                if byte == INT3 {
                    self.debug.use_hlt_breakpoints(&self.mem);
                    return Some(VcpuStop::SwBreakpoint(pc));
                }
            }
            // The guest's own int3: deliver it to the guest, past the instruction.
            if self.code_byte(&state, pc) == Some(INT3)
                && self.inject_guest_breakpoint(step, mask, 1)
            {
                return None;
            }
            if self.debug.with(|b| !b.watch.is_empty()) {
                return Some(VcpuStop::NeedsRam);
            }
        }
        Some(VcpuStop::InternalError { suberror })
    }

    /// The code byte at linear address `pc`, read through the guest's page tables.
    fn code_byte(&self, state: &CpuSnapshot, pc: u64) -> Option<u8> {
        let regs = crate::paging::PagingRegs {
            cr0: state.sregs.cr0,
            cr3: state.sregs.cr3,
            cr4: state.sregs.cr4,
            efer: state.sregs.efer,
        };
        let (gpa, _) =
            crate::paging::translate_fast(&*self.mem, &regs, crate::paging::GuestVirtAddr(pc))
                .ok()?;
        self.mem.read_obj(gpa).ok()
    }
}

fn lock(d: &Mutex<Devices>) -> std::sync::MutexGuard<'_, Devices> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}
