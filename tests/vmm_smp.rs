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

/// An application processor is created waiting for INIT-SIPI: KVM's reset state (real mode
/// at F000:FFF0), blocked in KVM_RUN without running, and a kick still stops it.
#[test]
fn an_application_processor_waits_for_sipi_and_a_kick_stops_it() {
    #[rustfmt::skip]
    const SPIN: &[u8] = &[
        0xeb, 0xfe, // 1: jmp 1b
    ];
    let mut g = boot_smp_waiting(SPIN, VCPUS);
    let ap = g.vm.state(1).expect("AP state");
    assert_eq!(
        (ap.sregs.cs.selector, ap.regs.rip),
        (0xf000, 0xfff0),
        "the AP is at the reset vector"
    );
    g.vm.resume(&[(1, false)]).expect("resume the AP");
    // Long enough for the halt watcher to probe the blocked thread a few times.
    std::thread::sleep(Duration::from_millis(350));
    assert!(g.vm.any_running(), "a waiting AP is no stop");
    let start = Instant::now();
    let stops = g.vm.stop_all();
    let took = start.elapsed();
    let ids: Vec<(usize, VcpuStop)> = stops.iter().map(|s| (s.id, s.stop)).collect();
    assert_eq!(ids, [(1, VcpuStop::Kicked)]);
    let after = g.vm.state(1).unwrap();
    assert_eq!((after.sregs.cs.selector, after.regs.rip), (0xf000, 0xfff0));
    assert!(took < STOP_TIMEOUT, "the kick took {took:?}");
    eprintln!("stop_all of an AP waiting for SIPI took {took:?}");
}

/// The address of `symbol` in the ELF at `path`, from binutils' `nm` (which builds the
/// guests).
fn symbol(path: &std::path::Path, symbol: &str) -> u64 {
    let out = std::process::Command::new("nm")
        .arg(path)
        .output()
        .expect("run nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, _, name) = (f.next()?, f.next()?, f.next()?);
            (name == symbol).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("no symbol {symbol} in {}", path.display()))
}

/// The SMP guest on 4 vCPUs: the BSP starts every AP with INIT-SIPI-SIPI (real mode → long
/// mode in its trampoline), and each CPU's counter moves.
#[test]
fn the_smp_guest_starts_every_ap_by_init_sipi() {
    const CPUS: usize = 4;
    let path = kvmgdb::guests::guest_dir().join("smp.elf");
    let image = std::fs::read(&path).expect("smp.elf is built");
    let counters = symbol(&path, "per_cpu_counter");
    let started = symbol(&path, "cpus_started");
    let mut g = boot_image_bytes(&image, CPUS);
    let all: Vec<(usize, bool)> = (0..CPUS).map(|id| (id, false)).collect();
    g.vm.resume(&all).expect("resume all");
    let read_counters = |g: &Guest| -> Vec<u64> {
        g.read(counters, 8 * CPUS)
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    while u32::from_le_bytes(g.read(started, 4).try_into().unwrap()) < CPUS as u32 {
        assert!(
            Instant::now() < deadline,
            "not every CPU started: {} of {CPUS}; serial: {:?}; counters {:?}",
            u32::from_le_bytes(g.read(started, 4).try_into().unwrap()),
            g.serial.text(),
            read_counters(&g)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("all {CPUS} CPUs counting after {:?}", t0.elapsed());
    let before = read_counters(&g);
    std::thread::sleep(Duration::from_millis(200));
    let after = read_counters(&g);
    let stops = g.vm.stop_all();
    assert_eq!(stops.len(), CPUS, "one stop per CPU");
    for cpu in 0..CPUS {
        assert!(
            after[cpu] > before[cpu],
            "CPU {cpu}'s counter moves: {before:?} → {after:?}"
        );
    }
    let text = g.serial.text();
    assert!(text.contains("smp: 4 CPUs in the MADT"), "{text}");
    for cpu in 1..CPUS {
        assert!(text.contains(&format!("smp: CPU {cpu} started")), "{text}");
    }
}
