//! The state gdb sees and writes is the vCPU's real state, with the real stub: a stop that
//! lands before the vCPU first entered KVM, a breakpoint at the entry point, detach and an
//! immediate reconnect (raw RSP); a step into the guest's own #BP handler, and
//! system-register and selector writes the CPU would refuse (real gdb).

mod common;

use common::*;
use kvmgdb_bench::fuzz::target::Demo;
use kvmgdb_bench::rsp::{Client, Stop, decode_hex};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const RSP_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGTRAP, the signal of a breakpoint or step stop.
const SIGTRAP: u8 = 5;
/// CR0.PE and CR0.PG (SDM Vol. 3A, 2.5): the demo runs with paging in long mode.
const CR0_PE_PG: u64 = 1 | 1 << 31;
/// EFER.LMA (SDM Vol. 3A, 2.2.1).
const EFER_LMA: u64 = 1 << 10;
/// The demo's 64-bit code selector (README "Boot formats": CS = 0x10).
const DEMO_CS: u64 = 0x10;

/// Register `num` (hex, gdb's amd64 numbering as QEMU has it, pinned by tests/registers.rs)
/// read with `p`, as a little-endian number.
#[track_caller]
fn reg(c: &mut Client, k: &Kvmgdb, num: &str) -> u64 {
    let hex = c
        .request_text(format!("p{num}").as_bytes())
        .unwrap_or_else(|e| panic!("p{num}: {e}\nkvmgdb stderr:\n{}", k.stderr()));
    let mut bytes = Vec::new();
    decode_hex(hex.as_bytes(), &mut bytes).unwrap_or_else(|e| panic!("p{num}: {hex:?}: {e}"));
    assert!(bytes.len() <= 8, "p{num} answered {hex:?}");
    bytes.resize(8, 0);
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// What the demo's long mode requires of the registers gdb sees (the fuzz oracle's check,
/// bench/src/fuzz/driver/oracles.rs): RIP in the demo's code, CR0.PE|PG, EFER.LMA, CS 0x10.
/// Zeros from a `kvm_run` area KVM never filled fail every one of them. Returns RIP.
#[track_caller]
fn assert_long_mode(c: &mut Client, k: &Kvmgdb, demo: &Demo, what: &str) -> u64 {
    let (rip, cs, cr0, efer) = (
        reg(c, k, "10"),
        reg(c, k, "12"),
        reg(c, k, "1b"),
        reg(c, k, "20"),
    );
    let regs = format!("rip={rip:#x} cs={cs:#x} cr0={cr0:#x} efer={efer:#x}");
    assert!(
        demo.in_code(rip),
        "{what}: RIP outside the demo's code: {regs}"
    );
    assert_eq!(
        cr0 & CR0_PE_PG,
        CR0_PE_PG,
        "{what}: CR0 lacks PE|PG: {regs}"
    );
    assert_ne!(efer & EFER_LMA, 0, "{what}: EFER lacks LMA: {regs}");
    assert_eq!(cs, DEMO_CS, "{what}: {regs}");
    rip
}

/// A client through gdb's opening (qSupported with multiprocess+, QStartNoAckMode), and
/// its socket for raw bytes.
fn attach(k: &Kvmgdb) -> (Client, TcpStream) {
    let stream = TcpStream::connect(&k.listen_addr).expect("connect to the stub");
    let raw = stream.try_clone().expect("clone the socket");
    let mut c = Client::new(stream, RSP_TIMEOUT).expect("client");
    c.handshake(true)
        .unwrap_or_else(|e| panic!("handshake: {e}\nkvmgdb stderr:\n{}", k.stderr()));
    (c, raw)
}

/// `vCont;c` and Ctrl-C in one write to a fresh VM: the stop may land before the vCPU
/// ever entered KVM, and the registers must still be the vCPU's (long mode, RIP in the
/// demo's code, never the zeros of an unfilled kvm_run area).
#[test]
fn a_stop_before_the_first_run_shows_the_real_registers() {
    require_kvm();
    let demo = Demo::load().expect("the demo's symbols");
    for round in 0..4 {
        let dir = TestDir::new(&format!("state-first-stop-{round}"));
        let k = Kvmgdb::start(&dir, Boot::guest("demo.elf"));
        let (mut c, mut raw) = attach(&k);
        raw.write_all(b"$vCont;c#a8\x03")
            .expect("vCont;c and Ctrl-C");
        let stop = c.wait_stop().expect("the stop");
        assert!(matches!(stop, Stop::Signal(..)), "round {round}: {stop:?}");
        assert_long_mode(&mut c, &k, &demo, &format!("round {round}"));
        // The registers written back as read, and a step, leave the guest running.
        let g = c.request_text(b"g").expect("g");
        assert_eq!(c.request_text(format!("G{g}").as_bytes()).expect("G"), "OK");
        let step = c.resume(b"vCont;s:1").expect("step");
        assert!(
            matches!(step, Stop::Signal(SIGTRAP, _)),
            "round {round}: {step:?}"
        );
        assert_long_mode(&mut c, &k, &demo, &format!("round {round}, after the step"));
    }
}

/// A breakpoint at the entry point of a fresh VM is not re-reported by the first resume:
/// the vCPU executes the instruction under it (gdb steps over the breakpoint it is stopped
/// at only when it saw a stop there, and none was reported), so the first stop is the
/// next breakpoint the guest reaches, `tick`, on thread 1.
#[test]
fn a_breakpoint_at_the_entry_point_is_not_reported_by_the_first_resume() {
    require_kvm();
    let demo = Demo::load().expect("the demo's symbols");
    let entry = 0x10_0000;
    for round in 0..3 {
        let dir = TestDir::new(&format!("state-entry-breakpoint-{round}"));
        let k = Kvmgdb::start(&dir, Boot::guest("demo.elf"));
        let (mut c, _raw) = attach(&k);
        assert_eq!(
            reg(&mut c, &k, "10"),
            entry,
            "a fresh VM waits at the entry point"
        );
        c.expect_ok(format!("Z0,{entry:x},1").as_bytes())
            .expect("Z0 at the entry point");
        c.expect_ok(format!("Z0,{:x},1", demo.tick).as_bytes())
            .expect("Z0 at tick");
        let stop = c.resume(b"vCont;c").expect("the first stop");
        let Stop::Signal(SIGTRAP, packet) = &stop else {
            panic!("round {round}: {stop:?}\nkvmgdb stderr:\n{}", k.stderr());
        };
        // Multiprocess thread ids (qSupported asked for them): process 1, thread 1.
        assert!(packet.contains("thread:p01.01;"), "round {round}: {packet}");
        assert!(packet.contains("swbreak:"), "round {round}: {packet}");
        let rip = assert_long_mode(&mut c, &k, &demo, &format!("round {round}"));
        assert_eq!(rip, demo.tick, "round {round}: first stop {packet}");
    }
}

/// Detach and an immediate reconnect, over and over on one VM (the first time before the
/// vCPU ever ran): every new session reads the vCPU's real registers, and the guest lives.
#[test]
fn registers_after_detach_and_an_immediate_reconnect_are_the_vcpus() {
    require_kvm();
    let demo = Demo::load().expect("the demo's symbols");
    let dir = TestDir::new("state-detach-reconnect");
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    for round in 0..6 {
        let (mut c, _raw) = attach(&k);
        let stop = c.request_text(b"?").expect("?");
        assert!(
            stop.starts_with("T05"),
            "round {round}: ? answered {stop:?}"
        );
        assert_long_mode(&mut c, &k, &demo, &format!("round {round}"));
        c.expect_ok(b"D").expect("D");
    }
    // The guest survived all of it: a breakpoint at tick still hits.
    breakpoint_at_tick_still_hits(&mut k, &demo, "after the reconnects");
}

/// A new session's breakpoint at `tick` is the next stop, in long mode, and kvmgdb lives.
fn breakpoint_at_tick_still_hits(k: &mut Kvmgdb, demo: &Demo, what: &str) {
    let (mut c, _raw) = attach(k);
    c.expect_ok(format!("Z0,{:x},1", demo.tick).as_bytes())
        .expect("Z0 at tick");
    let stop = c.resume(b"vCont;c").expect("the stop at tick");
    assert_eq!(
        stop.signal(),
        Some(SIGTRAP),
        "{what}: {stop:?}\nkvmgdb stderr:\n{}",
        k.stderr()
    );
    assert_eq!(assert_long_mode(&mut c, k, demo, what), demo.tick);
    assert!(k.is_running(), "{what}: kvmgdb exited:\n{}", k.stderr());
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

/// A step, a detach and an immediate reconnect, over and over on fresh VMs: the detach lets
/// the demo run into its boot-time `int3` while the reconnect's stop races it. That stop
/// once left the guest's #BP queued inside KVM, and the next step delivered it with the
/// trap flag in its frame: the guest triple-faulted (2 of 15 VMs before the fix).
#[test]
fn steps_detaches_and_reconnects_racing_the_guests_int3_leave_it_alive() {
    require_kvm();
    let demo = Demo::load().expect("the demo's symbols");
    for vm in 0..6 {
        let dir = TestDir::new(&format!("state-step-detach-{vm}"));
        let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
        for round in 0..8 {
            let (mut c, _raw) = attach(&k);
            if round % 2 == 1 {
                let stop = c.resume(b"vCont;s:1").unwrap_or_else(|e| {
                    panic!(
                        "VM {vm} round {round}: step: {e}\nkvmgdb stderr:\n{}",
                        k.stderr()
                    )
                });
                assert_eq!(
                    stop.signal(),
                    Some(SIGTRAP),
                    "VM {vm} round {round}: {stop:?}"
                );
                assert_long_mode(&mut c, &k, &demo, &format!("VM {vm} round {round}"));
            }
            c.expect_ok(b"D").expect("D");
        }
        breakpoint_at_tick_still_hits(&mut k, &demo, &format!("VM {vm}"));
    }
}

/// The SMP guest on 4 vCPUs (`--cpus 4`): its boot processor starts the other three with
/// INIT-SIPI-SIPI, gdb sees 4 threads, every CPU's counter moves while gdb is detached,
/// and the breakpoint in the function only CPU 2 runs is hit by thread 3.
#[test]
fn smp_guest_cpus_are_threads_and_all_count() {
    require_kvm_and_gdb();
    let dir = TestDir::new("smp_guest_cpus_are_threads_and_all_count");
    let mut k = Kvmgdb::start_tcp(
        &dir,
        Boot {
            no_wait: true,
            extra: &["--cpus", "4"],
            ..Boot::guest("smp.elf")
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let serial = std::fs::read_to_string(&k.serial).unwrap_or_default();
        if serial.contains("smp: CPU 3 started") {
            break;
        }
        assert!(
            Instant::now() < deadline && !serial.contains("did not start"),
            "the APs did not all start; serial:\n{serial}\nstderr:\n{}",
            k.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elf = guest("smp.elf");
    let out1 = k.gdb(&dir, "smp-attach.gdb", &elf);
    let threads = section(&out1, "threads");
    let rows = threads
        .lines()
        .filter(|l| {
            l.trim_start()
                .trim_start_matches('*')
                .trim_start()
                .starts_with(char::is_numeric)
        })
        .count();
    assert_eq!(rows, 4, "info threads lists 4 threads:\n{out1}");
    let s1 = tagged_one(&out1, "session1");
    assert_eq!(s1["cpus"], 4, "{out1}");
    std::thread::sleep(Duration::from_millis(300));
    let out2 = k.gdb(&dir, "smp-threads.gdb", &elf);
    let s2 = tagged_one(&out2, "session2");
    for c in ["c0", "c1", "c2", "c3"] {
        assert!(s2[c] > s1[c], "{c} moved while detached: {out1}\n{out2}");
    }
    let hit = section(&out2, "continue");
    assert!(
        hit.contains("Thread 3 hit Breakpoint 1, cpu2_work ("),
        "the breakpoint is hit in cpu2_work:\n{out2}"
    );
    let h = tagged_one(&out2, "hit");
    assert_eq!(
        (h["thread"], h["cpu"]),
        (3, 2),
        "thread 3 is CPU 2:\n{out2}"
    );
    assert_contains(&out2, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}
