//! Debugging Debian's real Linux with stock gdb: gdb-scripts/linux-debug.gdb on the cloud
//! kernel's vmlinux (PVH entry) on 4 vCPUs, with the -dbg package's vmlinux as the symbol
//! file, all in one boot (each boot costs minutes on PVM): Linux brings up its 3
//! application processors, gdb sees 4 threads, and the boot then goes on without gdb as
//! the vmlinux boot test (to `devtmpfs: initialized` on PVM, to the initramfs' poweroff on
//! hardware KVM). See tests/common/debian.rs for where the kernel comes from.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Launch → the Ctrl-C phase: about 100 s on an idle PVM machine with 1 vCPU, 158 s with 4
/// (then 8 s more to the last CPU up); 224 s were measured at a load average of 8, over
/// 400 s at 9 with a release build beside it, and 609 s on 4 vCPUs with two other Linux
/// boots beside it and a load average of 27 at the end.
const SESSION_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the kernel runs on, once all its CPUs are up, before the test presses Ctrl-C.
const RUN_BEFORE_CTRL_C: Duration = Duration::from_secs(1);
/// The vCPUs of the machine: the SMP bring-up is part of the one boot.
const CPUS: usize = 4;
/// Where the kernel's text is mapped without KASLR (`__START_KERNEL_map` + 16 MiB).
const KERNEL_TEXT: &str = "ffffffff81000000";
/// The direct map of all RAM without KASLR (`PAGE_OFFSET`, 4-level paging).
const DIRECT_MAP: &str = "ffff888000000000";

/// The symbol of each `=> 0x… <sym+off>:` line of `x/i $pc` output.
fn stepped_symbols(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("=> 0x"))
        .map(|l| {
            let sym = l.split('<').nth(1).and_then(|s| s.split('>').next());
            let sym = sym.unwrap_or("?");
            sym.split('+').next().unwrap_or(sym).to_string()
        })
        .collect()
}

/// Is `sym` where the CPU enters the kernel for an interrupt or exception? On x86-64 every
/// IDT gate of Linux 6.1 points at an `asm_*` stub or at `irq_entries_start` /
/// `spurious_entries_start` (arch/x86/include/asm/idtentry.h).
fn is_interrupt_entry(sym: &str) -> bool {
    sym.starts_with("asm_")
        || sym.starts_with("irq_entries_start")
        || sym.starts_with("spurious_entries_start")
        || sym.starts_with("common_interrupt")
        || sym.starts_with("sysvec_")
        || sym.starts_with("__sysvec_")
}

#[test]
fn gdb_session_on_debian_linux() {
    require_kvm_and_gdb();
    let kernel = debian_kernel();
    let dir = TestDir::new("linux-gdb");
    let initramfs = initramfs();
    let mut args = linux_args(Some(&initramfs), LINUX_CMDLINE);
    args.extend(["--cpus".to_string(), CPUS.to_string()]);
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut k = Kvmgdb::start(
        &dir,
        Boot {
            kernel: Some(kernel.vmlinux.clone()),
            listen: Listen::Tcp,
            no_wait: false,
            extra: &extra,
        },
    );
    // The kernel's gdb scripts where the script sources them, as in a kernel build tree.
    let lx = linux_gdb_scripts(kernel);
    for name in ["vmlinux-gdb.py", "scripts"] {
        std::os::unix::fs::symlink(lx.join(name), dir.join(name)).expect("symlink");
    }
    let mut gdb = k.spawn_gdb(&dir, "linux-debug.gdb", &kernel.vmlinux);
    gdb.wait_for_output("==start_kernel==", SESSION_TIMEOUT, &k);
    eprintln!("launch → start_kernel: {:.1?}", started.elapsed());
    gdb.wait_for_output("==ctrl-c==", SESSION_TIMEOUT, &k);
    eprintln!(
        "launch → the script's Ctrl-C phase: {:.1?}",
        started.elapsed()
    );
    // Ctrl-C once every CPU is up, so that gdb sees the application processors at work.
    let smp = format!("smpboot: Total of {CPUS} processors activated");
    let t = wait_for_serial(&mut k, &smp, Instant::now(), LINUX_BOOT_TIMEOUT);
    eprintln!(
        "launch → {smp:?}: {:.1?} (the Ctrl-C phase → it: {t:.1?})",
        started.elapsed()
    );
    std::thread::sleep(RUN_BEFORE_CTRL_C);
    gdb.interrupt();
    // After the Ctrl-C: a few commands, the lx scripts, lx-symbols re-reading the symbol file.
    let out = gdb.finish(Duration::from_secs(180), &k);
    assert_script_ran(&out, "linux-debug.gdb", &k);
    assert_contains(&out, "[Inferior 1 (process 1) detached]");
    check_session(&out, &kernel.abi);
    // Detached, the kernel boots on as far as this KVM lets it (the same boot serves as the
    // vmlinux boot test).
    expect_linux_boot(&mut k, started, &kernel.abi, CPUS);
}

