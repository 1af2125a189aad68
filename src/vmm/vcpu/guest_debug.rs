//! Building and applying KVM_SET_GUEST_DEBUG for one vCPU: single-step, the execute
//! breakpoints in DR0–DR3, software breakpoints, and injecting the guest's own #BP.

use super::{BP_VECTOR, VcpuThread, tables};
use crate::vmm::debug::table::Breakpoints;
use crate::vmm::quirks::{self, Int3Report};
use crate::x86::{DEBUG_SLOTS, Dr7};
use kvm_bindings::{
    KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP, kvm_guest_debug,
};

/// The guest-debug configuration last applied, so an unchanged one costs no ioctl: every
/// vCPU ioctl costs as much as a VM exit on PVM (docs/kvm-quirks.md, "ioctl cost").
/// Compared by value, so breakpoint edits that leave KVM's view alone (gdb re-inserting its
/// software breakpoints on every resume) cost nothing either.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct AppliedDebug {
    generation: u64,
    step: bool,
    mask: Option<u64>,
    /// The handler addresses a step was given to catch (none outside a step).
    catch: Catches,
    control: u32,
    debugreg: [u64; 8],
}

/// Handler addresses, most wanted first, where a step ends if the stepped instruction
/// faults ([`tables::step_fault_handlers`]).
pub(super) type Catches = [Option<u64>; DEBUG_SLOTS];

/// How a single step treats interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StepIrq {
    /// KVM offers KVM_GUESTDBG_BLOCKIRQ.
    pub block_irq: bool,
    /// The debugger wants steps to keep interrupts blocked.
    pub masks_irq: bool,
}

/// The KVM_SET_GUEST_DEBUG argument for breakpoints `b`, `step`, and `mask` (a breakpoint
/// address to leave out while stepping over it). A step also gets an execute breakpoint at
/// each of the `catch` handlers, in order, in the debug registers `b` leaves free and at
/// addresses none of its breakpoints has: an exception the stepped instruction raises is
/// delivered without the single-step trap (delivery clears TF, and a faulting instruction
/// raises none: SDM Vol. 3, 6.12.1.3, 18.3.1.4), so without them the step would run on
/// through the handler; with them it ends before the handler's first instruction.
pub(super) fn guest_debug(
    b: &Breakpoints,
    step: bool,
    mask: Option<u64>,
    irq: StepIrq,
    catch: &Catches,
) -> kvm_guest_debug {
    let mut dbg = kvm_guest_debug::default();
    let mut control = 0;
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
        let masked = Breakpoints {
            hw,
            ..Default::default()
        };
        dbg.arch.debugreg[7] = masked.dr7();
    }
    if step {
        let mut free = (0..DEBUG_SLOTS).filter(|&n| b.hw[n].is_none());
        for &addr in catch.iter().flatten() {
            if b.hw.contains(&Some(addr)) {
                // The user's breakpoint there ends the step already.
                continue;
            }
            let Some(n) = free.next() else { break };
            // R/W and LEN stay 00: an execute breakpoint (SDM Vol. 3, 18.2.4).
            dbg.arch.debugreg[n] = addr;
            dbg.arch.debugreg[7] |= (Dr7::FIXED1 | Dr7::local_enable(n)).bits();
            control |= KVM_GUESTDBG_USE_HW_BP;
        }
    }
    if step {
        control |= KVM_GUESTDBG_SINGLESTEP;
        if irq.block_irq && irq.masks_irq {
            control |= KVM_GUESTDBG_BLOCKIRQ;
        }
    }
    if control != 0 {
        control |= KVM_GUESTDBG_ENABLE;
    }
    dbg.control = control;
    dbg
}

impl VcpuThread {
    fn step_irq(&self) -> StepIrq {
        StepIrq {
            block_irq: self.block_irq,
            masks_irq: self.debug.step_masks_irq(),
        }
    }

    /// The handlers this run's steps catch: [`VcpuThread::step_catches`] during a step,
    /// none otherwise, so the temporary breakpoints never outlive a step.
    fn catches(&self, step: bool) -> Catches {
        if step {
            self.step_catches
        } else {
            [None; DEBUG_SLOTS]
        }
    }

