//! Every place where this machine's KVM behaves differently from hardware KVM, as named,
//! pure decisions. The development and CI machines run PVM (`kvm_pvm`), a software KVM
//! without VMX that emulates all CPL0 code; users mostly run hardware KVM, where the
//! documented KVM API holds. The standard path stays the one for hardware KVM: each
//! decision here spots a PVM signature when it shows up and picks the fallback that works.
//!
//! Each function states its precondition and checks it, so a caller that breaks one gets
//! the standard behaviour rather than a silent misreport. The facts behind them, with how
//! each was measured, are in `docs/kvm-quirks.md`.

use super::debug::table::{HLT, INT3};
use super::stop::VcpuStop;
use kvm_bindings::KVM_INTERNAL_ERROR_EMULATION;
use std::time::Duration;

/// The length of `int3` (0xCC) and of `hlt` (0xF4): one byte each (SDM Vol. 2A).
const ONE_BYTE_INSN: u64 = 1;

/// What the VM set up that the decisions depend on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineFacts {
    /// Whether the VM created an in-kernel interrupt controller (KVM_CREATE_IRQCHIP). With
    /// one, `hlt` blocks inside KVM until an interrupt instead of exiting to the VMM
    /// (docs/kvm-quirks.md, "hlt"). kvmgdb creates one wherever KVM offers it
    /// (KVM_CAP_IRQCHIP); a halt is then noticed by `vcpu::halt_watch`.
    pub in_kernel_irqchip: bool,
    /// Whether `/dev/kvm` is PVM ([`detect_pvm`]).
    pub pvm: bool,
}

/// Where the running kernel lists its loaded modules (sysfs, Documentation/ABI
/// "/sys/module"): PVM is the `kvm_pvm` module, hardware KVM `kvm_intel` or `kvm_amd`.
const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Whether this machine's KVM is PVM: the `kvm_pvm` module is loaded. Used only for the
/// CPUID facts below, which no KVM capability or CPUID bit reveals (KVM_SET_CPUID2 takes
/// a cleared bit silently whether or not the guest will see it cleared).
pub fn detect_pvm() -> bool {
    std::path::Path::new(PVM_MODULE).exists()
}

/// The CPUID.01H:ECX bits of `cx16` (CMPXCHG16B) to hide from the guest. PVM's emulator
/// cannot run `lock cmpxchg16b` at CPL0 (Linux dies on it in the slab allocator) and
/// honours the cleared bit, so the kernel takes its fallback (docs/kvm-quirks.md, "CPUID").
/// Hardware KVM runs the instruction: nothing is hidden there. XSAVE, POPCNT and SMAP would
/// need hiding too, but PVM ignores those bits: the guest must be told (`noxsave
/// clearcpuid=…`) or the instructions completed.
pub fn cpuid_ecx1_hidden(machine: MachineFacts, cx16: u32) -> u32 {
    if machine.pvm { cx16 } else { 0 }
}

/// Paravirtual features (CPUID 0x4000_0001 EAX) to hide on this KVM besides those the
/// machine model lacks (`cpuid::machine_cpuid`). On PVM (measured: docs/kvm-quirks.md,
/// "CPUID"): `vmcall` at CPL0 hangs the vCPU, so every feature the guest drives by
/// hypercall goes (PV_UNHALT's KVM_HC_KICK_CPU, PV_SEND_IPI, PV_SCHED_YIELD); and a guest
/// `wrmsr` of MSR_KVM_ASYNC_PF_INT takes #GP even with an in-kernel irqchip, so async page
/// faults go (ASYNC_PF_INT, and ASYNC_PF and ASYNC_PF_VMEXIT, which Linux ≥ 5.10 uses only
/// with it). Hardware KVM serves them all in the kernel: nothing is hidden there.
pub fn pv_features_hidden(machine: MachineFacts) -> u32 {
    use super::cpuid::kvm_feature::*;
    if machine.pvm {
        PV_UNHALT | PV_SEND_IPI | PV_SCHED_YIELD | ASYNC_PF_INT | ASYNC_PF | ASYNC_PF_VMEXIT
    } else {
        0
    }
}

