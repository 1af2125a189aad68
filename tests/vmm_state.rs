//! VMM tier: the VMM API (`kvmgdb::vmm::Vm`) driven in this process on real KVM, with no
//! debugger and no child process. This file: the state a stop reports is the vCPU's real
//! state (also for a stop before the vCPU first entered KVM), resuming from a breakpoint
//! steps over it only from a stop the debugger saw there, and system-register writes KVM
//! refuses are refused at once.

mod vmm_support;

use kvmgdb::vmm::debug::watch::WatchKind;
use kvmgdb::vmm::stop::VcpuStop;
use vmm_support::*;

#[rustfmt::skip]
const WRITE_THEN_READ_CODE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x20, 0x00,             // +0  mov $0x200000, %ebx    (DATA)
    0xc7, 0x43, 0x08, 0x44, 0x33, 0x22, 0x11, // +5  movl $0x11223344, 8(%rbx)
    0xff, 0xc1,                               // +12 inc %ecx
    0x8b, 0x43, 0x08,                         // +14 mov 8(%rbx), %eax
    0xff, 0xc1,                               // +17 inc %ecx
    0xb0, 0x10,                               // +19 mov $0x10, %al
    0xe6, 0xf4,                               // +21 out %al, $0xf4   (isa-debug-exit)
];

/// A stop that lands before the vCPU ever entered KVM (resume and kick at once) reports
/// the entry state, never the zeros of a kvm_run area KVM has not filled yet.
#[test]
fn a_stop_before_the_first_kvm_run_reports_the_entry_state() {
    for round in 0..5 {
        let mut g = boot(WRITE_THEN_READ_CODE);
        let entry = g.vm.state(VCPU).expect("entry state");
        g.vm.resume(&[(VCPU, false)]).expect("resume");
        let stops = g.vm.stop_all();
        let state = match stops.first() {
            Some(ev) => ev.state,
            None => g.vm.state(VCPU).expect("state"),
        };
        let got = g.vm.state(VCPU).expect("state after the stop");
        for s in [state, got] {
            assert_ne!(s.regs.rip, 0, "round {round}: RIP is the vCPU's, not zero");
            assert_eq!(s.sregs.cr0, entry.sregs.cr0, "round {round}: CR0");
            assert_eq!(s.sregs.efer, entry.sregs.efer, "round {round}: EFER");
            assert_eq!(s.sregs.cr3, entry.sregs.cr3, "round {round}: CR3");
        }
        // Writing the registers back unchanged and running on must not hurt the guest.
        let regs = g.regs();
        g.vm.set_regs(VCPU, regs).expect("set_regs");
        assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)), "round {round}");
        assert_eq!(g.regs().rcx, 2, "round {round}");
    }
}

/// The debugger sees the vCPU stopped at its entry point; a breakpoint set there is stepped
/// over by the first resume, which runs the instruction under it, as from any other stop.
#[test]
fn a_breakpoint_at_the_entry_point_is_stepped_over_by_the_first_resume() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    g.vm.add_sw_breakpoint(VCPU, LOAD_ADDR)
        .expect("add_sw_breakpoint");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rcx, 2);

    let mut g = boot(WRITE_THEN_READ_CODE);
    g.vm.add_hw_breakpoint(LOAD_ADDR)
        .expect("add_hw_breakpoint");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
}

/// Moving RIP onto a breakpoint is no stop at it: the next resume reports the breakpoint
/// before its instruction runs, as gdb expects after `jump` or `set $pc`.
#[test]
fn a_breakpoint_under_a_new_rip_is_reported_before_its_instruction() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    let bp = LOAD_ADDR + 12;
    g.vm.add_sw_breakpoint(VCPU, bp).expect("add_sw_breakpoint");
    g.edit_regs(|r| r.rip = bp);
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(bp));
    assert_eq!((g.rip(), g.regs().rcx), (bp, 0));
    // Now stopped on it as reported: the next resume runs it.
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rcx, 2);
}

fn breakpoint_beside_a_watch(hw: bool, kind: WatchKind) {
    let mut g = boot(WRITE_THEN_READ_CODE);
    let bp = LOAD_ADDR + 14;
    // The watch is on the code page, away from every byte the guest touches: the page has
    // no memory slot, so every fetch from it goes through the memory-slot swap.
    g.vm.add_watchpoint(VCPU, LOAD_ADDR + 0x800, 8, kind)
        .expect("add_watchpoint");
    let want = if hw {
        g.vm.add_hw_breakpoint(bp).expect("add_hw_breakpoint");
        VcpuStop::HwBreakpoint { slot: 0, addr: bp }
    } else {
        g.vm.add_sw_breakpoint(VCPU, bp).expect("add_sw_breakpoint");
        VcpuStop::SwBreakpoint(bp)
    };
    assert_eq!(g.cont().stop, want, "{kind:?}");
    assert_eq!(g.rip(), bp, "{kind:?}");
    assert_eq!(g.regs().rcx, 1, "{kind:?}: the instructions before it ran");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)), "{kind:?}");
    assert_eq!(g.regs().rcx, 2, "{kind:?}: the instruction under it ran once");
}

#[test]
fn a_software_breakpoint_on_a_watched_code_page_is_reported() {
    breakpoint_beside_a_watch(false, WatchKind::Read);
    breakpoint_beside_a_watch(false, WatchKind::Access);
}

#[test]
fn a_hardware_breakpoint_on_a_watched_code_page_is_reported() {
    breakpoint_beside_a_watch(true, WatchKind::Read);
    breakpoint_beside_a_watch(true, WatchKind::Access);
}
