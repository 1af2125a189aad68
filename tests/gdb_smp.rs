//! Many vCPUs as gdb threads, with the real gdb on the SMP guest (guests/smp.c) on eight
//! vCPUs: thread names, per-CPU state, all-stop on every kind of stop, scheduler locking,
//! breakpoints and watchpoints seen from every CPU, and stops several CPUs make at once.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The vCPUs of these tests: eight, on a two-core host.
const CPUS: usize = 8;

/// Starts smp.elf on eight running vCPUs and waits until the guest has started them all.
fn eight_running(dir: &TestDir) -> Kvmgdb {
    let k = Kvmgdb::start_tcp(
        dir,
        Boot {
            no_wait: true,
            extra: &["--cpus", "8"],
            ..Boot::guest("smp.elf")
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let serial = k.serial_output();
        if serial.contains("smp: CPU 7 started") {
            return k;
        }
        assert!(
            Instant::now() < deadline && !serial.contains("did not start"),
            "the APs did not all start; serial:\n{serial}\nstderr:\n{}",
            k.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The rows of `info threads` (the lines that start with a thread number).
fn thread_rows(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start().trim_start_matches('*').trim_start())
        .filter(|l| l.starts_with(char::is_numeric))
        .map(str::to_string)
        .collect()
}

/// Each CPU's name and activity word from `info threads`, in thread order
/// (`Thread 3 (CPU#2 [running])`).
fn thread_names(text: &str) -> Vec<(usize, String)> {
    thread_rows(text)
        .iter()
        .filter_map(|row| {
            let rest = &row[row.find("(CPU#")? + 5..];
            let (n, rest) = rest.split_once(" [")?;
            let (word, _) = rest.split_once("])")?;
            Some((n.parse().ok()?, word.to_string()))
        })
        .collect()
}

/// The counters `c0`..`c7` of a tagged line.
fn counters(line: &BTreeMap<String, u64>) -> Vec<u64> {
    (0..CPUS).map(|c| line[&format!("c{c}")]).collect()
}

/// Ctrl-C stops every CPU, then a session goes through threads, scheduler locking,
/// breakpoints and a watchpoint on eight CPUs, then many stops made at once are each
/// reported once: three gdb sessions on one machine.
#[test]
fn eight_cpus_in_all_stop() {
    require_kvm_and_gdb();
    let dir = TestDir::new("eight_cpus_in_all_stop");
    let mut k = eight_running(&dir);
    let elf = guest("smp.elf");

    // Ctrl-C: every CPU stops, and stays stopped.
    let mut gdb = k.spawn_gdb(&dir, "smp-ctrl-c.gdb", &elf);
    gdb.wait_for_output("==continuing==\n", DEBUGGER_TIMEOUT, &k);
    std::thread::sleep(Duration::from_millis(300));
    gdb.interrupt();
    let out = gdb.finish(DEBUGGER_TIMEOUT, &k);
    assert_script_ran(&out, "smp-ctrl-c.gdb", &k);
    assert_contains(&out, "received signal SIGINT, Interrupt.");
    let read1 = counters(&tagged_one(&out, "read1"));
    let read2 = counters(&tagged_one(&out, "read2"));
    assert_eq!(read1, read2, "a CPU ran after Ctrl-C:\n{out}");
    let names = thread_names(&section(&out, "threads"));
    assert_eq!(
        names.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (0..CPUS).collect::<Vec<_>>(),
        "info threads names CPU#0..CPU#7:\n{out}"
    );
    assert!(
        names.iter().all(|(_, w)| w == "running" || w == "halted"),
        "every started CPU runs (or halts):\n{out}"
    );

    let out = k.gdb(&dir, "smp-eight.gdb", &elf);
    let names = thread_names(&section(&out, "threads"));
    assert_eq!(names.len(), CPUS, "eight named threads:\n{out}");

    // Thread 3 is CPU 2, shown through its own registers.
    let t3 = section(&out, "thread3");
    let rip = registers(&t3)["rip"];
    assert!(
        t3.contains(&format!("=> {rip:#x} <")),
        "x/i $pc is at thread 3's rip:\n{out}"
    );
    let bt = section(&out, "bt");
    for t in 1..=CPUS {
        assert_contains(&bt, &format!("\nThread {t} (Thread 1.{t} (CPU#{}", t - 1));
    }
    assert_eq!(
        bt.matches("\n#0 ").count(),
        CPUS,
        "a frame per thread:\n{out}"
    );

    let hit = section(&out, "cpu2");
    assert_contains(&hit, "Thread 3 hit Breakpoint 1, cpu2_work (");
    let h = tagged_one(&out, "hit");
    assert_eq!((h["thread"], h["cpu"]), (3, 2), "thread 3 is CPU 2:\n{out}");

    // Scheduler locking: only CPU 1 steps.
    let (l1, l2) = (tagged_one(&out, "locked1"), tagged_one(&out, "locked2"));
    assert_eq!(l2["thread"], 2, "{out}");
    assert_eq!(l1["c0"], l2["c0"], "CPU 0 ran during a locked step:\n{out}");
    assert_eq!(l1["c2"], l2["c2"], "CPU 2 ran during a locked step:\n{out}");
    assert!(
        l2["c1"] - l1["c1"] <= 30,
        "30 steps of CPU 1 moved its counter further than 30 instructions:\n{out}"
    );
    // Without it the other CPUs run while CPU 1 steps.
    let (f1, f2) = (tagged(&out, "free1"), tagged(&out, "free2"));
    let others = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    assert!(
        others(&f2[0]) > others(&f1[0]),
        "no other CPU ran during 30 unlocked steps of CPU 1:\n{out}"
    );

    // The hardware breakpoint is hit by every CPU in turn.
    let turns: Vec<u64> = tagged(&out, "turn").iter().map(|t| t["thread"]).collect();
    assert_eq!(turns.len(), 10, "{out}");
    for (a, b) in turns.iter().zip(&turns[1..]) {
        assert_eq!(
            *b,
            a % CPUS as u64 + 1,
            "turns out of order {turns:?}:\n{out}"
        );
    }
    for t in tagged(&out, "turn") {
        assert_eq!(t["cpu"] + 1, t["thread"], "{out}");
    }

    let watch = section(&out, "watch");
    assert_contains(&watch, "Thread 4 hit Hardware watchpoint");
    assert_eq!(tagged_one(&out, "watch")["thread"], 4, "{out}");

    // vCont;c:1;c:3 runs CPUs 0 and 2 alone (whether CPU 0 gets a host core before CPU 2
    // reaches cpu2_work is up to the host); vCont;c:0 is accepted and runs every CPU.
    assert_contains(
        &section(&out, "vcont"),
        "received: \"T05thread:p01.03;swbreak:;",
    );
    let (v1, v2) = (
        counters(&tagged_one(&out, "vcont1")),
        counters(&tagged_one(&out, "vcont2")),
    );
    for c in [1, 3, 4, 5, 6, 7] {
        assert_eq!(v1[c], v2[c], "CPU {c} ran on vCont;c:1;c:3:\n{out}");
    }
    assert_contains(
        &section(&out, "any"),
        "received: \"T05thread:p01.03;swbreak:;",
    );

    // Many stops made at once: each CPU's counter grows by exactly one round between two
    // of its reported stops (two counts for CPUs 0 and 2, which count again in cpu0_work
    // and cpu2_work).
    let out = k.gdb(&dir, "smp-together.gdb", &elf);
    let stops = tagged(&out, "stop");
    assert_eq!(stops.len(), 40, "{out}");
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut from_queue = 0;
    let mut prev: Option<(u64, Vec<u64>)> = None;
    for s in &stops {
        let t = s["thread"];
        let c = counters(s);
        let mine = c[t as usize - 1];
        let round = if t == 1 || t == 3 { 2 } else { 1 };
        if let Some(before) = last.insert(t, mine) {
            assert_eq!(
                mine - before,
                round,
                "thread {t}'s stops at counters {before} then {mine}: a stop lost or reported twice:\n{out}"
            );
        }
        // A stop reported from the queue: no CPU but the one stepped off the last
        // breakpoint ran.
        if let Some((pt, pc)) = &prev {
            let still = (0..CPUS).all(|i| i + 1 == *pt as usize || pc[i] == c[i]);
            from_queue += usize::from(still);
        }
        prev = Some((t, c));
    }
    assert!(
        last.len() > 1,
        "only one CPU reached the breakpoint in 40 stops:\n{out}"
    );
    // The queued stops made moot are dropped: after PCs moved, only real hits at the
    // breakpoint; after it was deleted, the new one in cpu2_work.
    let moved = tagged(&out, "moved").len();
    let after = section(&out, "moved");
    assert_not_contains(&after, "SIGTRAP");
    assert_not_contains(&after, "delayed software breakpoint trap");
    let bp = tagged(&out, "after");
    assert_eq!(bp.len(), 8, "{out}");
    assert!(bp.windows(2).all(|w| w[0]["pc"] == w[1]["pc"]), "{out}");
    let deleted = section(&out, "deleted");
    assert_contains(&deleted, "Thread 3 hit Breakpoint 2, cpu2_work (");
    assert_not_contains(&deleted, "SIGTRAP");
    assert_not_contains(&deleted, "delayed software breakpoint trap");
    assert_eq!(tagged_one(&out, "cpu2")["thread"], 3, "{out}");
    eprintln!(
        "smp-together: {} CPUs stopped, {from_queue} of 39 later stops with no other CPU run, \
         {moved} PCs moved off the breakpoint",
        last.len()
    );
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}

/// Before the guest starts its APs they wait for INIT-SIPI-SIPI, and `info threads` says so
/// (read from KVM's multiprocessing state); each shows its own reset state; and a stop
/// while they wait in KVM_RUN stops them too.
#[test]
fn cpus_not_started_wait_for_sipi() {
    require_kvm_and_gdb();
    let dir = TestDir::new("cpus_not_started_wait_for_sipi");
    let mut k = Kvmgdb::start_tcp(
        &dir,
        Boot {
            extra: &["--cpus", "8"],
            ..Boot::guest("smp.elf")
        },
    );
    let out = k.gdb(&dir, "smp-wait-for-sipi.gdb", &guest("smp.elf"));
    let expected: Vec<(usize, String)> = (0..CPUS)
        .map(|c| {
            let word = if c == 0 { "running" } else { "wait-for-SIPI" };
            (c, word.to_string())
        })
        .collect();
    assert_eq!(thread_names(&section(&out, "threads")), expected, "{out}");
    let ap = tagged_one(&out, "ap");
    assert_eq!((ap["rip"], ap["cs"]), (0xfff0, 0xf000), "{out}");
    // The stop at kmain stopped the CPUs waiting in KVM_RUN too, and they still wait.
    assert_contains(
        &section(&out, "kmain"),
        "Thread 1 hit Breakpoint 1, kmain (",
    );
    let after = after(&out, "==kmain==");
    assert_eq!(thread_names(&section(after, "threads")), expected, "{out}");
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}