/// The checks on gdb's output of gdb-scripts/linux-debug.gdb.
fn check_session(out: &str, abi: &str) {
    // At the PVH entry paging is off (CR0.PG clear), so the hbreak is in a debug register.
    let entry = section(out, "entry");
    let cr0 = registers(&entry)["cr0"];
    assert_eq!(cr0 & (1 << 31), 0, "CR0.PG at the PVH entry:\n{entry}");

    let sk = section(out, "start_kernel");
    assert_contains(out, "Hardware assisted breakpoint 1 at ");
    assert_contains(out, "Breakpoint 1, start_kernel ()");
    assert_contains(&sk, "#0  ");
    assert_contains(&sk, "start_kernel");
    // The kernel's own page tables are live: CR3 is the physical address of its PGD.
    let cr3 = registers(&sk)["cr3"];
    assert!(cr3 != 0 && cr3 < 256 << 20, "cr3 {cr3:#x}:\n{sk}");
    let insns: Vec<&str> = sk.lines().filter(|l| l.contains("<start_kernel")).collect();
    assert!(insns.len() >= 5, "x/5i $pc:\n{sk}");

    let ri = section(out, "rest_init");
    assert_contains(out, "Breakpoint 2, rest_init ()");
    assert_contains(&ri, "rest_init");
    assert_contains(&ri, "start_kernel");
    // Interrupts are enabled here, so the PIT's ticks are pending during the steps.
    assert_contains(&ri, " IF ");

    let steps = stepped_symbols(&section(out, "stepi"));
    assert_eq!(steps.len(), 60, "60 steps:\n{}", section(out, "stepi"));
    // rest_init starts with `call __fentry__`; the steps come back to it from its callees.
    assert!(
        steps.iter().any(|s| s == "rest_init"),
        "the steps return to rest_init: {steps:?}"
    );
    let entered: Vec<&String> = steps.iter().filter(|s| is_interrupt_entry(s)).collect();
    assert!(
        entered.is_empty(),
        "stepi wandered into an interrupt handler: {entered:?}; every step: {steps:?}"
    );

    // jiffies is written by the timer interrupt: the watchpoint fires with a larger value.
    let watch = section(out, "watch");
    assert_contains(&watch, "Hardware watchpoint 3: jiffies");
    let value = |label: &str| -> u64 {
        watch
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} line:\n{watch}"))
    };
    assert!(
        value("New value = ") > value("Old value = "),
        "jiffies grows:\n{watch}"
    );

    let mem = section(out, "mem");
    assert_contains(&mem, KERNEL_TEXT);
    assert_contains(&mem, DIRECT_MAP);

    // Ctrl-C stops the running kernel somewhere in its text, with a backtrace.
    assert_contains(out, "received signal SIGINT");
    let stopped = section(out, "stopped");
    assert_contains(&stopped, "#0  ");
    let rip = registers(&stopped)["rip"];
    assert!(rip >= 0xffff_ffff_8000_0000, "rip {rip:#x}:\n{stopped}");
    assert!(stopped.matches("=> 0x").count() == 1, "x/5i:\n{stopped}");

    // One thread per vCPU, numbered from 1; thread 3's registers are CPU 2's: its GS base
    // is CPU 2's per-CPU offset, as Linux set it up on that CPU.
    let threads = section(out, "threads");
    let ids: Vec<&str> = threads
        .lines()
        .filter_map(|l| {
            let mut w = l.trim_start_matches(['*', ' ']).split_whitespace();
            let id = w.next()?;
            (w.next() == Some("Thread")).then_some(id)
        })
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"], "info threads:\n{threads}");
    let gs_base = registers(&threads)["gs_base"];
    let offset = threads
        .lines()
        .find_map(|l| l.strip_prefix('$')?.split_once(" = 0x"))
        .and_then(|(_, v)| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no __per_cpu_offset[2]:\n{threads}"));
    assert!(
        offset != 0 && gs_base == offset,
        "thread 3's gs_base {gs_base:#x} is CPU 2's per-CPU offset {offset:#x}:\n{threads}"
    );

    // The kernel's own gdb scripts, as on QEMU.
    assert_not_contains(out, "Traceback");
    assert_not_contains(out, "Python Exception");
    let dmesg = section(out, "lx-dmesg");
    assert_contains(&dmesg, "Linux version 6.");
    assert_contains(&dmesg, abi);
    assert_contains(&dmesg, "Command line: ");
    let ps = section(out, "lx-ps");
    assert_contains(&ps, "swapper");
    // By the time of the Ctrl-C, rest_init has started init (pid 1) and kthreadd (pid 2).
    assert_contains(&ps, "kthreadd");
    let current = section(out, "lx-current");
    assert!(
        current
            .lines()
            .any(|l| l.starts_with('$') && l.contains(" = \"")),
        "$lx_current().comm:\n{current}"
    );
    let cpus = section(out, "lx-cpus");
    assert_contains(&cpus, "Online CPUs   : [0, 1, 2, 3]");
    assert_contains(&cpus, "Active CPUs   : [0, 1, 2, 3]");
    // CPU 3 identified itself with the CPUID topology the machine gives it: APIC id 3,
    // core 3 of a package of 4 cores.
    let per_cpu = section(out, "lx-per-cpu");
    assert_contains(&per_cpu, "apicid=3 core=3 max_cores=4");
    assert_contains(&per_cpu, "thread 3 current task cpu=2");
    assert_contains(&section(out, "lx-symbols"), "loading vmlinux");
}

