//! VMM tier: the VMM API (`kvmgdb::vmm::Vm`) driven in this process on real KVM, with no
//! debugger and no child process. This file: watchpoints — which accesses stop, the address
//! they report, and that the access has completed when they do.

mod vmm_support;

use kvmgdb::vmm::debug::watch::WatchKind;
use kvmgdb::vmm::stop::VcpuStop;
use vmm_support::*;

#[rustfmt::skip]
const WRITE_CODE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x20, 0x00,             // +0  mov $0x200000, %ebx    (DATA)
    0xc7, 0x43, 0x08, 0x44, 0x33, 0x22, 0x11, // +5  movl $0x11223344, 8(%rbx)
    0xff, 0xc1,                               // +12 inc %ecx
    0xb0, 0x10,                               // +14 mov $0x10, %al
    0xe6, 0xf4,                               // +16 out %al, $0xf4   (isa-debug-exit)
];

#[test]
fn a_write_watchpoint_stops_after_the_write_with_its_address() {
    let mut g = boot(WRITE_CODE);
    g.vm.add_watchpoint(VCPU, DATA + 8, 4, WatchKind::Write)
        .expect("add_watchpoint");
    let ev = g.cont();
    let want = VcpuStop::Watch {
        kind: WatchKind::Write,
        addr: DATA + 8,
    };
    assert_eq!(ev.stop, want);
    assert_eq!(
        g.rip(),
        LOAD_ADDR + 12,
        "RIP at the instruction after the store"
    );
    assert_eq!(
        g.regs().rcx,
        0,
        "the instruction after the store has not run"
    );
    assert_eq!(g.read_u32(DATA + 8), 0x1122_3344, "the write has completed");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rcx, 1);
}

#[test]
fn a_write_watchpoint_reports_the_first_watched_byte_written() {
    let mut g = boot(WRITE_CODE);
    // The store covers DATA+8..DATA+12; only its third byte is watched.
    g.vm.add_watchpoint(VCPU, DATA + 10, 1, WatchKind::Write)
        .expect("add_watchpoint");
    let want = VcpuStop::Watch {
        kind: WatchKind::Write,
        addr: DATA + 10,
    };
    assert_eq!(g.cont().stop, want);
    assert_eq!(g.read(DATA + 8, 4), [0x44, 0x33, 0x22, 0x11]);
}

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

#[test]
fn a_read_watchpoint_ignores_writes() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    g.vm.add_watchpoint(VCPU, DATA + 8, 4, WatchKind::Read)
        .expect("add_watchpoint");
    let ev = g.cont();
    let want = VcpuStop::Watch {
        kind: WatchKind::Read,
        addr: DATA + 8,
    };
    assert_eq!(ev.stop, want, "the first stop is the read, not the write");
    let regs = g.regs();
    assert_eq!(
        regs.rip,
        LOAD_ADDR + 17,
        "RIP at the instruction after the load"
    );
    assert_eq!(regs.rcx, 1, "the write went by without a stop");
    assert_eq!(
        regs.rax, 0x1122_3344,
        "the load has completed with the written value"
    );
    assert_eq!(g.read_u32(DATA + 8), 0x1122_3344, "the write reached RAM");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
}

#[test]
fn an_access_watchpoint_stops_at_the_write_and_at_the_read() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    g.vm.add_watchpoint(VCPU, DATA + 8, 4, WatchKind::Access)
        .expect("add_watchpoint");
    let want = VcpuStop::Watch {
        kind: WatchKind::Access,
        addr: DATA + 8,
    };
    assert_eq!(g.cont().stop, want, "the write");
    assert_eq!(g.rip(), LOAD_ADDR + 12);
    assert_eq!(g.cont().stop, want, "the read");
    assert_eq!(g.rip(), LOAD_ADDR + 17);
    assert_eq!(g.regs().rax, 0x1122_3344);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
}

#[test]
fn a_removed_watchpoint_no_longer_stops() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    g.vm.add_watchpoint(VCPU, DATA + 8, 4, WatchKind::Access)
        .expect("add_watchpoint");
    assert!(g.vm.remove_watchpoint(DATA + 8, 4, WatchKind::Access));
    assert!(!g.vm.remove_watchpoint(DATA + 8, 4, WatchKind::Access));
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rcx, 2);
}

