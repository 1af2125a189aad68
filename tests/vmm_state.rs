//! VMM tier: the VMM API (`kvmgdb::vmm::Vm`) driven in this process on real KVM, with no
//! debugger and no child process. This file: the state a stop reports is the vCPU's real
//! state (also for a stop before the vCPU first entered KVM), resuming from a breakpoint
//! steps over it only from a stop the debugger saw there, and system-register writes KVM
//! refuses are refused at once.

mod vmm_support;

use kvmgdb::vmm::VmError;
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
        assert_eq!(
            g.cont().stop,
            VcpuStop::Exit(exit_status(0x10)),
            "round {round}"
        );
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
    assert_eq!(
        g.regs().rcx,
        2,
        "{kind:?}: the instruction under it ran once"
    );
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

/// A guest with an IDT (built by [`with_idt`]): it raises #BP with its own `int3`, then #UD
/// with `ud2`; each handler counts in EDX and returns past the instruction.
#[rustfmt::skip]
const EXCEPTIONS_CODE: &[u8] = &[
    0xcc,                         // +0  int3
    0x0f, 0x0b,                   // +1  ud2
    0xff, 0xc1,                   // +3  inc %ecx
    0xb0, 0x10,                   // +5  mov $0x10, %al
    0xe6, 0xf4,                   // +7  out %al, $0xf4   (isa-debug-exit)
    0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
    0xff, 0xc2,                   // +16 bp_handler: inc %edx
    0x48, 0xcf,                   // +18    iretq
    0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
    0x48, 0x83, 0x04, 0x24, 0x02, // +32 ud_handler: addq $2, (%rsp)
    0xff, 0xc2,                   // +37    inc %edx
    0x48, 0xcf,                   // +39    iretq
];
const BP_HANDLER: u64 = LOAD_ADDR + 16;
const UD_HANDLER: u64 = LOAD_ADDR + 32;
const TF: u64 = 1 << 8;

/// Boots `code` with a 64-bit IDT at DATA whose #BP and #UD gates (interrupt gates, DPL 0)
/// point at [`BP_HANDLER`] and [`UD_HANDLER`].
fn with_idt(code: &[u8]) -> Guest {
    with_gates(code, &[(3, BP_HANDLER), (6, UD_HANDLER)])
}

/// The exception frame at RSP on entry to a handler (no error code): RIP, CS, RFLAGS.
fn frame(g: &Guest) -> (u64, u64, u64) {
    frame_after(g, 0)
}

/// The exception frame at RSP + 8·`skip` (1 past an error code): RIP, CS, RFLAGS.
fn frame_after(g: &Guest, skip: u64) -> (u64, u64, u64) {
    let rsp = g.regs().rsp + 8 * skip;
    let q = |i: u64| u64::from_le_bytes(g.read(rsp + 8 * i, 8).try_into().unwrap());
    (q(0), q(1), q(2))
}

/// Steps onto `what` and checks the step ended at `handler`'s first instruction, before it
/// ran (the handlers count in EDX), with a frame whose saved RIP is `frame_rip` (past a
/// trap, at a fault) and whose saved RFLAGS has no trap flag. Returns that RFLAGS.
fn step_into_handler(g: &mut Guest, what: &str, handler: u64, frame_rip: u64) -> u64 {
    assert_eq!(g.step().stop, VcpuStop::Step, "step onto {what}");
    assert_eq!(
        g.rip(),
        handler,
        "at the handler's first instruction ({what})"
    );
    assert_eq!(
        g.regs().rdx,
        0,
        "the handler's first instruction has not run ({what})"
    );
    let (rip, _, rflags) = frame(g);
    assert_eq!(rip, frame_rip, "the frame's saved RIP ({what})");
    assert_eq!(
        rflags & TF,
        0,
        "saved RFLAGS {rflags:#x} has no trap flag ({what})"
    );
    rflags
}

