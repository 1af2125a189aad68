//! The public stop vocabulary: why a vCPU stopped ([`VcpuStop`]), the event that reports it
//! ([`VcpuEvent`]) and the registers every stop carries ([`CpuSnapshot`]). This is the
//! VMM's own language; only `src/gdb/` maps it to gdb's.

use super::debug::watch::WatchKind;
use crate::x86::paging::PagingRegs;
use kvm_bindings::{KVM_INTERNAL_ERROR_EMULATION, kvm_regs, kvm_sregs};

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
        kind: WatchKind,
        /// Linear address hit.
        addr: u64,
    },
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
    /// True if the vCPU stays frozen for inspection after this stop: running it again
    /// reports the same stop. An internal error does not freeze: KVM leaves the vCPU as it
    /// was at the instruction it could not run (KVM API 5, KVM_EXIT_INTERNAL_ERROR), so
    /// a debugger may move RIP past it, or change the code, and run on; unchanged, the
    /// next run meets the same error again.
    pub fn freezes(&self) -> bool {
        self.is_fatal() && !matches!(self, VcpuStop::InternalError { .. })
    }

    /// True if a run without a debugger ends here (with this stop as the outcome).
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

/// What a vCPU is doing, as a debugger names it beside its thread (QEMU's `info cpus` and
/// `info threads` words): the processor's own activity state, not whether the stub has it
/// stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuActivity {
    /// Executing instructions (or stopped by the debugger in the middle of doing so).
    Running,
    /// In `hlt`, waiting for an interrupt (or for ever, with interrupts off).
    Halted,
    /// An application processor that has not been started yet: it waits for the INIT-SIPI
    /// sequence (KVM_MP_STATE_INIT_RECEIVED).
    WaitForSipi,
}

impl CpuActivity {
    /// The word shown in brackets after the CPU's name: `CPU#2 [halted]`.
    pub fn word(self) -> &'static str {
        match self {
            CpuActivity::Running => "running",
            CpuActivity::Halted => "halted",
            CpuActivity::WaitForSipi => "wait-for-SIPI",
        }
    }

    /// The activity of a vCPU stopped with KVM multiprocessing state `mp_state` (KVM API
    /// 4.38, KVM_GET_MP_STATE) after the stop `last`: a `cli; hlt` stop keeps the vCPU
    /// runnable in KVM's eyes (the halt watcher stopped it) but it is halted all the same.
    pub fn of_stopped(mp_state: u32, last: Option<VcpuStop>) -> CpuActivity {
        match mp_state {
            kvm_bindings::KVM_MP_STATE_INIT_RECEIVED => CpuActivity::WaitForSipi,
            kvm_bindings::KVM_MP_STATE_HALTED => CpuActivity::Halted,
            _ if last == Some(VcpuStop::Halted) => CpuActivity::Halted,
            _ => CpuActivity::Running,
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

    /// The registers that decide address translation.
    pub fn paging_regs(&self) -> PagingRegs {
        paging_regs(&self.sregs)
    }
}

/// The linear address of the instruction at RIP: RIP itself in 64-bit mode (CS.L), else
/// CS.base + RIP truncated to 32 bits (SDM Vol. 3, 3.4.3).
pub fn linear_pc(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    if sregs.cs.l != 0 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    }
}

/// The paging registers held in `sregs`.
pub fn paging_regs(sregs: &kvm_sregs) -> PagingRegs {
    PagingRegs {
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
    }
}

/// A stop, as the controller reports it.
pub struct VcpuEvent {
    /// Which vCPU.
    pub id: usize,
    /// Why it stopped.
    pub stop: VcpuStop,
    /// Its registers at the stop.
    pub state: CpuSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_stops_are_the_ones_a_vcpu_cannot_run_past() {
        let fatal = [
            VcpuStop::Halted,
            VcpuStop::Shutdown,
            VcpuStop::Exit(3),
            VcpuStop::InternalError { suberror: 1 },
            VcpuStop::FailEntry(0),
            VcpuStop::RunError(libc::EFAULT),
            VcpuStop::UnhandledExit(99),
        ];
        let resumable = [
            VcpuStop::SwBreakpoint(0x1000),
            VcpuStop::HwBreakpoint { slot: 0, addr: 1 },
            VcpuStop::Watch {
                kind: WatchKind::Write,
                addr: 2,
            },
            VcpuStop::Step,
            VcpuStop::Kicked,
            VcpuStop::GuestBreakpoint,
        ];
        assert!(fatal.iter().all(VcpuStop::is_fatal));
        assert!(!resumable.iter().any(VcpuStop::is_fatal));
        // An internal error ends an unattended run but leaves the vCPU to the debugger.
        let internal = VcpuStop::InternalError { suberror: 1 };
        assert!(!internal.freezes());
        assert!(
            fatal
                .iter()
                .filter(|s| **s != internal)
                .all(VcpuStop::freezes)
        );
    }

    #[test]
    fn descriptions_name_the_address_and_the_cause() {
        assert_eq!(
            VcpuStop::SwBreakpoint(0x10_0000).describe(),
            "software breakpoint at 0x100000"
        );
        assert_eq!(
            VcpuStop::Watch {
                kind: WatchKind::Read,
                addr: 0x2a
            }
            .describe(),
            "Read watchpoint hit at 0x2a"
        );
        assert!(
            VcpuStop::InternalError {
                suberror: KVM_INTERNAL_ERROR_EMULATION
            }
            .describe()
            .contains("emulation failure")
        );
        assert!(
            !VcpuStop::InternalError { suberror: 2 }
                .describe()
                .contains("emulation")
        );
    }

    #[test]
    fn activity_follows_the_mp_state_and_a_halt_stop() {
        use kvm_bindings::{
            KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE,
        };
        let of = CpuActivity::of_stopped;
        assert_eq!(
            of(KVM_MP_STATE_INIT_RECEIVED, None),
            CpuActivity::WaitForSipi
        );
        assert_eq!(of(KVM_MP_STATE_HALTED, None), CpuActivity::Halted);
        assert_eq!(
            of(KVM_MP_STATE_RUNNABLE, Some(VcpuStop::Halted)),
            CpuActivity::Halted
        );
        assert_eq!(
            of(KVM_MP_STATE_RUNNABLE, Some(VcpuStop::Kicked)),
            CpuActivity::Running
        );
        assert_eq!(CpuActivity::WaitForSipi.word(), "wait-for-SIPI");
    }

    #[test]
    fn linear_pc_adds_cs_base_outside_long_mode() {
        let mut regs = kvm_regs {
            rip: 0x10,
            ..Default::default()
        };
        let mut sregs = kvm_sregs::default();
        sregs.cs.base = 0xffff_fff0;
        // Protected or real mode: CS.base + RIP, wrapping at 4 GiB.
        assert_eq!(linear_pc(&regs, &sregs), 0);
        sregs.cs.base = 0xf_0000;
        assert_eq!(linear_pc(&regs, &sregs), 0xf_0010);
        // 64-bit mode: CS.base is ignored.
        sregs.cs.l = 1;
        regs.rip = 0xffff_ffff_8000_0000;
        assert_eq!(linear_pc(&regs, &sregs), 0xffff_ffff_8000_0000);
    }
}
