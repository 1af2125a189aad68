//! VMM tier: the VMM API (`kvmgdb::vmm::Vm`) driven in this process on real KVM, with no
//! debugger and no child process. This file: single-stepping, including over port I/O and
//! MMIO, where a step must still be exactly one instruction with the access completed.

mod vmm_support;

use kvmgdb::vmm::stop::VcpuStop;
use vmm_support::*;

#[rustfmt::skip]
const OUT_CODE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // +0  mov $0x3f8, %dx      (COM1 data)
    0xb0, 0x41,             // +4  mov $'A', %al
    0xee,                   // +6  out %al, (%dx)
    0xb0, 0x42,             // +7  mov $'B', %al
    0xee,                   // +9  out %al, (%dx)
    0xfa,                   // +10 cli
    0xf4,                   // +11 hlt
];

#[test]
fn stepping_an_out_runs_that_instruction_once_and_stops_at_the_next() {
    let mut g = boot(OUT_CODE);
    g.steps(2);
    assert_eq!(g.rip(), LOAD_ADDR + 6);
    assert_eq!(g.serial.text(), "", "nothing is printed before the out");
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(
        g.rip(),
        LOAD_ADDR + 7,
        "RIP at the instruction after the out"
    );
    assert_eq!(g.serial.text(), "A", "the out wrote its byte once");
    // The next step runs only the `mov`, not the second `out`.
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 9);
    assert_eq!(g.regs().rax & 0xff, 0x42);
    assert_eq!(g.serial.text(), "A");
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 10);
    assert_eq!(g.serial.text(), "AB");
}

#[rustfmt::skip]
const IN_CODE: &[u8] = &[
    0x66, 0xba, 0xff, 0x03,       // +0  mov $0x3ff, %dx     (COM1 scratch register)
    0xb0, 0x5a,                   // +4  mov $0x5a, %al
    0xee,                         // +6  out %al, (%dx)
    0xb8, 0x00, 0x56, 0x34, 0x12, // +7  mov $0x12345600, %eax
    0xec,                         // +12 in (%dx), %al
    0xff, 0xc1,                   // +13 inc %ecx
    0xfa,                         // +15 cli
    0xf4,                         // +16 hlt
];

#[test]
fn stepping_an_in_loads_the_port_value_and_stops_at_the_next_instruction() {
    let mut g = boot(IN_CODE);
    g.steps(4);
    assert_eq!(g.rip(), LOAD_ADDR + 12);
    assert_eq!(g.regs().rax, 0x1234_5600);
    assert_eq!(g.step().stop, VcpuStop::Step);
    let regs = g.regs();
    assert_eq!(
        regs.rip,
        LOAD_ADDR + 13,
        "RIP at the instruction after the in"
    );
    assert_eq!(
        regs.rax, 0x1234_565a,
        "AL holds the scratch register's value, the rest of RAX is untouched"
    );
    assert_eq!(regs.rcx, 0, "the instruction after the in has not run");
}

#[rustfmt::skip]
const MMIO_WRITE_CODE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x00, 0xd0,       // +0  mov $0xd0000000, %ebx   (no RAM there)
    0xc7, 0x03, 0x44, 0x33, 0x22, 0x11, // +5  movl $0x11223344, (%rbx)
    0xff, 0xc1,                         // +11 inc %ecx
    0xfa,                               // +13 cli
    0xf4,                               // +14 hlt
];

#[test]
fn stepping_an_mmio_write_stops_at_the_next_instruction() {
    let mut g = boot(MMIO_WRITE_CODE);
    g.steps(1);
    assert_eq!(g.regs().rbx, MMIO);
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(
        g.rip(),
        LOAD_ADDR + 11,
        "RIP at the instruction after the store"
    );
    assert_eq!(
        g.regs().rcx,
        0,
        "the instruction after the store has not run"
    );
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 13);
    assert_eq!(
        g.regs().rcx,
        1,
        "the next step runs the next instruction once"
    );
}

#[rustfmt::skip]
const MMIO_READ_CODE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x00, 0xd0, // +0  mov $0xd0000000, %ebx   (no RAM there)
    0x8b, 0x03,                   // +5  mov (%rbx), %eax
    0xff, 0xc1,                   // +7  inc %ecx
    0xfa,                         // +9  cli
    0xf4,                         // +10 hlt
];

#[test]
fn stepping_an_mmio_read_loads_all_ones_and_stops_at_the_next_instruction() {
    let mut g = boot(MMIO_READ_CODE);
    g.steps(1);
    assert_eq!(g.step().stop, VcpuStop::Step);
    let regs = g.regs();
    assert_eq!(
        regs.rip,
        LOAD_ADDR + 7,
        "RIP at the instruction after the load"
    );
    assert_eq!(
        regs.rax, 0xffff_ffff,
        "an access with no device reads all-ones"
    );
    assert_eq!(regs.rcx, 0, "the instruction after the load has not run");
}

#[rustfmt::skip]
const STEPS_CODE: &[u8] = &[
    0x90,                         // +0  nop
    0xb8, 0x34, 0x12, 0x00, 0x00, // +1  mov $0x1234, %eax
    0x48, 0xff, 0xc1,             // +6  inc %rcx
    0x48, 0xba, 0x88, 0x77, 0x66, // +9  movabs $0x1122334455667788, %rdx
    0x55, 0x44, 0x33, 0x22, 0x11,
    0x01, 0xc1,                   // +19 add %eax, %ecx
    0xfa,                         // +21 cli
    0xf4,                         // +22 hlt
];

#[test]
fn several_steps_move_one_instruction_each() {
    let mut g = boot(STEPS_CODE);
    assert_eq!(g.rip(), LOAD_ADDR, "the vCPU starts at the entry point");
    for (i, off) in [1, 6, 9, 19, 21].into_iter().enumerate() {
        let ev = g.step();
        assert_eq!(ev.stop, VcpuStop::Step, "step {i}");
        assert_eq!(
            ev.state.regs.rip,
            LOAD_ADDR + off,
            "the stop's RIP after step {i}"
        );
        assert_eq!(g.rip(), LOAD_ADDR + off, "state()'s RIP after step {i}");
    }
    let regs = g.regs();
    assert_eq!(regs.rax, 0x1234);
    assert_eq!(regs.rdx, 0x1122_3344_5566_7788);
    assert_eq!(regs.rcx, 0x1235, "inc then add, each once");
    assert_eq!(g.vm.last_stop(VCPU), Some(VcpuStop::Step));
}

#[rustfmt::skip]
const MULTIBOOT_CODE: &[u8] = &[
    0x40,       // +0 inc %eax          (in 64-bit mode this byte would be a REX prefix)
    0xe6, 0xf4, // +1 out %al, $0xf4    (isa-debug-exit)
];

#[test]
fn a_multiboot_guest_steps_as_32_bit_code_from_its_entry_state() {
    let mut g = boot_multiboot(MULTIBOOT_CODE);
    let entry = multiboot_entry();
    let state = g.vm.state(VCPU).expect("state");
    assert_eq!(state.regs.rip, entry);
    assert_eq!(state.regs.rax, 0x2bad_b002, "the Multiboot magic in EAX");
    assert_eq!(state.sregs.cr0 & 1, 1, "protected mode");
    assert_eq!(state.sregs.cr0 >> 31, 0, "paging off");
    assert_eq!(
        (state.sregs.cs.l, state.sregs.cs.db),
        (0, 1),
        "32-bit code segment"
    );
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), entry + 1, "0x40 ran alone, as a 32-bit `inc %eax`");
    assert_eq!(g.regs().rax, 0x2bad_b003);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x03)));
}
