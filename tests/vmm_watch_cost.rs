//! VMM tier: what watchpoints cost. Each one carves its page out of guest RAM's memory
//! slots, and a change must cost KVM_SET_USER_MEMORY_REGION calls for the slots it changes
//! only, not for every slot (issue 8, defect 12: 1,000 watchpoints took ~18 s to insert
//! and as long to remove when every change re-registered every slot).

mod vmm_support;

use kvmgdb::vmm::debug::watch::WatchKind;
use kvmgdb::vmm::stop::VcpuStop;
use std::time::{Duration, Instant};
use vmm_support::*;

/// Watchpoints set: one on each of this many pages.
const WATCHES: u64 = 1000;
/// Every other page, so no two watched pages merge into one slot: the worst case, with
/// 2 × [`WATCHES`] + 1 slots at the peak.
const STRIDE: u64 = 2 * 4096;
/// A generous bound on inserting and removing them all: a change proportional to its size
/// took ~3 s for both in a debug build on a loaded 2-core PVM host, re-registering every
/// slot each time ~150 s there (~36 s on an idle one).
const BOUND: Duration = Duration::from_secs(10);

#[rustfmt::skip]
const STORE_CODE: &[u8] = &[
    0xc7, 0x03, 0x44, 0x33, 0x22, 0x11, // +0  movl $0x11223344, (%rbx)
    0xff, 0xc1,                         // +6  inc %ecx
    0x90,                               // +8  nop   (the breakpoint DONE)
];

/// Where each run of the store ends: a breakpoint, as a stop the vCPU resumes from (an
/// `hlt` or a debug exit ends the machine for good).
const DONE: u64 = LOAD_ADDR + 8;

/// The watched address on page `i`: a few bytes in, so page offsets are exercised too.
fn watched(i: u64) -> u64 {
    DATA + i * STRIDE + 0x10
}

/// Runs the store to `addr` from the start of the code and returns the stop.
fn store_to(g: &mut Guest, addr: u64) -> VcpuStop {
    g.edit_regs(|r| {
        r.rip = LOAD_ADDR;
        r.rbx = addr;
    });
    g.cont().stop
}

#[test]
fn a_thousand_watchpoints_cost_in_proportion_to_each_change() {
    let mut g = boot(STORE_CODE);
    g.vm.add_sw_breakpoint(VCPU, DONE)
        .expect("add_sw_breakpoint");
    assert!(
        watched(WATCHES) < MEMORY_SIZE,
        "the watched pages lie in RAM"
    );
    let started = Instant::now();
    for i in 0..WATCHES {
        g.vm.add_watchpoint(VCPU, watched(i), 4, WatchKind::Write)
            .unwrap_or_else(|e| panic!("add_watchpoint {i}: {e}"));
    }
    let inserted = started.elapsed();

    // Sampled: the first, the last and some between each stop at their own address, and
    // a store beside a watched range (same page) runs on.
    let samples = [0, 1, 2, WATCHES / 3, WATCHES / 2, WATCHES - 2, WATCHES - 1];
    for i in samples {
        let want = VcpuStop::Watch {
            kind: WatchKind::Write,
            addr: watched(i),
        };
        assert_eq!(store_to(&mut g, watched(i)), want, "watchpoint {i}");
        assert_eq!(g.read_u32(watched(i)), 0x1122_3344, "watchpoint {i}");
        assert_eq!(
            store_to(&mut g, watched(i) + 0x100),
            VcpuStop::SwBreakpoint(DONE),
            "a store beside watchpoint {i}"
        );
    }

    let started = Instant::now();
    for i in 0..WATCHES {
        assert!(
            g.vm.remove_watchpoint(watched(i), 4, WatchKind::Write),
            "remove_watchpoint {i}"
        );
    }
    let removed = started.elapsed();
    eprintln!(
        "{WATCHES} watchpoints on distinct pages: inserted in {inserted:?}, removed in {removed:?}"
    );
    for i in samples {
        assert_eq!(
            store_to(&mut g, watched(i)),
            VcpuStop::SwBreakpoint(DONE),
            "removed watchpoint {i} still stops"
        );
    }
    assert!(
        inserted + removed < BOUND,
        "inserting took {inserted:?} and removing {removed:?}: more than {BOUND:?}"
    );
}
