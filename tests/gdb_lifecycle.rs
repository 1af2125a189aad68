//! The life of a debugged VM with the real gdb: interrupting it, detaching and attaching
//! again, killing it, guests that exit or crash, and the 32-bit Multiboot guest.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn ctrl_c_interrupts_a_running_guest() {
    require_kvm_and_gdb();
    let dir = TestDir::new("ctrl-c");
    let mut k = Kvmgdb::start_tcp(
        &dir,
        Boot {
            no_wait: true,
            ..Boot::guest("demo.elf")
        },
    );
    let mut gdb = k.spawn_gdb(&dir, "ctrl-c.gdb", &guest("demo.elf"));
    gdb.wait_for_output("==continuing==\n", DEBUGGER_TIMEOUT, &k);
    // Let gdb send its vCont and the guest run for a while before "pressing Ctrl-C".
    std::thread::sleep(Duration::from_millis(500));
    gdb.interrupt();
    let out = gdb.finish(DEBUGGER_TIMEOUT, &k);
    assert_script_ran(&out, "ctrl-c.gdb", &k);

    assert!(
        out.contains("\nProgram received signal SIGINT, Interrupt.\n")
            || out.contains("\nThread 1 received signal SIGINT, Interrupt.\n"),
        "no SIGINT stop in gdb output:\n{out}"
    );
    let rip = registers(&section(&out, "stopped"));
    assert!(rip.contains_key("rip"), "info registers rip:\n{out}");
    let attached = tagged_one(&out, "attached")["counter"];
    let stopped = tagged_one(&out, "stopped")["counter"];
    assert!(
        stopped > attached,
        "the guest did not run between continue and Ctrl-C:\n{out}"
    );
    // The interrupted guest resumes normally: the next stop is the new breakpoint.
    assert_contains(&out, "\nBreakpoint 1, tick () at ");
    let resumed = tagged_one(&out, "resumed")["counter"];
    assert!(
        resumed == stopped || resumed == stopped + 1,
        "counter went from {stopped} to {resumed} before the next tick:\n{out}"
    );
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}

#[test]
fn detach_and_reconnect_over_a_unix_socket() {
    require_kvm_and_gdb();
    let dir = TestDir::new("detach");
    let mut k = Kvmgdb::start(
        &dir,
        Boot {
            listen: Listen::Unix,
            ..Boot::guest("demo.elf")
        },
    );
    let sock = dir.join("gdb.sock");
    assert_eq!(k.listen_addr, format!("unix:{}", sock.display()));
    assert_eq!(k.target, sock.display().to_string());

    let out1 = k.gdb(&dir, "detach.gdb", &guest("demo.elf"));
    assert_contains(&out1, "\nBreakpoint 1, tick () at ");
    assert_contains(&out1, "[Inferior 1 (process 1) detached]");
    let counter1 = tagged_one(&out1, "session1")["counter"];

    // The guest runs on without a debugger.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        k.is_running(),
        "kvmgdb exited after detach:\n{}",
        k.stderr()
    );

    let out2 = k.gdb(&dir, "reconnect.gdb", &guest("demo.elf"));
    let counter2 = tagged_one(&out2, "session2")["counter"];
    assert!(
        counter2 > counter1,
        "counter did not grow while detached ({counter1} -> {counter2}):\n{out2}"
    );
    // Session 1's breakpoint at tick is gone: the first stop is the new one.
    // A breakpoint left behind at tick would stop there first, as an unknown SIGTRAP.
    let resumed = section(&out2, "continue");
    assert!(
        resumed.starts_with("\nBreakpoint 1, bp_loop_target () at "),
        "first stop after continue:\n{out2}"
    );
    let bt = section(&out2, "bt");
    assert!(
        bt.starts_with("#0  bp_loop_target () at ") && bt.contains(" in tick () at "),
        "backtrace:\n{out2}"
    );
    let after = tagged_one(&out2, "session2-after")["counter"];
    assert!(
        after == counter2 || after == counter2 + 1,
        "counter went from {counter2} to {after}, so a stop was missed:\n{out2}"
    );
    assert_contains(&out2, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
    assert!(!sock.exists(), "kvmgdb left its socket behind");
}

