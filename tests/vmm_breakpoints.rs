//! VMM tier: the VMM API (`kvmgdb::vmm::Vm`) driven in this process on real KVM, with no
//! debugger and no child process. This file: software and hardware execute breakpoints —
//! the stop they report, resuming over them, and memory reads that hide them.

mod vmm_support;

use kvmgdb::vmm::BreakpointError;
use kvmgdb::vmm::stop::VcpuStop;
use vmm_support::*;

#[rustfmt::skip]
const LOOP_CODE: &[u8] = &[
    0x48, 0xff, 0xc0, // +0 1: inc %rax
    0xeb, 0xfb,       // +3    jmp 1b
];

#[test]
fn a_software_breakpoint_stops_before_its_instruction() {
    let mut g = boot(LOOP_CODE);
    g.vm.add_sw_breakpoint(VCPU, LOAD_ADDR)
        .expect("add_sw_breakpoint");
    let ev = g.cont();
    assert_eq!(ev.stop, VcpuStop::SwBreakpoint(LOAD_ADDR));
    assert_eq!(ev.state.regs.rip, LOAD_ADDR);
    assert_eq!(g.rip(), LOAD_ADDR);
    // The vCPU starts on the breakpoint, as the debugger sees it: the first resume runs
    // the instruction under it and the hit is the next lap's.
    assert_eq!(
        g.regs().rax,
        1,
        "the instruction under the breakpoint has not run again"
    );
    assert_eq!(
        g.vm.last_stop(VCPU),
        Some(VcpuStop::SwBreakpoint(LOAD_ADDR))
    );
    assert_eq!(
        g.vm.frozen(VCPU),
        None,
        "a breakpoint does not freeze the vCPU"
    );
}

#[test]
fn resuming_from_a_software_breakpoint_runs_its_instruction_once_per_lap() {
    let mut g = boot(LOOP_CODE);
    g.vm.add_sw_breakpoint(VCPU, LOAD_ADDR)
        .expect("add_sw_breakpoint");
    for lap in 0..5 {
        let ev = g.cont();
        assert_eq!(ev.stop, VcpuStop::SwBreakpoint(LOAD_ADDR), "lap {lap}");
        assert_eq!(g.rip(), LOAD_ADDR, "lap {lap}");
        // The first resume starts on the breakpoint too.
        assert_eq!(g.regs().rax, lap + 1, "`inc %rax` ran once per lap");
    }
}

#[test]
fn a_step_from_a_software_breakpoint_runs_the_instruction_under_it() {
    let mut g = boot(LOOP_CODE);
    g.vm.add_sw_breakpoint(VCPU, LOAD_ADDR)
        .expect("add_sw_breakpoint");
    // The first resume starts on the breakpoint: it runs one lap before the hit.
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(LOAD_ADDR));
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 3);
    assert_eq!(g.regs().rax, 2);
    assert_eq!(g.step().stop, VcpuStop::Step, "the jmp is a plain step");
    assert_eq!(g.rip(), LOAD_ADDR);
    // Back on the breakpoint: the next continue runs the inc before the next hit.
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(LOAD_ADDR));
    assert_eq!(g.regs().rax, 3);
}

#[test]
fn memory_reads_never_show_breakpoint_bytes() {
    let mut g = boot(LOOP_CODE);
    for off in [0, 3, 4] {
        g.vm.add_sw_breakpoint(VCPU, LOAD_ADDR + off)
            .expect("add_sw_breakpoint");
    }
    assert_eq!(
        g.read(LOAD_ADDR, LOOP_CODE.len()),
        LOOP_CODE,
        "before any hit"
    );
    assert_eq!(
        g.read(LOAD_ADDR + 3, 1),
        [0xeb],
        "a one-byte read of a breakpoint"
    );
    // The vCPU starts on the breakpoint at its entry: the first resume runs that
    // instruction. (The jmp under the next one is never run: +4 is inside it.)
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(LOAD_ADDR + 3));
    assert_eq!(g.read(LOAD_ADDR, LOOP_CODE.len()), LOOP_CODE, "after a hit");
    assert_eq!(g.regs().rax, 1);
}

