//! VMM tier: the VMM API (`kvmgdb::vmm::Vm`) driven in this process on real KVM, with no
//! debugger and no child process. This file: the life of a vCPU — kicks, halts, triple
//! faults, isa-debug-exit, serial output, register writes and reset.

mod vmm_support;

use kvmgdb::vmm::VmError;
use kvmgdb::vmm::stop::VcpuStop;
use std::time::{Duration, Instant};
use vmm_support::*;

#[rustfmt::skip]
const SPIN_CODE: &[u8] = &[
    0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, // +0 1: incq 0x200000   (DATA)
    0xeb, 0xf6,                                     // +8    jmp 1b
];

/// Lets the spinning guest run until its counter at DATA passes `past`, then kicks it.
fn kick_after_progress(g: &mut Guest, past: u64) {
    g.vm.resume(&[(VCPU, false)]).expect("resume");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while u64::from_le_bytes(g.read(DATA, 8).try_into().unwrap()) <= past {
        assert!(Instant::now() < deadline, "the guest made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stops = g.vm.stop_all();
    assert_eq!(stops.len(), 1, "one stop for the one vCPU");
    assert_eq!(stops[0].id, VCPU);
    assert_eq!(stops[0].stop, VcpuStop::Kicked);
    assert!(!g.vm.any_running());
}

#[test]
fn stop_all_kicks_a_spinning_guest_inside_its_loop() {
    let mut g = boot(SPIN_CODE);
    kick_after_progress(&mut g, 0);
    let rip = g.rip();
    assert!(
        rip == LOAD_ADDR || rip == LOAD_ADDR + 8,
        "RIP {rip:#x} is on an instruction of the loop"
    );
    assert_eq!(g.vm.last_stop(VCPU), Some(VcpuStop::Kicked));
    assert_eq!(g.vm.frozen(VCPU), None);
}

#[test]
fn a_running_vcpu_refuses_register_access() {
    let mut g = boot(SPIN_CODE);
    g.vm.resume(&[(VCPU, false)]).expect("resume");
    assert!(g.vm.any_running());
    assert!(
        matches!(g.vm.state(VCPU), Err(VmError::Running(VCPU))),
        "state() of a running vCPU"
    );
    let regs = kvm_bindings::kvm_regs::default();
    assert!(matches!(
        g.vm.set_regs(VCPU, regs),
        Err(VmError::Running(VCPU))
    ));
    assert_eq!(g.vm.stop_all().len(), 1);
    assert!(g.vm.state(VCPU).is_ok(), "readable once stopped");
}

#[test]
fn an_idle_hlt_waits_for_a_kick_and_resumes_idle() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xfb,       // +0 sti
        0xf4,       // +1 hlt          (interrupts on: waits for one)
        0xff, 0xc1, // +2 inc %ecx
        0xfa,       // +4 cli
        0xf4,       // +5 hlt
    ];
    let mut g = boot(CODE);
    g.vm.resume(&[(VCPU, false)]).expect("resume");
    std::thread::sleep(Duration::from_millis(20));
    assert!(g.vm.poll_event().is_none(), "an idle hlt is no stop");
    let stops = g.vm.stop_all();
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].stop, VcpuStop::Kicked);
    assert_eq!(
        g.vm.frozen(VCPU),
        None,
        "an idle hlt does not freeze the vCPU"
    );
    assert_eq!(g.regs().rcx, 0, "nothing after the hlt ran");
    // Resuming goes back to waiting, not on to the next instruction.
    g.vm.resume(&[(VCPU, false)]).expect("resume");
    std::thread::sleep(Duration::from_millis(20));
    assert!(g.vm.poll_event().is_none(), "still idle");
    assert_eq!(g.vm.stop_all()[0].stop, VcpuStop::Kicked);
    assert_eq!(g.regs().rcx, 0);
}

#[test]
fn a_kicked_guest_resumes_where_it_stopped_and_can_be_kicked_again() {
    let mut g = boot(SPIN_CODE);
    kick_after_progress(&mut g, 0);
    let count = u64::from_le_bytes(g.read(DATA, 8).try_into().unwrap());
    assert!(g.vm.poll_event().is_none(), "stop_all left no stray stop");
    kick_after_progress(&mut g, count);
    assert!(
        g.vm.stop_all().is_empty(),
        "nothing to stop on a stopped machine"
    );
}

