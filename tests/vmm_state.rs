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
    let mut g = boot(code);
    let mut sregs = g.vm.state(VCPU).expect("state").sregs;
    let mut idt = vec![0u8; 16 * 32];
    for (vector, handler) in [(3usize, BP_HANDLER), (6, UD_HANDLER)] {
        let gate = &mut idt[16 * vector..16 * vector + 16];
        gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&sregs.cs.selector.to_le_bytes());
        gate[5] = 0x8e; // P, DPL 0, 64-bit interrupt gate
        gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    }
    let at = kvmgdb::vmm::DebugAddr::Phys(vm_memory::GuestAddress(DATA));
    assert_eq!(
        g.vm.write_memory(at, &idt).expect("write the IDT"),
        idt.len()
    );
    sregs.idt.base = DATA;
    sregs.idt.limit = (idt.len() - 1) as u16;
    g.vm.set_sregs(VCPU, sregs).expect("set_sregs");
    g
}

/// The exception frame at RSP on entry to a handler (no error code): RIP, CS, RFLAGS.
fn frame(g: &Guest) -> (u64, u64, u64) {
    let rsp = g.regs().rsp;
    let q = |i: u64| u64::from_le_bytes(g.read(rsp + 8 * i, 8).try_into().unwrap());
    (q(0), q(1), q(2))
}

/// `stepi` onto the guest's own int3 ends at the #BP handler's first instruction, and the
/// frame holds the guest's RFLAGS without the trap flag the step used, so the handler's
/// `iretq` returns to plain running (with TF leaked, the next instruction would raise a
/// #DB the guest has no handler for: a triple fault).
#[test]
fn a_step_onto_the_guests_int3_stops_at_its_handler_with_the_guests_rflags() {
    let mut g = with_idt(EXCEPTIONS_CODE);
    let flags = g.regs().rflags;
    assert_eq!(g.step().stop, VcpuStop::Step, "step onto int3");
    assert_eq!(
        g.rip(),
        BP_HANDLER,
        "at the #BP handler's first instruction"
    );
    assert_eq!(
        g.regs().rdx,
        0,
        "the handler's first instruction has not run"
    );
    let (rip, _, rflags) = frame(&g);
    assert_eq!(
        rip,
        LOAD_ADDR + 1,
        "#BP is a trap: the frame points past the int3"
    );
    assert_eq!(rflags & TF, 0, "saved RFLAGS {rflags:#x} has no trap flag");
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

/// `stepi` onto an exception the stepped instruction raises (ud2): the frame holds no trap
/// flag either. (Where the step ends is KVM's: PVM ends it one instruction into the
/// handler, docs/kvm-quirks.md "Steps into handlers".)
#[test]
fn a_step_onto_a_faulting_instruction_leaves_no_trap_flag_in_the_frame() {
    let mut g = with_idt(EXCEPTIONS_CODE);
    g.edit_regs(|r| r.rip = LOAD_ADDR + 1);
    assert_eq!(g.step().stop, VcpuStop::Step, "step onto ud2");
    let rip = g.rip();
    assert!(
        (UD_HANDLER..UD_HANDLER + 8).contains(&rip),
        "RIP {rip:#x} is in the #UD handler"
    );
    let (_, _, rflags) = frame(&g);
    assert_eq!(rflags & TF, 0, "saved RFLAGS {rflags:#x} has no trap flag");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rdx, 1, "the #UD handler ran once");
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