#[test]
fn writing_code_under_a_breakpoint_keeps_the_breakpoint() {
    #[rustfmt::skip]
    const NEW_CODE: &[u8] = &[
        0xff, 0xc2, // +0 inc %edx   (replaces `inc %rax`, changing the byte under the breakpoint)
        0x90,       // +2 nop
    ];
    let mut g = boot(LOOP_CODE);
    g.vm.add_sw_breakpoint(VCPU, LOAD_ADDR)
        .expect("add_sw_breakpoint");
    assert_eq!(
        g.vm.write_memory(virt(LOAD_ADDR), NEW_CODE)
            .expect("write_memory"),
        NEW_CODE.len()
    );
    assert_eq!(g.read(LOAD_ADDR, 3), NEW_CODE, "reads show the new code");
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(LOAD_ADDR));
    assert_eq!(
        g.cont().stop,
        VcpuStop::SwBreakpoint(LOAD_ADDR),
        "still planted"
    );
    // The vCPU starts on the breakpoint: the first resume runs the new instruction too.
    let regs = g.regs();
    assert_eq!(
        (regs.rax, regs.rdx),
        (0, 2),
        "the new instruction ran, once per lap"
    );
}

#[rustfmt::skip]
const COUNTDOWN_CODE: &[u8] = &[
    0xb9, 0x03, 0x00, 0x00, 0x00, // +0  mov $3, %ecx
    0xff, 0xc9,                   // +5  1: dec %ecx
    0x75, 0xfc,                   // +7     jnz 1b
    0xb0, 0x10,                   // +9  mov $0x10, %al
    0xe6, 0xf4,                   // +11 out %al, $0xf4   (isa-debug-exit)
];

#[test]
fn removing_a_breakpoint_lets_the_guest_run_to_its_end() {
    let mut g = boot(COUNTDOWN_CODE);
    let bp = LOAD_ADDR + 5;
    g.vm.add_sw_breakpoint(VCPU, bp).expect("add_sw_breakpoint");
    for left in [3, 2] {
        assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(bp));
        assert_eq!(g.regs().rcx, left);
    }
    assert!(g.vm.remove_sw_breakpoint(bp));
    assert!(
        !g.vm.remove_sw_breakpoint(bp),
        "removing it twice finds nothing"
    );
    assert_eq!(g.read(bp, 2), [0xff, 0xc9]);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rcx, 0, "the loop ran to its end");
}

#[test]
fn a_hardware_breakpoint_stops_with_its_slot_and_address() {
    let mut g = boot(LOOP_CODE);
    let bp = LOAD_ADDR + 3;
    g.vm.add_hw_breakpoint(bp).expect("add_hw_breakpoint");
    let ev = g.cont();
    assert_eq!(ev.stop, VcpuStop::HwBreakpoint { slot: 0, addr: bp });
    assert_eq!(ev.state.regs.rip, bp);
    assert_eq!(
        g.regs().rax,
        1,
        "the instruction before the breakpoint ran once"
    );
}

#[test]
fn resuming_from_a_hardware_breakpoint_runs_its_instruction_once_per_lap() {
    let mut g = boot(LOOP_CODE);
    g.vm.add_hw_breakpoint(LOAD_ADDR)
        .expect("add_hw_breakpoint");
    for lap in 0..5 {
        let ev = g.cont();
        let want = VcpuStop::HwBreakpoint {
            slot: 0,
            addr: LOAD_ADDR,
        };
        assert_eq!(ev.stop, want, "lap {lap}");
        assert_eq!(g.rip(), LOAD_ADDR, "lap {lap}");
        // The first resume starts on the breakpoint too.
        assert_eq!(g.regs().rax, lap + 1, "`inc %rax` ran once per lap");
    }
    assert!(g.vm.remove_hw_breakpoint(LOAD_ADDR));
    g.vm.add_hw_breakpoint(LOAD_ADDR + 3)
        .expect("add_hw_breakpoint");
    assert_eq!(
        g.cont().stop,
        VcpuStop::HwBreakpoint {
            slot: 0,
            addr: LOAD_ADDR + 3
        },
        "the freed slot is reused"
    );
    assert_eq!(g.regs().rax, 6);
}

