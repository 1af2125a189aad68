//! QEMU compatibility: its maintenance packets, and fatal stops reported as QEMU users
//! expect.

mod common;

use common::*;

#[test]
fn qemu_maintenance_packets() {
    let out = demo_session("qemu-packets", "qemu-packets.gdb");
    assert_contains(&out, "received: \"ENABLE=1,NOIRQ=2,NOTIMER=4\"");
    // Interrupts are masked while stepping by default (0x7), off after sstep=0x1.
    let sstep: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("received: \"0x"))
        .collect();
    assert_eq!(sstep, ["received: \"0x7\"", "received: \"0x1\""], "{out}");
    assert_contains(
        &out,
        "received: \"0\"\nsending: Qqemu.PhyMemMode:1\nreceived: \"OK\"",
    );
    assert_contains(&out, "sending: qqemu.PhyMemMode\nreceived: \"1\"");
    // Physical 0x9000 is kvmgdb's PML4: its first entry points at the PDPT (0xa000).
    let phys = section(&out, "phys");
    assert!(phys.contains("0x000000000000a003"), "{out}");
    let virt = section(&out, "virt");
    assert!(virt.contains("0xfc"), "{out}");
}

#[test]
fn halt_with_interrupts_off_is_a_frozen_sigstop() {
    let out = demo_session("halt", "halt.gdb");
    assert_contains(&out, "Program received signal SIGSTOP");
    let cpus = section(&out, "cpus");
    assert!(cpus.contains("halted"), "{out}");
    let after = tagged_one(&out, "after");
    // hlt has executed: RIP is just past it (cli is 1 byte, hlt 1 byte).
    assert_eq!(after["rip"], after["halt"] + 2, "{out}");
    // Continuing a frozen vCPU reports the same stop again instead of hanging.
    let again = out.split("==again==").next().unwrap_or("");
    assert_eq!(
        again.matches("Program received signal SIGSTOP").count(),
        2,
        "{out}"
    );
}