/// `stepi` onto the guest's own int3 ends at the #BP handler's first instruction, and the
/// frame holds the guest's RFLAGS without the trap flag the step used, so the handler's
/// `iretq` returns to plain running (with TF leaked, the next instruction would raise a
/// #DB the guest has no handler for: a triple fault).
#[test]
fn a_step_onto_the_guests_int3_stops_at_its_handler_with_the_guests_rflags() {
    let mut g = with_idt(EXCEPTIONS_CODE);
    let flags = g.regs().rflags;
    let rflags = step_into_handler(&mut g, "int3", BP_HANDLER, LOAD_ADDR + 1);
    assert_eq!(rflags, flags, "saved RFLAGS is the guest's own");
    assert_eq!(
        g.step().stop,
        VcpuStop::Step,
        "the handler's first instruction"
    );
    assert_eq!((g.rip(), g.regs().rdx), (BP_HANDLER + 2, 1));
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    let regs = g.regs();
    assert_eq!((regs.rcx, regs.rdx), (1, 2), "each handler ran once");
    assert_eq!(regs.rflags & TF, 0);
}

/// `stepi` onto an exception the stepped instruction raises (ud2, delivered by KVM or the
/// CPU, not by kvmgdb) ends at the handler's first instruction, before it runs, with the
/// faulting instruction's address and no trap flag in the frame.
#[test]
fn a_step_onto_a_faulting_instruction_stops_at_its_handler() {
    let mut g = with_idt(EXCEPTIONS_CODE);
    g.edit_regs(|r| r.rip = LOAD_ADDR + 1);
    let flags = g.regs().rflags;
    let rflags = step_into_handler(&mut g, "ud2", UD_HANDLER, LOAD_ADDR + 1);
    assert_eq!(rflags & !RF, flags, "saved RFLAGS is the guest's own");
    assert_eq!(
        g.step().stop,
        VcpuStop::Step,
        "the handler's first instruction"
    );
    assert_eq!(g.rip(), UD_HANDLER + 5);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rdx, 1, "the #UD handler ran once");
}

/// A guest that loads from RAX (set by the test: a non-canonical address for #GP, an
/// unmapped one for #PF); the #GP and #PF handlers count in EDX, pop the error code and
/// return past the load.
#[rustfmt::skip]
const FAULTS_CODE: &[u8] = &[
    0x48, 0x8b, 0x18,                         // +0  mov (%rax), %rbx
    0xff, 0xc1,                               // +3  inc %ecx
    0xb0, 0x10,                               // +5  mov $0x10, %al
    0xe6, 0xf4,                               // +7  out %al, $0xf4   (isa-debug-exit)
    0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
    0x48, 0x83, 0x44, 0x24, 0x08, 0x03,       // +16 gp_handler: addq $3, 8(%rsp)
    0xff, 0xc2,                               // +22    inc %edx
    0x48, 0x83, 0xc4, 0x08,                   // +24    add $8, %rsp
    0x48, 0xcf,                               // +28    iretq
    0x90, 0x90,
    0x48, 0x83, 0x44, 0x24, 0x08, 0x03,       // +32 pf_handler: addq $3, 8(%rsp)
    0xff, 0xc2,                               // +38    inc %edx
    0x48, 0x83, 0xc4, 0x08,                   // +40    add $8, %rsp
    0x48, 0xcf,                               // +44    iretq
    0x90, 0x90,
    0xf4,                                     // +48 ud_de_handler: hlt
];
const GP_HANDLER: u64 = LOAD_ADDR + 16;
const PF_HANDLER: u64 = LOAD_ADDR + 32;
const RF: u64 = 1 << 16;
/// Loading from it raises #GP(0) (SDM Vol. 3, 3.3.7.1).
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;
/// Canonical, beyond the 4 GiB the entry page tables map: loading from it raises #PF.
const UNMAPPED: u64 = 0x80_0000_0000;