#[test]
fn cli_hlt_halts_and_freezes_the_vcpu() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xfa, // +0 cli
        0xf4, // +1 hlt
    ];
    let mut g = boot(CODE);
    let ev = g.cont();
    assert_eq!(ev.stop, VcpuStop::Halted);
    assert_eq!(g.rip(), LOAD_ADDR + 2, "RIP past the hlt");
    assert_eq!(g.vm.frozen(VCPU), Some(VcpuStop::Halted));
    let again = g.cont();
    assert_eq!(
        again.stop,
        VcpuStop::Halted,
        "resuming reports the halt again"
    );
    assert_eq!(again.state.regs.rip, LOAD_ADDR + 2);
    assert_eq!(g.step().stop, VcpuStop::Halted, "and so does a step");
}

#[test]
fn a_triple_fault_shuts_the_vcpu_down() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x0f, 0x0b, // +0 ud2   (#UD with an IDT of limit 0: #GP, #DF, triple fault)
    ];
    let mut g = boot(CODE);
    assert_eq!(g.cont().stop, VcpuStop::Shutdown);
    assert_eq!(g.vm.frozen(VCPU), Some(VcpuStop::Shutdown));
    assert_eq!(
        g.cont().stop,
        VcpuStop::Shutdown,
        "resuming reports it again"
    );
}

#[test]
fn isa_debug_exit_reports_the_guest_status() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xb0, 0x2a, // +0 mov $0x2a, %al
        0xe6, 0xf4, // +2 out %al, $0xf4   (isa-debug-exit)
    ];
    let mut g = boot(CODE);
    assert_eq!(g.cont().stop, VcpuStop::Exit(0x55));
    assert_eq!(g.vm.frozen(VCPU), Some(VcpuStop::Exit(0x55)));
}

#[test]
fn the_guest_prints_through_com1() {
    let mut g = boot(HELLO_CODE);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    assert_eq!(g.serial.text(), "hello\n");
}

#[test]
fn reset_puts_the_vcpu_back_at_its_entry_state() {
    let mut g = boot(HELLO_CODE);
    let boot_state = g.vm.state(VCPU).expect("state");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    g.vm.reset().expect("reset");
    assert_eq!(g.vm.frozen(VCPU), None, "reset forgets the exit");
    let state = g.vm.state(VCPU).expect("state");
    assert_eq!(state.regs, boot_state.regs);
    assert_eq!(state.sregs.cr3, boot_state.sregs.cr3);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    assert_eq!(
        g.serial.text(),
        "hello\nhello\n",
        "the guest ran again from the start"
    );
}

#[rustfmt::skip]
const REGWRITE_CODE: &[u8] = &[
    0xeb, 0xfe, // +0 jmp .           (spins unless RIP is moved past it)
    0x89, 0xd8, // +2 mov %ebx, %eax
    0xe6, 0xf4, // +4 out %al, $0xf4  (isa-debug-exit)
];

#[test]
fn a_register_write_takes_effect_in_the_guest() {
    let mut g = boot(REGWRITE_CODE);
    g.edit_regs(|r| {
        r.rip = LOAD_ADDR + 2;
        r.rbx = 0x10;
    });
    assert_eq!(g.rip(), LOAD_ADDR + 2, "state() shows the pending write");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rax & 0xff, 0x10);
}

#[test]
fn a_register_write_after_a_stop_takes_effect_on_the_next_step() {
    let mut g = boot(REGWRITE_CODE);
    g.steps(1);
    assert_eq!(g.rip(), LOAD_ADDR, "`jmp .` stays put");
    g.edit_regs(|r| {
        r.rip = LOAD_ADDR + 2;
        r.rbx = 0x1234_5678;
    });
    g.steps(1);
    let regs = g.regs();
    assert_eq!(regs.rip, LOAD_ADDR + 4);
    assert_eq!(regs.rax, 0x1234_5678);
}