/// What was learned about this KVM at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quirks {
    /// An `int3` of ours came back as an emulation failure instead of KVM_EXIT_DEBUG
    /// (docs/kvm-quirks.md, "int3 at CPL0").
    pub int3_is_emulation_failure: bool,
}

/// The byte software breakpoints plant: `int3`, as on hardware KVM, until an int3 of ours
/// came back as an emulation failure; then `hlt`, whose KVM_EXIT_HLT is clean and costs no
/// kernel log line (docs/kvm-quirks.md, "int3 at CPL0").
///
/// Precondition of `hlt`: it must exit to the VMM, which holds only without an in-kernel
/// irqchip. With one, this stays with `int3`, whose emulation-failure signature still
/// reports every hit (measured with irqchip and PIT running).
pub fn breakpoint_insn(learned: Quirks, machine: MachineFacts) -> u8 {
    if learned.int3_is_emulation_failure && !machine.in_kernel_irqchip {
        HLT
    } else {
        INT3
    }
}

/// A KVM_EXIT_INTERNAL_ERROR, as the vCPU thread saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InternalErrorExit {
    /// `kvm_run.internal.suberror`.
    pub suberror: u32,
    /// The byte now in RAM under our software breakpoint at RIP, if we have one there.
    pub planted_byte: Option<u8>,
    /// The code byte at RIP read through the guest's page tables, if it is readable.
    pub code_byte: Option<u8>,
    /// Whether watchpoints have taken pages out of guest RAM's memory slots.
    pub watches: bool,
    /// Whether the instruction at RIP decodes to one kvmgdb completes (`vmm::complete`).
    pub completable: bool,
}

/// What an internal error means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InternalErrorCause {
    /// PVM's emulator gave up on an `int3` we planted: it is our breakpoint, RIP is at it
    /// and the vCPU is intact.
    OurBreakpoint,
    /// The guest's own `int3`, which the guest's handler should get
    /// ([`guest_int3_rip_advance`] says how).
    GuestInt3,
    /// An instruction KVM cannot run against a page a watchpoint took out of the memory
    /// slots (fetching code from it, or an access its emulator cannot do as MMIO, such as
    /// `lidt`): run it again with guest RAM mapped.
    NeedsRam,
    /// An instruction PVM's emulator cannot run and kvmgdb completes itself
    /// (docs/kvm-quirks.md, "Completions"): `fwait`, `ldmxcsr`, `popcnt`, `clac`… RIP is at
    /// it and the vCPU intact. Hardware KVM runs them natively and never exits for them.
    Complete,
    /// A real internal error: the vCPU stops for good.
    Genuine,
}

/// Classifies a KVM_EXIT_INTERNAL_ERROR (docs/kvm-quirks.md, "int3 at CPL0").
///
/// Precondition: the suberror is KVM_INTERNAL_ERROR_EMULATION; any other suberror is
/// [`InternalErrorCause::Genuine`]. `GuestInt3` needs the byte at RIP to be `0xCC`, so RIP
/// is known to be at a one-byte int3. `Complete` needs the emulation failure too: other
/// suberrors (an event KVM could not deliver, say) are no instruction the emulator gave up
/// on, and completing the one at RIP would run it where the CPU never got to.
pub fn classify_internal_error(exit: &InternalErrorExit) -> InternalErrorCause {
    if exit.suberror != KVM_INTERNAL_ERROR_EMULATION {
        return InternalErrorCause::Genuine;
    }
    if exit.planted_byte == Some(INT3) {
        return InternalErrorCause::OurBreakpoint;
    }
    if exit.code_byte == Some(INT3) {
        return InternalErrorCause::GuestInt3;
    }
    if exit.completable {
        return InternalErrorCause::Complete;
    }
    unexplained_emulation_failure(exit.watches)
}

/// What an emulation failure that is no breakpoint means (also when delivering the
/// guest's own int3 failed): with watched pages out of the slots it may be KVM lacking
/// the RAM, otherwise it is genuine.
pub fn unexplained_emulation_failure(watches: bool) -> InternalErrorCause {
    if watches {
        InternalErrorCause::NeedsRam
    } else {
        InternalErrorCause::Genuine
    }
}