/// [`FAULTS_CODE`] with gates for #PF, #GP, #UD and #DE, each with its own handler, and
/// RAX = `addr`.
fn faults_guest(addr: u64) -> Guest {
    let other = LOAD_ADDR + 48;
    let mut g = with_gates(
        FAULTS_CODE,
        &[(14, PF_HANDLER), (13, GP_HANDLER), (6, other), (0, other)],
    );
    g.edit_regs(|r| r.rax = addr);
    g
}

/// A step onto the load stopped at `handler`'s first instruction, with a frame (after the
/// error code) that points at the load and holds no trap flag; continuing runs the
/// handler once and returns past the load.
fn assert_stopped_at_fault_handler(g: &mut Guest, handler: u64, what: &str) {
    assert_eq!(
        g.rip(),
        handler,
        "{what}: at the handler's first instruction"
    );
    assert_eq!(g.regs().rdx, 0, "{what}: the handler has not run");
    let (rip, _, rflags) = frame_after(g, 1);
    assert_eq!(
        rip, LOAD_ADDR,
        "{what}: a fault, the frame points at the load"
    );
    assert_eq!(
        rflags & TF,
        0,
        "{what}: saved RFLAGS {rflags:#x} has no trap flag"
    );
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)), "{what}");
    let regs = g.regs();
    assert_eq!((regs.rcx, regs.rdx), (1, 1), "{what}: the handler ran once");
}

/// `stepi` onto a load from a non-canonical address ends at the #GP handler's first
/// instruction, and onto a load from an unmapped page at the #PF handler's, with CR2.
#[test]
fn a_step_onto_a_general_protection_or_page_fault_stops_at_its_handler() {
    let mut g = faults_guest(NON_CANONICAL);
    assert_eq!(g.step().stop, VcpuStop::Step, "step onto the #GP load");
    assert_stopped_at_fault_handler(&mut g, GP_HANDLER, "#GP");

    let mut g = faults_guest(UNMAPPED);
    assert_eq!(g.step().stop, VcpuStop::Step, "step onto the #PF load");
    let cr2 = g.vm.state(VCPU).expect("state").sregs.cr2;
    assert_eq!(cr2, UNMAPPED, "CR2 is the faulting address");
    assert_stopped_at_fault_handler(&mut g, PF_HANDLER, "#PF");
}

/// The handlers' breakpoints take only the debug registers the user's hardware breakpoints
/// leave free, #PF's first, and never stand in for the user's: with three taken, a step
/// onto a page fault still ends at its handler and the user's breakpoints are still
/// reported as theirs; with two, #GP's is caught too.
#[test]
fn a_step_onto_a_fault_catches_its_handler_in_the_free_debug_registers() {
    // Never reached: the guest exits before them.
    let spare = [LOAD_ADDR + 9, LOAD_ADDR + 10];
    let back = LOAD_ADDR + 3;

    let mut g = faults_guest(UNMAPPED);
    for addr in spare {
        g.vm.add_hw_breakpoint(addr).expect("add_hw_breakpoint");
    }
    g.vm.add_hw_breakpoint(back).expect("add_hw_breakpoint");
    assert_eq!(g.step().stop, VcpuStop::Step, "one free slot: #PF's");
    assert_eq!(g.rip(), PF_HANDLER);
    assert_eq!(
        g.cont().stop,
        VcpuStop::HwBreakpoint {
            slot: 2,
            addr: back
        },
        "the user's breakpoint past the load"
    );
    assert_eq!(g.regs().rdx, 1);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));

    // Two free: #PF's and #GP's.
    let mut g = faults_guest(NON_CANONICAL);
    for addr in spare {
        g.vm.add_hw_breakpoint(addr).expect("add_hw_breakpoint");
    }
    assert_eq!(g.step().stop, VcpuStop::Step, "two free slots");
    assert_stopped_at_fault_handler(&mut g, GP_HANDLER, "#GP beside two breakpoints");

    // None free: the step ends where KVM ends it (docs/kvm-quirks.md, "Steps into
    // handlers"), never as one of the user's breakpoints.
    let mut g = faults_guest(NON_CANONICAL);
    for addr in [
        LOAD_ADDR + 9,
        LOAD_ADDR + 10,
        LOAD_ADDR + 11,
        LOAD_ADDR + 12,
    ] {
        g.vm.add_hw_breakpoint(addr).expect("add_hw_breakpoint");
    }
    let stop = g.step().stop;
    assert!(
        !matches!(stop, VcpuStop::HwBreakpoint { .. }),
        "no free slot: {stop:?}"
    );
}

