//! VMM tier: the VMM API (`kvmgdb::vmm::Vm`) driven in this process on real KVM, with no
//! debugger and no child process. This file: a machine with two vCPUs — both created,
//! stopped together, stepped one at a time, and an unknown vCPU refused everywhere.

mod vmm_support;

use kvmgdb::vmm::debug::watch::WatchKind;
use kvmgdb::vmm::stop::VcpuStop;
use kvmgdb::vmm::{DebugAddr, VmError};
use kvmgdb::x86::paging::GuestVirtAddr;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vmm_support::*;

/// Both vCPUs run the same code from the same entry state, so it touches registers only.
#[rustfmt::skip]
const COUNT_CODE: &[u8] = &[
    0x48, 0xff, 0xc0, // +0 1: inc %rax
    0xeb, 0xfb,       // +3    jmp 1b
];

const VCPUS: usize = 2;

/// Runs both vCPUs, then stops them together; returns the ids that reported a stop.
fn run_and_stop_all(g: &mut Guest) -> Vec<usize> {
    g.vm.resume(&[(0, false), (1, false)]).expect("resume both");
    assert!(g.vm.any_running());
    std::thread::sleep(Duration::from_millis(20));
    let stops = g.vm.stop_all();
    assert!(!g.vm.any_running(), "stop_all leaves no vCPU running");
    for s in &stops {
        assert_eq!(
            s.stop,
            VcpuStop::Kicked,
            "vCPU {} stopped by the kick",
            s.id
        );
    }
    stops.iter().map(|s| s.id).collect()
}

#[test]
fn two_vcpus_are_created_and_stopped_together() {
    let mut g = boot_smp(COUNT_CODE, VCPUS);
    assert_eq!(g.vm.vcpu_count(), VCPUS);
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let ids = run_and_stop_all(&mut g);
        let set: BTreeSet<usize> = ids.iter().copied().collect();
        assert_eq!(ids.len(), VCPUS, "one stop per vCPU, none twice: {ids:?}");
        assert_eq!(set, (0..VCPUS).collect(), "every vCPU reported its stop");
        let counts: Vec<u64> = (0..VCPUS)
            .map(|id| g.vm.state(id).expect("stopped vCPU state").regs.rax)
            .collect();
        for id in 0..VCPUS {
            let rip = g.vm.state(id).unwrap().regs.rip;
            assert!(
                rip == LOAD_ADDR || rip == LOAD_ADDR + 3,
                "vCPU {id} RIP {rip:#x} is on an instruction of the loop"
            );
        }
        if counts.iter().all(|&c| c > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "a vCPU never ran: {counts:?}");
    }
}

#[test]
fn stepping_one_vcpu_leaves_the_other_stopped_where_it_was() {
    let mut g = boot_smp(COUNT_CODE, VCPUS);
    let before = g.vm.state(0).unwrap().regs;
    g.vm.resume(&[(1, true)]).expect("step vCPU 1");
    let ev = wait_stop(&mut g.vm, STOP_TIMEOUT);
    assert_eq!((ev.id, ev.stop), (1, VcpuStop::Step));
    assert_eq!(g.vm.state(1).unwrap().regs.rip, LOAD_ADDR + 3);
    assert_eq!(g.vm.state(1).unwrap().regs.rax, before.rax + 1);
    let after = g.vm.state(0).unwrap().regs;
    assert_eq!(after.rip, before.rip, "vCPU 0 did not move");
    assert_eq!(after.rax, before.rax);
    assert!(!g.vm.any_running());
}

#[test]
fn an_unknown_vcpu_is_an_error_never_vcpu_0_or_physical_memory() {
    let mut g = boot_smp(COUNT_CODE, VCPUS);
    let bad = VCPUS;
    assert!(matches!(g.vm.state(bad), Err(VmError::NoVcpu(id)) if id == bad));
    assert!(matches!(g.vm.paging_regs(bad), Err(VmError::NoVcpu(_))));
    assert!(matches!(
        g.vm.resume(&[(bad, false)]),
        Err(VmError::NoVcpu(_))
    ));
    let mut buf = [0u8; 4];
    let through_bad = DebugAddr::Virt {
        vcpu: bad,
        addr: GuestVirtAddr(LOAD_ADDR),
    };
    assert!(matches!(
        g.vm.read_memory(through_bad, &mut buf),
        Err(VmError::NoVcpu(_))
    ));
    assert!(matches!(
        g.vm.write_memory(through_bad, &[0xcc]),
        Err(VmError::NoVcpu(_))
    ));
    assert_eq!(
        g.read(LOAD_ADDR, 3),
        &COUNT_CODE[..3],
        "guest code untouched"
    );
    assert!(g.vm.add_sw_breakpoint(bad, LOAD_ADDR).is_err());
    assert!(g.vm.add_watchpoint(bad, DATA, 8, WatchKind::Write).is_err());
    assert!(!g.vm.any_running(), "a refused request starts nothing");
}