/// How the guest's own `int3` reached the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int3Report {
    /// KVM_EXIT_DEBUG with exception 3 (hardware KVM with KVM_GUESTDBG_USE_SW_BP).
    DebugExit,
    /// An emulation failure with RIP at the int3 ([`InternalErrorCause::GuestInt3`]).
    EmulationFailure,
}

/// How far RIP must move before KVM_GUESTDBG_INJECT_BP so the guest's #BP frame points past
/// the int3, as the CPU's own #BP does (SDM Vol. 3, 6.5: int3 is a trap). Hardware KVM
/// injects #BP as a software exception with the exit's instruction length: 0. PVM injects it
/// with RIP as it is, and RIP is at the int3: its length, one byte (docs/kvm-quirks.md,
/// "INJECT_BP").
pub fn guest_int3_rip_advance(report: Int3Report) -> u64 {
    match report {
        Int3Report::DebugExit => 0,
        Int3Report::EmulationFailure => ONE_BYTE_INSN,
    }
}

/// For a KVM_EXIT_HLT (RIP is then past the hlt, `linear_rip` its linear address): the
/// address of our `hlt` breakpoint it hit, or None for an ordinary `hlt`.
///
/// Preconditions, checked: the breakpoint at the `hlt`'s address planted `hlt`
/// (`planted_insn`), and the byte in RAM is still that `hlt` (`byte_in_ram`): a guest that
/// wrote over it executed its own instruction.
pub fn hlt_breakpoint(
    linear_rip: u64,
    planted_insn: impl FnOnce(u64) -> Option<u8>,
    byte_in_ram: impl FnOnce(u64) -> Option<u8>,
) -> Option<u64> {
    let pc = linear_rip.wrapping_sub(ONE_BYTE_INSN);
    (planted_insn(pc) == Some(HLT) && byte_in_ram(pc) == Some(HLT)).then_some(pc)
}

/// Whether an I/O or MMIO exit during a single step must be finished by the VMM: KVM_RUN
/// with immediate_exit, then report the step. On PVM, stepping `out` or an MMIO write
/// exits with RIP already past the instruction and no #DB follows; a plain re-entry would
/// run one more instruction (docs/kvm-quirks.md, "stepping over I/O"). On hardware KVM the
/// same re-entry reports the pending #DB, so the instruction runs exactly once either way.
///
/// Precondition, checked: the exit was an I/O or MMIO exit the VMM has handled.
pub fn finish_step_after_io(step: bool, exit_was_io: bool) -> bool {
    step && exit_was_io
}

/// Whether resuming at `pc` must first step with the breakpoint there masked: RF is not
/// honoured (a resume from a debug-register breakpoint re-hits it, and a step with it armed
/// too), so it is disarmed or unplanted for one step and re-armed after
/// (docs/kvm-quirks.md, "RF"). Hardware KVM honours RF for debug registers, but the int3
/// under a software breakpoint must be lifted there as well, so both take this path.
pub fn step_masked_first(breakpoint_at_pc: bool) -> bool {
    breakpoint_at_pc
}

/// After the masked step of [`step_masked_first`]: whether to go on running (`continue`
/// asked for and the step ended normally) rather than report `stop`.
pub fn continue_after_masked_step(step: bool, stop: VcpuStop) -> bool {
    !step && stop == VcpuStop::Step
}

/// How long `stop_all` waits for kicked vCPUs without sleeping: a kick lands in 80–120 µs
/// on PVM (docs/kvm-quirks.md, "kick latency"); spinning that long saves a wake-up on the
/// stop path, and past it the controller sleeps.
pub const KICK_SPIN: Duration = Duration::from_micros(300);

#[cfg(test)]
mod tests {
    use super::*;

    const NO_IRQCHIP: MachineFacts = MachineFacts {
        in_kernel_irqchip: false,
        pvm: true,
    };
    const IRQCHIP: MachineFacts = MachineFacts {
        in_kernel_irqchip: true,
        pvm: true,
    };
    const PVM: Quirks = Quirks {
        int3_is_emulation_failure: true,
    };