    fn current_guest_debug(&self, step: bool, mask: Option<u64>) -> kvm_guest_debug {
        let irq = self.step_irq();
        let catch = self.catches(step);
        self.debug.with(|b| guest_debug(b, step, mask, irq, &catch))
    }

    /// Applies the debug table for a run (`step`, `mask` as for [`guest_debug`]) unless
    /// KVM already has exactly that. Steps from one stop to the next under the same IDT
    /// catch the same handlers, so a run of them costs no ioctl either. After a stop at a
    /// caught handler the next step's catches differ (a handler at RIP is left out), so
    /// it re-applies: this matters, because the fault's delivery cleared the trap flag
    /// and KVM puts the one it steps with back only in KVM_SET_GUEST_DEBUG.
    pub(super) fn apply_debug(&mut self, step: bool, mask: Option<u64>) {
        let generation = self.debug.generation();
        let catch = self.catches(step);
        if let Some(a) = self.applied {
            if a.generation == generation && a.step == step && a.mask == mask && a.catch == catch {
                return;
            }
        }
        let dbg = self.current_guest_debug(step, mask);
        let want = AppliedDebug {
            generation,
            step,
            mask,
            catch,
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

    /// Delivers a `#BP` the guest raised itself to the guest's own handler, first moving
    /// RIP as [`quirks::guest_int3_rip_advance`] says for how the int3 was `reported`.
    ///
    /// During a step the delivery runs without KVM's single-step: KVM steps with
    /// RFLAGS.TF, and the CPU saves RFLAGS, TF included, in the exception frame before it
    /// clears TF (SDM Vol. 3, 6.12.1.3), so the handler's `iret` would turn the trap flag
    /// on in the guest. Instead an execute breakpoint in a free debug register at the
    /// handler's first instruction ends the step there, before that instruction runs, as
    /// a step into a handler should (SDM Vol. 3, 18.3.1.4). Without a free slot or a
    /// handler to name, the step falls back to KVM's single-step.
    pub(super) fn inject_guest_breakpoint(
        &mut self,
        step: bool,
        mask: Option<u64>,
        reported: Int3Report,
    ) -> bool {
        let advance = quirks::guest_int3_rip_advance(reported);
        let mut state = match self.snapshot() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("vCPU {}: cannot read the registers: errno {e}", self.id);
                return false;
            }
        };
        if advance != 0 {
            // KVM_SET_REGS drops a pending exception, so RIP must be written before the
            // injection, and by ioctl: a dirty sync_regs set would land after it.
            state.regs.rip = state.regs.rip.wrapping_add(advance);
            if let Err(e) = self.vcpu.set_regs(&state.regs) {
                log::warn!("vCPU {}: KVM_SET_REGS failed: {e}", self.id);
                return false;
            }
            if self.sync_regs {
                self.vcpu.sync_regs_mut().regs = state.regs;
            }
        }
        // The handler's breakpoint also bounds a continue's delivery run, so that run can
        // be made immune to kicks (see `VcpuThread::bp_delivery`): once KVM has queued the
        // #BP, a kick must not report a stop with it still queued, invisible to the
        // debugger, to be delivered by a later step with the trap flag in its frame.
        let handler_stop = {
            let free = self.debug.with(|b| b.hw.iter().position(Option::is_none));
            free.zip(tables::exception_handler(
                &self.mem,
                &state.sregs,
                BP_VECTOR as u8,
            ))
        };
        let mut dbg = self.current_guest_debug(step && handler_stop.is_none(), mask);
        if let Some((slot, handler)) = handler_stop {
            // R/W and LEN of the slot stay 00: an execute breakpoint (SDM Vol. 3, 18.2.4).
            dbg.arch.debugreg[slot] = handler;
            dbg.arch.debugreg[7] |= (Dr7::FIXED1 | Dr7::local_enable(slot)).bits();
            dbg.control |= KVM_GUESTDBG_USE_HW_BP;
        }
        dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP;
        // The inject bit (and the handler's slot) is an action, not a setting: re-apply the
        // plain table next run.
        self.applied = None;
        match self.vcpu.set_guest_debug(&dbg) {
            Ok(()) => {
                self.step_to_handler = handler_stop;
                self.bp_delivery = handler_stop.is_some();
                true
            }
            Err(e) => {
                log::warn!("vCPU {}: injecting the guest's #BP failed: {e}", self.id);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::debug::table::SwBreakpoint;
    use vm_memory::GuestAddress;

    const IRQ: StepIrq = StepIrq {
        block_irq: true,
        masks_irq: true,
    };
    const NONE: Catches = [None; DEBUG_SLOTS];

    #[test]
    fn nothing_to_debug_leaves_guest_debug_off() {
        let dbg = guest_debug(&Breakpoints::default(), false, None, IRQ, &NONE);
        assert_eq!(dbg.control, 0);
    }

    #[test]
    fn a_step_blocks_interrupts_only_when_kvm_can_and_the_debugger_wants_it() {
        let b = Breakpoints::default();
        let on = guest_debug(&b, true, None, IRQ, &NONE).control;
        assert_eq!(
            on,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_BLOCKIRQ
        );
        let off = StepIrq {
            masks_irq: false,
            ..IRQ
        };
        assert_eq!(
            guest_debug(&b, true, None, off, &NONE).control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP
        );
    }

    #[test]
    fn the_masked_breakpoint_leaves_its_debug_register() {
        let mut b = Breakpoints::default();
        b.hw[0] = Some(0x1000);
        b.hw[2] = Some(0x3000);
        let dbg = guest_debug(&b, false, None, IRQ, &NONE);
        assert_eq!(dbg.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
        assert_eq!(dbg.arch.debugreg[..4], [0x1000, 0, 0x3000, 0]);
        assert_eq!(dbg.arch.debugreg[7], (1 << 10) | 1 | (1 << 4));
        let masked = guest_debug(&b, true, Some(0x1000), IRQ, &NONE);
        assert_eq!(masked.arch.debugreg[..4], [0, 0, 0x3000, 0]);
        assert_eq!(masked.arch.debugreg[7], (1 << 10) | (1 << 4));
    }

    #[test]
    fn software_breakpoints_stay_enabled_once_planted() {
        let mut b = Breakpoints::default();
        b.sw.insert(
            0x2000,
            SwBreakpoint {
                gpa: GuestAddress(0x2000),
                orig: 0x90,
                insn: 0xcc,
            },
        );
        let with = guest_debug(&b, false, None, IRQ, &NONE).control;
        assert_eq!(with, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP);
        b.sw.clear();
        b.sw_sticky = true;
        assert_eq!(guest_debug(&b, false, None, IRQ, &NONE).control, with);
    }

    #[test]
    fn a_step_catches_handlers_in_the_free_slots_only() {
        let mut b = Breakpoints::default();
        b.hw[1] = Some(0x1000);
        let catch = [Some(0xa000), Some(0x1000), Some(0xb000), Some(0xc000)];
        let dbg = guest_debug(&b, true, None, IRQ, &catch);
        // 0x1000 is the user's breakpoint already; the others fill slots 0, 2, 3.
        assert_eq!(dbg.arch.debugreg[..4], [0xa000, 0x1000, 0xb000, 0xc000]);
        assert_eq!(
            dbg.arch.debugreg[7],
            (1 << 10) | 1 | (1 << 2) | (1 << 4) | (1 << 6)
        );
        assert_ne!(dbg.control & KVM_GUESTDBG_USE_HW_BP, 0);
        // The masked slot stays the user's: no catch moves into it.
        let masked = guest_debug(&b, true, Some(0x1000), IRQ, &catch);
        assert_eq!(masked.arch.debugreg[..4], [0xa000, 0, 0xb000, 0xc000]);
        assert_eq!(masked.arch.debugreg[7] & (0b11 << 2), 0);
        // No step, no catches.
        let cont = guest_debug(&b, false, None, IRQ, &catch);
        assert_eq!(cont.arch.debugreg[..4], [0, 0x1000, 0, 0]);
    }
}
