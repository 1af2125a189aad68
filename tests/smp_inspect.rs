//! Inspecting an SMP guest through the monitor and a core file, with the real gdb on
//! real KVM: `smp.elf` on 8 vCPUs (`--cpus 8`), its boot processor having started the
//! other seven by INIT-SIPI-SIPI. `monitor info cpus` lists every CPU with its activity
//! and marks the selected thread's; `monitor info registers` and the page-table commands
//! show the selected thread's CPU; `monitor dump` writes one thread per CPU, which gdb
//! reads back with the registers each CPU had. (gdb's own `gcore` cannot write a core of
//! a target that is not a Linux process: README, "Monitor commands".)

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The vCPUs of the machines here.
const CPUS: usize = 8;
/// How long the guest may take to start its APs (a few seconds of emulated CPL0 code).
const AP_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `CPU #k:` lines of `monitor info cpus`, in order, each as (marked with `*`, line).
fn cpu_lines(text: &str) -> Vec<(bool, String)> {
    text.lines()
        .filter_map(|l| {
            let marked = l.starts_with("* CPU #");
            (marked || l.starts_with("  CPU #")).then(|| (marked, l.to_string()))
        })
        .collect()
}

/// The activity word in brackets after the pc of an `info cpus` line.
fn activity(line: &str) -> &str {
    between(line, " (", ") ")
}

/// Thread number → its registers, from `tag thread=N pc=… sp=… rax=…` lines.
fn thread_regs(out: &str, tag: &str) -> BTreeMap<u64, BTreeMap<String, u64>> {
    tagged(out, tag)
        .into_iter()
        .map(|m| (m["thread"], m))
        .collect()
}

/// `smp.elf` on [`CPUS`] vCPUs, running, once every CPU counts.
fn running_smp_guest(dir: &TestDir) -> Kvmgdb {
    let extra = ["--cpus", "8"];
    let mut k = Kvmgdb::start(
        dir,
        Boot {
            no_wait: true,
            extra: &extra,
            ..Boot::guest("smp.elf")
        },
    );
    wait_for_serial(
        &mut k,
        &format!("smp: CPU {} started", CPUS - 1),
        Instant::now(),
        AP_START_TIMEOUT,
    );
    k
}

#[test]
fn monitor_and_core_file_cover_every_vcpu() {
    require_kvm_and_gdb();
    let dir = TestDir::new("smp_monitor_and_core");
    let elf = guest("smp.elf");
    let mut k = running_smp_guest(&dir);
    let out = k.gdb(&dir, "monitor-smp.gdb", &elf);

    let threads = section(&out, "threads");
    let rows = threads
        .lines()
        .filter(|l| {
            l.trim_start_matches(['*', ' '])
                .starts_with(|c: char| c.is_ascii_digit())
        })
        .count();
    assert_eq!(rows, CPUS, "info threads lists every CPU:\n{out}");

    // Every CPU, each with an activity word; one CPU marked, and after `thread 3` CPU 2.
    let cpus = cpu_lines(&section(&out, "cpus"));
    assert_eq!(cpus.len(), CPUS, "info cpus lists every CPU:\n{out}");
    assert_eq!(cpus.iter().filter(|(m, _)| *m).count(), 1, "{out}");
    for (i, (_, l)) in cpus.iter().enumerate() {
        assert!(l.contains(&format!("CPU #{i}: pc=0x")), "{l}");
        assert!(
            ["running", "halted", "wait-for-SIPI"].contains(&activity(l)),
            "activity word in {l}"
        );
        assert_contains(l, "64-bit long mode, CPL 0");
    }
    let after_thread3 = cpu_lines(&section(&out, "cpus-thread3"));
    let marked: Vec<usize> = (0..after_thread3.len())
        .filter(|&i| after_thread3[i].0)
        .collect();
    assert_eq!(marked, [2], "thread 3 is CPU 2:\n{out}");

    // `info registers` is the selected thread's CPU: thread 4, CPU 3, at gdb's $pc.
    let regs = section(&out, "regs-thread4");
    let pc4 = tagged_one(&regs, "thread4")["pc"];
    assert_contains(&regs, "CPU#3 64-bit long mode");
    assert_contains(&regs, &format!("RIP={pc4:016x}"));
    assert_not_contains(&regs, "CPU#0");
    assert_contains(&section(&out, "mem-thread4"), "(vCPU 3)");

    // The live registers of every thread, then the core file gdb reads back.
    let live = thread_regs(&out, "live");
    assert_eq!(live.len(), CPUS, "{out}");
    assert_eq!(live[&4]["pc"], pc4);
    let core = dir.join("smp.core");
    assert_contains(
        &section(&out, "dump"),
        &format!("wrote {}: ", core.display()),
    );
    assert_contains(&section(&out, "dump"), &format!("{CPUS} vCPU(s)"));
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());

    let from_core = gdb_on_core(&dir, "core-smp.gdb", &elf, &core);
    let threads = section(&from_core, "threads");
    for t in 1..=CPUS {
        // gdb names a core's threads after their pr_pid: CPU n is LWP n + 1.
        assert!(
            threads.lines().any(|l| l
                .trim_start_matches(['*', ' '])
                .starts_with(&format!("{t}    LWP {t} "))),
            "thread {t} is LWP {t}:\n{from_core}"
        );
    }
    assert_eq!(
        thread_regs(&from_core, "core"),
        live,
        "each thread of the core has its CPU's live registers:\n{from_core}"
    );
}

/// Before the guest has run, only the boot processor is running; the others wait for
/// their start-up IPI.
#[test]
fn info_cpus_at_the_entry_shows_the_aps_waiting_for_sipi() {
    require_kvm_and_gdb();
    let dir = TestDir::new("smp_cpus_at_entry");
    let extra = ["--cpus", "8"];
    let k = Kvmgdb::start(
        &dir,
        Boot {
            extra: &extra,
            ..Boot::guest("smp.elf")
        },
    );
    let out = k.gdb(&dir, "monitor-smp-entry.gdb", &guest("smp.elf"));
    let cpus = cpu_lines(&section(&out, "cpus"));
    assert_eq!(cpus.len(), CPUS, "{out}");
    let words: Vec<&str> = cpus.iter().map(|(_, l)| activity(l)).collect();
    let mut want = vec!["wait-for-SIPI"; CPUS];
    want[0] = "running";
    assert_eq!(words, want, "{out}");
    assert!(cpus[0].0, "CPU 0 is the selected thread's:\n{out}");
}