/// The kernel's gdb scripts, with the constants.py generated from Debian's sources, load in
/// gdb on the -dbg vmlinux and register their commands (no guest needed).
#[test]
fn linux_gdb_scripts_load_on_the_debug_vmlinux() {
    require_gdb();
    let kernel = debian_kernel();
    let lx = linux_gdb_scripts(kernel);
    let constants =
        std::fs::read_to_string(lx.join("scripts/gdb/linux/constants.py")).expect("constants.py");
    // Values from the headers and from Debian's configuration, as the kernel build writes them.
    for line in [
        "LX_CONFIG_DEBUG_INFO_REDUCED = 0",
        "LX_MNT_NOSUID = 0x01",
        "LX_NR_CPUS = 8192",
        "LX_OF_DT_HEADER = 0xd00dfeed",
        "LX_CONFIG_HIGH_RES_TIMERS = 1",
        "LX_hrtimer_resolution = gdb.parse_and_eval(\"hrtimer_resolution\")",
    ] {
        assert_contains(&constants, line);
    }
    let dir = TestDir::new("lx-load");
    let out = gdb_ex_alone(
        &dir,
        &[
            &format!("file {}", kernel.vmlinux.display()),
            &format!("source {}", lx.join("vmlinux-gdb.py").display()),
            "help lx-dmesg",
            "help lx-ps",
            "help lx-symbols",
        ],
    );
    assert_not_contains(&out, "Error");
    assert_not_contains(&out, "Traceback");
    assert_contains(&out, "Print Linux kernel log buffer.");
    assert_contains(&out, "Dump Linux tasks.");
    assert_contains(&out, "(Re-)load symbols of Linux kernel");
}
