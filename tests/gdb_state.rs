//! The state gdb sees and writes is the vCPU's real state, with the real stub: a stop that
//! lands before the vCPU first entered KVM (raw RSP), a step into the guest's own #BP
//! handler, and system-register and selector writes the CPU would refuse (real gdb).

mod common;

use common::*;
use kvmgdb_bench::rsp::{Client, Stop};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const RSP_TIMEOUT: Duration = Duration::from_secs(10);
/// gdb's register number of rip in the x86-64 layout.
const RIP: &str = "p10";

/// `vCont;c` and Ctrl-C in one write to a fresh VM: the stop may land before the vCPU
/// ever entered KVM, and the registers must still be the vCPU's (RIP at the entry point,
/// never the zeros of an unfilled kvm_run area).
#[test]
fn a_stop_before_the_first_run_shows_the_real_registers() {
    require_kvm();
    for round in 0..4 {
        let dir = TestDir::new(&format!("state-first-stop-{round}"));
        let k = Kvmgdb::start(&dir, Boot::guest("demo.elf"));
        let stream = TcpStream::connect(&k.listen_addr).expect("connect to the stub");
        let mut raw = stream.try_clone().expect("clone the socket");
        let mut c = Client::new(stream, RSP_TIMEOUT).expect("client");
        c.handshake(true).expect("handshake");
        let entry = c.request_text(RIP.as_bytes()).expect("p10 at entry");
        raw.write_all(b"$vCont;c#a8\x03")
            .expect("vCont;c and Ctrl-C");
        let stop = c.wait_stop().expect("the stop");
        assert!(matches!(stop, Stop::Signal(..)), "round {round}: {stop:?}");
        let rip = c.request_text(RIP.as_bytes()).expect("p10");
        assert_ne!(rip, "0000000000000000", "round {round}: RIP is zero");
        let cr0 = c.request_text(b"p48").expect("cr0");
        assert_ne!(
            cr0, "0000000000000000",
            "round {round}: CR0 is zero (at entry: {entry})"
        );
        // The registers written back as read, and a step, leave the guest running.
        let g = c.request_text(b"g").expect("g");
        assert_eq!(c.request_text(format!("G{g}").as_bytes()).expect("G"), "OK");
        let step = c.resume(b"vCont;s:1").expect("step");
        assert!(
            matches!(step, Stop::Signal(5, _)),
            "round {round}: {step:?}"
        );
    }
}

#[test]
fn stepi_onto_the_guests_int3_stops_at_its_handler_without_leaking_tf() {
    let out = demo_session("stepi-guest-int3", "stepi-guest-int3.gdb");
    let at = tagged_one(&out, "@@handler");
    assert_eq!(at["pc"], at["bp_handler"], "{out}");
    let frame = tagged_one(&out, "@@frame");
    assert_eq!(frame["rip"], 0x400001, "{out}");
    assert_eq!(frame["rflags"] & 0x100, 0, "TF in the saved RFLAGS:\n{out}");
    let back = tagged_one(&out, "@@back");
    assert_eq!(back["pc"], 0x400001, "{out}");
    assert_eq!(back["eflags"] & 0x100, 0, "{out}");
}

#[test]
fn refused_system_register_and_selector_writes_keep_the_old_state() {
    require_kvm_and_gdb();
    let dir = TestDir::new("state-refused-writes");
    let k = Kvmgdb::start(&dir, Boot::guest("demo.elf"));
    let show = "printf \"@@regs cr0=%#lx cr4=%#lx efer=%#lx ds=%#lx cs=%#lx fs_base=%#lx\\n\", \
                $cr0, $cr4, $efer, $ds, $cs, $fs_base";
    let out = k.gdb_ex(
        &dir,
        &guest("demo.elf"),
        &[
            "break tick",
            "continue",
            show,
            "set $cr0 = (long)0",
            "set $efer = (long)0",
            "set $cr4 = (long)0xffffffff",
            "set $cs = 0",
            "set $ds = 0x40",
            show,
            // A selector that loads: FS gets the base of the code descriptor 0x10, 0.
            "set $fs_base = 0x1234",
            "set $fs = 0x10",
            show,
            "stepi",
            "printf \"@@stepped pc=%#lx\\n\", $pc",
            "kill",
        ],
    );
    let regs = tagged(&out, "@@regs");
    assert_eq!(regs.len(), 3, "{out}");
    for key in ["cr0", "cr4", "efer", "ds", "cs"] {
        assert_eq!(regs[0][key], regs[1][key], "{key} changed:\n{out}");
    }
    assert_eq!(regs[0]["cr0"], 0x8001_0033, "{out}");
    assert_eq!(out.matches("Could not write register").count(), 5, "{out}");
    assert_eq!(
        regs[2]["fs_base"], 0,
        "FS loaded from its descriptor:\n{out}"
    );
    assert!(
        tagged(&out, "@@stepped").len() == 1,
        "the guest steps on:\n{out}"
    );
}