#[test]
fn triple_fault_is_reported_as_sigsegv() {
    require_kvm_and_gdb();
    let dir = TestDir::new("triple-fault");
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("triple_fault.elf"));
    let out = k.gdb(&dir, "triple-fault.gdb", &guest("triple_fault.elf"));
    assert_contains(
        &out,
        "\nProgram received signal SIGSEGV, Segmentation fault.\n",
    );
    let crash = tagged_one(&out, "crash");
    assert_eq!(crash["pc"], crash["crash_here"], "output:\n{out}");
    let rip = registers(&out)["rip"];
    assert_eq!(rip, crash["crash_here"], "info registers rip:\n{out}");
    let cpus = out
        .lines()
        .find(|l| l.starts_with("* CPU #0: "))
        .unwrap_or_else(|| panic!("no monitor info cpus output:\n{out}"));
    assert!(cpus.contains("triple fault"), "monitor info cpus: {cpus}");
    assert!(
        cpus.contains(&format!("pc={rip:#018x}")),
        "monitor info cpus: {cpus}"
    );
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
    assert_eq!(k.serial_output(), "about to triple fault\n");
}

#[test]
fn kill_ends_kvmgdb_promptly() {
    require_kvm_and_gdb();
    let dir = TestDir::new("kill");
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let out = k.gdb(&dir, "kill.gdb", &guest("demo.elf"));
    assert_contains(&out, "\nBreakpoint 1, tick () at ");
    assert_contains(&out, "\n[Inferior 1 (process 1) killed]\n");
    // gdb is gone; kvmgdb must be too, at once.
    assert_eq!(
        k.wait_exit(Duration::from_secs(2)),
        0,
        "stderr:\n{}",
        k.stderr()
    );
    let serial = k.serial_output();
    assert!(
        serial.starts_with("kvmgdb demo guest: hello from 64-bit long mode\n"),
        "serial: {serial:?}"
    );
}

#[test]
fn multiboot_elf32_guest() {
    require_kvm_and_gdb();
    let dir = TestDir::new("multiboot");
    let mut k = Kvmgdb::start_tcp(
        &dir,
        Boot {
            extra: &["--memory", "64M"],
            ..Boot::guest("multiboot.elf")
        },
    );
    let out = k.gdb(&dir, "multiboot.gdb", &guest("multiboot.elf"));
    // assert_script_ran already rejected "'g' packet reply is too long".
    assert_not_contains(&out, "warning: ");
    let entry = section(&out, "entry");
    assert!(
        entry.starts_with("eip            0x") && entry.contains(" <_start>"),
        "info registers eip at the entry point:\n{out}"
    );
    let e = tagged_one(&out, "entry");
    assert_eq!(e["eip"], e["start"], "output:\n{out}");
    assert_eq!(e["eax"], 0x2bad_b002, "the Multiboot magic in EAX:\n{out}");
    assert_contains(&out, "\nBreakpoint 1, mb_tick () at ");
    assert_contains(&out, "\n#1  0x");
    assert_contains(&out, " in mb_main (magic=732803074, ");
    let mb = tagged_one(&out, "mb");
    assert_eq!(mb["magic"], 0x2bad_b002, "output:\n{out}");
    assert_eq!(
        mb["mem_upper"],
        (64 << 10) - 1024,
        "64 MiB minus the first MiB, in KiB"
    );
    assert_eq!(mb["counter"], 0, "output:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("eip            0x") && l.ends_with(" <mb_tick>")),
        "info registers eip at mb_tick:\n{out}"
    );
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
    assert_eq!(
        k.serial_output(),
        "kvmgdb multiboot guest: magic ok\nmem_upper=64512 KiB\n"
    );
}

#[test]
fn isa_debug_exit_ends_the_session() {
    require_kvm_and_gdb();
    let dir = TestDir::new("debug-exit");
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let out = k.gdb(&dir, "debug-exit.gdb", &guest("demo.elf"));
    assert_contains(&out, "\n[Inferior 1 (process 1) exited with code 013]\n");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 11, "stderr:\n{}", k.stderr());
}

#[test]
fn embedded_demo_without_a_kernel_argument() {
    require_kvm_and_gdb();
    let dir = TestDir::new("embedded-demo");
    let mut k = Kvmgdb::start_tcp(
        &dir,
        Boot {
            kernel: None,
            ..Boot::guest("demo.elf")
        },
    );
    assert!(
        k.symbol_file.is_absolute(),
        "the printed gdb command line should name the demo's ELF file: {:?}",
        k.first_line
    );
    let printed = std::fs::read(&k.symbol_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", k.symbol_file.display()));
    let built = std::fs::read(guest("demo.elf")).expect("demo.elf");
    assert!(
        printed == built,
        "{} is not the demo",
        k.symbol_file.display()
    );

    let out = k.gdb(&dir, "demo-entry.gdb", &k.symbol_file.clone());
    assert_contains(&out, "\n_start in section .text\n");
    let e = tagged_one(&out, "entry");
    assert_eq!(e["pc"], e["start"], "output:\n{out}");
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}