/// The handlers' breakpoints exist only during a step: a continue after steps runs through
/// the guest's faults and their handlers without stopping in them.
#[test]
fn a_continue_after_steps_does_not_stop_in_the_handlers() {
    let mut g = faults_guest(NON_CANONICAL);
    g.edit_regs(|r| r.rip = LOAD_ADDR + 3);
    g.steps(1);
    g.edit_regs(|r| r.rip = LOAD_ADDR);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    let regs = g.regs();
    assert_eq!((regs.rcx, regs.rdx), (2, 1), "the #GP handler ran once");
}

/// Continuing over the guest's int3 and ud2: each goes to its handler, once.
#[test]
fn the_guests_exceptions_reach_its_handlers() {
    let mut g = with_idt(EXCEPTIONS_CODE);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    let regs = g.regs();
    assert_eq!((regs.rcx, regs.rdx), (1, 2));
}

/// A change to the system registers.
type SregsEdit = fn(&mut kvm_bindings::kvm_sregs);

/// System-register states the CPU cannot hold are refused at once, and the vCPU keeps its
/// old state and runs on (instead of failing every later KVM_RUN).
#[test]
fn impossible_system_registers_are_refused_and_the_old_ones_kept() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    let before = g.vm.state(VCPU).expect("state").sregs;
    let bad: [(&str, SregsEdit); 4] = [
        ("cr0 = 0", |s| s.cr0 = 0),
        ("efer = 0", |s| s.efer = 0),
        ("cr4 = 0xffffffff", |s| s.cr4 = 0xffff_ffff),
        ("cr0.PG without PE", |s| s.cr0 &= !1),
    ];
    for (what, edit) in bad {
        let mut s = before;
        edit(&mut s);
        let err = g.vm.set_sregs(VCPU, s);
        assert!(
            matches!(err, Err(VmError::SregsRefused(VCPU, _))),
            "{what}: {err:?}"
        );
        let now = g.vm.state(VCPU).expect("state").sregs;
        assert_eq!(
            (now.cr0, now.cr4, now.efer),
            (before.cr0, before.cr4, before.efer),
            "{what}: the old state is kept"
        );
    }
    // A state the CPU can hold is taken, and shown as KVM has it.
    let mut s = before;
    s.cr2 = 0x1234_5000;
    g.vm.set_sregs(VCPU, s).expect("a valid write");
    assert_eq!(g.vm.state(VCPU).expect("state").sregs.cr2, 0x1234_5000);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rcx, 2);
}