    #[test]
    fn int3_is_planted_until_kvm_shows_it_fails() {
        assert_eq!(breakpoint_insn(Quirks::default(), NO_IRQCHIP), INT3);
        assert_eq!(breakpoint_insn(Quirks::default(), IRQCHIP), INT3);
        assert_eq!(breakpoint_insn(PVM, NO_IRQCHIP), HLT);
    }

    #[test]
    fn hlt_is_never_planted_with_an_in_kernel_irqchip() {
        // The irqchip absorbs hlt: the breakpoint would never report. int3 still does.
        assert_eq!(breakpoint_insn(PVM, IRQCHIP), INT3);
    }

    fn exit(planted: Option<u8>, code: Option<u8>, watches: bool) -> InternalErrorExit {
        InternalErrorExit {
            suberror: KVM_INTERNAL_ERROR_EMULATION,
            planted_byte: planted,
            code_byte: code,
            watches,
            completable: false,
        }
    }

    #[test]
    fn internal_errors_are_classified_by_the_byte_at_rip() {
        use InternalErrorCause::*;
        assert_eq!(
            classify_internal_error(&exit(Some(INT3), Some(INT3), false)),
            OurBreakpoint
        );
        // Our breakpoint overwritten by the guest with its own int3 is still an int3 of
        // some kind; one overwritten with something else is not ours.
        assert_eq!(
            classify_internal_error(&exit(Some(0x90), Some(INT3), false)),
            GuestInt3
        );
        assert_eq!(
            classify_internal_error(&exit(None, Some(INT3), true)),
            GuestInt3
        );
        assert_eq!(
            classify_internal_error(&exit(None, Some(0x0f), true)),
            NeedsRam
        );
        assert_eq!(classify_internal_error(&exit(None, None, false)), Genuine);
        let completable = InternalErrorExit {
            completable: true,
            ..exit(None, Some(0x9b), true)
        };
        assert_eq!(classify_internal_error(&completable), Complete);
        // Our breakpoint still wins: its byte is what KVM failed on.
        let planted = InternalErrorExit {
            completable: true,
            ..exit(Some(INT3), Some(INT3), false)
        };
        assert_eq!(classify_internal_error(&planted), OurBreakpoint);
        let delivery = InternalErrorExit {
            suberror: 3,
            ..completable
        };
        assert_eq!(classify_internal_error(&delivery), Genuine);
        let other = InternalErrorExit {
            suberror: 2,
            ..exit(Some(INT3), Some(INT3), true)
        };
        assert_eq!(classify_internal_error(&other), Genuine);
    }

    #[test]
    fn the_guests_int3_is_advanced_only_when_it_failed_to_emulate() {
        assert_eq!(guest_int3_rip_advance(Int3Report::DebugExit), 0);
        assert_eq!(guest_int3_rip_advance(Int3Report::EmulationFailure), 1);
    }

    #[test]
    fn a_hlt_breakpoint_needs_our_hlt_still_in_ram() {
        let ours = |pc: u64| (pc == 0x1000).then_some(HLT);
        assert_eq!(hlt_breakpoint(0x1001, ours, |_| Some(HLT)), Some(0x1000));
        assert_eq!(hlt_breakpoint(0x1001, ours, |_| Some(0x90)), None);
        assert_eq!(hlt_breakpoint(0x2001, ours, |_| Some(HLT)), None);
        assert_eq!(hlt_breakpoint(0x1001, |_| Some(INT3), |_| Some(HLT)), None);
    }

    #[test]
    fn only_steps_over_io_are_finished_by_the_vmm() {
        assert!(finish_step_after_io(true, true));
        assert!(!finish_step_after_io(false, true));
        assert!(!finish_step_after_io(true, false));
    }

    #[test]
    fn a_continue_from_a_breakpoint_goes_on_after_the_masked_step() {
        assert!(step_masked_first(true));
        assert!(!step_masked_first(false));
        assert!(continue_after_masked_step(false, VcpuStop::Step));
        assert!(!continue_after_masked_step(true, VcpuStop::Step));
        assert!(!continue_after_masked_step(false, VcpuStop::Kicked));
    }
}