#[rustfmt::skip]
const ELSEWHERE_CODE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x20, 0x00,       // +0  mov $0x200000, %ebx    (DATA)
    0xc7, 0x03, 0x44, 0x33, 0x22, 0x11, // +5  movl $0x11223344, (%rbx)
    0x8b, 0x43, 0x10,                   // +11 mov 0x10(%rbx), %eax
    0xb0, 0x10,                         // +14 mov $0x10, %al
    0xe6, 0xf4,                         // +16 out %al, $0xf4   (isa-debug-exit)
];

#[test]
fn accesses_elsewhere_on_a_watched_page_do_not_stop() {
    let mut g = boot(ELSEWHERE_CODE);
    // DATA+8..DATA+12 is watched; the guest writes DATA..DATA+4 and reads DATA+0x10.
    g.vm.add_watchpoint(VCPU, DATA + 8, 4, WatchKind::Access)
        .expect("add_watchpoint");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(
        g.read_u32(DATA),
        0x1122_3344,
        "the write beside the watch landed"
    );
    assert_eq!(g.read_u32(DATA + 8), 0, "the watched bytes are untouched");
}

#[test]
fn a_read_watchpoint_on_the_code_page_lets_the_code_run() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    // Same page as the code, but nothing reads it: every fetch must still work.
    g.vm.add_watchpoint(VCPU, LOAD_ADDR + 0x800, 8, WatchKind::Read)
        .expect("add_watchpoint");
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
    assert_eq!(g.regs().rcx, 2, "every instruction ran");
    assert_eq!(g.read_u32(DATA + 8), 0x1122_3344);
}

#[test]
fn stepping_under_a_watchpoint_on_the_code_page_moves_one_instruction_each() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    g.vm.add_watchpoint(VCPU, LOAD_ADDR + 0x800, 8, WatchKind::Access)
        .expect("add_watchpoint");
    for off in [5, 12, 14, 17, 19, 21] {
        assert_eq!(g.step().stop, VcpuStop::Step);
        assert_eq!(g.rip(), LOAD_ADDR + off);
    }
    assert_eq!(g.regs().rax & 0xff, 0x10);
}

#[test]
fn stepping_over_a_watched_access_completes_it_once() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    g.vm.add_watchpoint(VCPU, DATA + 8, 4, WatchKind::Access)
        .expect("add_watchpoint");
    g.steps(1);
    // Whether a step over a watched access reports the step or the watchpoint, it runs
    // exactly that instruction, completed.
    let ev = g.step();
    assert!(
        matches!(ev.stop, VcpuStop::Step | VcpuStop::Watch { .. }),
        "{:?}",
        ev.stop
    );
    assert_eq!(g.rip(), LOAD_ADDR + 12);
    assert_eq!(g.read_u32(DATA + 8), 0x1122_3344);
    g.steps(1);
    let ev = g.step();
    assert!(
        matches!(ev.stop, VcpuStop::Step | VcpuStop::Watch { .. }),
        "{:?}",
        ev.stop
    );
    let regs = g.regs();
    assert_eq!(regs.rip, LOAD_ADDR + 17);
    assert_eq!((regs.rax, regs.rcx), (0x1122_3344, 1));
}

#[test]
fn a_read_watchpoint_and_a_breakpoint_after_it_both_stop() {
    let mut g = boot(WRITE_THEN_READ_CODE);
    let bp = LOAD_ADDR + 19; // mov $0x10, %al
    g.vm.add_watchpoint(VCPU, DATA + 8, 4, WatchKind::Read)
        .expect("add_watchpoint");
    g.vm.add_sw_breakpoint(VCPU, bp).expect("add_sw_breakpoint");
    let watch = VcpuStop::Watch {
        kind: WatchKind::Read,
        addr: DATA + 8,
    };
    assert_eq!(g.cont().stop, watch);
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(bp));
    assert_eq!(g.regs().rcx, 2);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0x10)));
}