/// Loading a selector reads its descriptor from the GDT as `mov` would, or says why the
/// CPU would refuse.
#[test]
fn a_selector_loads_its_descriptor_or_is_refused() {
    use kvmgdb::vmm::{SegReg, SegmentError};
    let g = boot(WRITE_THEN_READ_CODE);
    let sregs = g.vm.state(VCPU).expect("state").sregs;
    let load = |reg, sel: u16| g.vm.load_segment(VCPU, &sregs, reg, sel, &sregs.ds);
    // The entry GDT: null, unused, code 0x10, data 0x18 (limit 31).
    let ds = load(SegReg::Ds, 0x10).expect("readable code in DS");
    assert_eq!(
        (ds.selector, ds.base, ds.limit, ds.l),
        (0x10, 0, 0xffff_ffff, 1)
    );
    let ss = load(SegReg::Ss, 0x18).expect("data in SS");
    assert_eq!((ss.present, ss.s, ss.type_ & 3), (1, 1, 3));
    let segment_error = |r: Result<_, VmError>| match r {
        Err(VmError::Segment(VCPU, e)) => e,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(
        segment_error(load(SegReg::Cs, 0)),
        SegmentError::Null(SegReg::Cs)
    );
    assert_eq!(
        segment_error(load(SegReg::Cs, 0x18)),
        SegmentError::WrongType(0x18, SegReg::Cs)
    );
    assert_eq!(
        segment_error(load(SegReg::Ss, 0x10)),
        SegmentError::WrongType(0x10, SegReg::Ss)
    );
    assert_eq!(
        segment_error(load(SegReg::Ds, 0x20)),
        SegmentError::BeyondLimit(0x20)
    );
    assert_eq!(
        segment_error(load(SegReg::Ds, 0x8)),
        SegmentError::WrongType(0x8, SegReg::Ds)
    );
    assert_eq!(
        segment_error(load(SegReg::Ds, 0x1c)),
        SegmentError::NoLdt(0x1c)
    );
    // A null data selector makes the register unusable.
    assert_eq!(load(SegReg::Es, 0).expect("null ES").unusable, 1);
}

/// Steps through plain instructions under an IDT: each ends after its instruction, as
/// without the handlers' breakpoints (which consecutive steps share, so a run of them
/// applies the debug state once).
#[test]
fn consecutive_steps_under_an_idt_step_one_instruction_each() {
    let mut g = faults_guest(NON_CANONICAL);
    g.edit_regs(|r| r.rip = LOAD_ADDR + 9);
    for n in 1..=7 {
        assert_eq!(g.step().stop, VcpuStop::Step, "step {n}");
        assert_eq!(g.rip(), LOAD_ADDR + 9 + n, "step {n}: one nop");
    }
    // On into the #GP handler's first instruction, which is itself no catch.
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(
        g.rip(),
        GP_HANDLER + 6,
        "the handler's first instruction ran"
    );
}

/// A guest that executes its own int3 in a loop; the #BP handler counts in EDX.
#[rustfmt::skip]
const INT3_LOOP_CODE: &[u8] = &[
    0xcc,             // +0  1: int3
    0xeb, 0xfd,       // +1     jmp 1b
    0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
    0xff, 0xc2,       // +16 BP_HANDLER: inc %edx
    0x48, 0xcf,       // +18    iretq
];

/// A kick (Ctrl-C) that lands while the VMM delivers the guest's own #BP must not stop the
/// vCPU with the #BP still queued in KVM, invisible to the debugger: a following step
/// would deliver it with the step's trap flag saved in the frame, and the handler's
/// `iretq` would then trap (found by the fuzz harness as a triple fault in the demo).
#[test]
fn a_kick_racing_the_guests_int3_leaves_no_trap_flag_in_its_frame() {
    let mut g = with_idt(INT3_LOOP_CODE);
    for round in 0..300u64 {
        g.vm.resume(&[(VCPU, false)]).expect("resume");
        std::thread::sleep(std::time::Duration::from_micros(round % 50));
        g.vm.stop_all();
        let before = g.regs();
        g.step();
        let rip = g.rip();
        if (BP_HANDLER..BP_HANDLER + 4).contains(&rip) {
            let (_, _, rflags) = frame(&g);
            assert_eq!(
                rflags & TF,
                0,
                "round {round}: TF leaked into the #BP frame"
            );
        }
        // The step moved exactly one instruction of the guest's: the int3 (into its
        // handler), the jmp, or one of the handler's.
        assert!(
            rip != before.rip || before.rip == BP_HANDLER,
            "round {round}: the step did not move from {:#x}",
            before.rip
        );
    }
}