#[test]
fn a_fifth_hardware_breakpoint_finds_no_slot() {
    let mut g = boot(LOOP_CODE);
    for i in 0..4 {
        g.vm.add_hw_breakpoint(LOAD_ADDR + 0x10 * i)
            .expect("add_hw_breakpoint");
    }
    assert_eq!(
        g.vm.add_hw_breakpoint(LOAD_ADDR + 0x40),
        Err(BreakpointError::NoSlot)
    );
    assert_eq!(
        g.vm.add_hw_breakpoint(LOAD_ADDR),
        Ok(()),
        "one already armed is no new slot"
    );
}

#[test]
fn resuming_from_a_breakpoint_on_an_out_runs_the_out_once_per_lap() {
    let mut g = boot(HELLO_CODE);
    let bp = LOAD_ADDR + 16; // out %al, (%dx)
    g.vm.add_sw_breakpoint(VCPU, bp).expect("add_sw_breakpoint");
    for printed in ["", "h", "he", "hel", "hell", "hello"] {
        assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(bp));
        assert_eq!(g.serial.text(), printed, "one byte per lap");
    }
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    assert_eq!(g.serial.text(), "hello\n");
}

#[rustfmt::skip]
const MMIO_LOOP_CODE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x00, 0xd0,       // +0  mov $0xd0000000, %ebx   (no RAM there)
    0xc7, 0x03, 0x44, 0x33, 0x22, 0x11, // +5  1: movl $0x11223344, (%rbx)
    0x48, 0xff, 0xc0,                   // +11    inc %rax
    0xeb, 0xf5,                         // +14    jmp 1b
];

#[test]
fn resuming_from_a_breakpoint_on_an_mmio_write_runs_the_loop_once_per_lap() {
    let mut g = boot(MMIO_LOOP_CODE);
    let bp = LOAD_ADDR + 5;
    g.vm.add_sw_breakpoint(VCPU, bp).expect("add_sw_breakpoint");
    for lap in 0..4 {
        assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(bp), "lap {lap}");
        assert_eq!(g.regs().rax, lap, "one `inc %rax` per lap");
    }
}

#[test]
fn a_step_from_a_hardware_breakpoint_runs_the_instruction_under_it() {
    let mut g = boot(LOOP_CODE);
    g.vm.add_hw_breakpoint(LOAD_ADDR)
        .expect("add_hw_breakpoint");
    let hit = VcpuStop::HwBreakpoint {
        slot: 0,
        addr: LOAD_ADDR,
    };
    // The first resume starts on the breakpoint: it runs one lap before the hit.
    assert_eq!(g.cont().stop, hit);
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 3);
    assert_eq!(g.regs().rax, 2);
    assert_eq!(g.cont().stop, hit, "still armed after the step");
    assert_eq!(g.regs().rax, 2);
}

#[test]
fn a_software_breakpoint_survives_a_reset() {
    let mut g = boot(COUNTDOWN_CODE);
    let bp = LOAD_ADDR + 5;
    g.vm.add_sw_breakpoint(VCPU, bp).expect("add_sw_breakpoint");
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(bp));
    g.vm.reset().expect("reset");
    assert_eq!(g.rip(), LOAD_ADDR);
    assert_eq!(g.read(LOAD_ADDR, COUNTDOWN_CODE.len()), COUNTDOWN_CODE);
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(bp), "planted again");
    assert_eq!(g.regs().rcx, 3);
}
