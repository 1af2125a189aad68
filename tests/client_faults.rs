//! Clients that go wrong: gdb SIGKILLed during `continue` or a run of steps, sockets closed
//! mid-packet, a hundred short connections, a second client while one is attached, and a
//! client that stops reading its replies. Each time kvmgdb must keep the guest, keep
//! listening, and show the next client the machine's real state with no breakpoint of a
//! dead session left behind.
//!
//! The gdb scenarios use the real gdb; the socket-level ones speak raw RSP (gdb manual,
//! appendix E) through the benchmark's client. Addresses come from demo.elf's symbol table.

mod common;

use common::*;
use kvmgdb_bench::rsp::{Client, Stop};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one reply may take before a raw-RSP test fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// SIGTRAP, the signal of a breakpoint or step stop.
const SIGTRAP: u8 = 5;

// ---------------------------------------------------------------------------------------
// demo.elf's symbols and bytes

/// The symbols and loadable bytes of an ELF64 file: just enough of the format (System V
/// ABI, section headers and `SHT_SYMTAB`) to find functions and their code.
struct Elf {
    data: Vec<u8>,
    symbols: HashMap<String, u64>,
    /// (address, file offset, size) of every `SHT_PROGBITS` section.
    progbits: Vec<(u64, u64, u64)>,
}

impl Elf {
    fn load(path: &Path) -> Elf {
        const SHT_PROGBITS: u32 = 1;
        const SHT_SYMTAB: u32 = 2;
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let u16_at = |o: usize| u16::from_le_bytes(data[o..o + 2].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
        assert_eq!(
            &data[..5],
            b"\x7fELF\x02",
            "{} is not ELF64",
            path.display()
        );
        let shoff = u64_at(0x28) as usize;
        let shentsize = u16_at(0x3a) as usize;
        let shnum = u16_at(0x3c) as usize;
        let section = |i: usize| shoff + i * shentsize;
        let mut symbols = HashMap::new();
        let mut progbits = Vec::new();
        for i in 0..shnum {
            let sh = section(i);
            let (kind, addr, off, size) = (
                u32_at(sh + 4),
                u64_at(sh + 16),
                u64_at(sh + 24),
                u64_at(sh + 32),
            );
            if kind == SHT_PROGBITS && addr != 0 {
                progbits.push((addr, off, size));
            }
            if kind == SHT_SYMTAB {
                let strtab = section(u32_at(sh + 40) as usize);
                let str_off = u64_at(strtab + 24) as usize;
                for sym in (off as usize..(off + size) as usize).step_by(24) {
                    let name_at = str_off + u32_at(sym) as usize;
                    let len = data[name_at..].iter().position(|&b| b == 0).unwrap();
                    let name = String::from_utf8_lossy(&data[name_at..name_at + len]);
                    symbols.insert(name.into_owned(), u64_at(sym + 8));
                }
            }
        }
        Elf {
            data,
            symbols,
            progbits,
        }
    }

    fn sym(&self, name: &str) -> u64 {
        *self
            .symbols
            .get(name)
            .unwrap_or_else(|| panic!("demo.elf has no symbol {name}"))
    }

    /// True when `addr` lies in a loaded section holding `_start` (the code, .text).
    fn in_code(&self, addr: u64) -> bool {
        let entry = self.sym("_start");
        self.progbits.iter().any(|&(start, _, size)| {
            (start..start + size).contains(&entry) && (start..start + size).contains(&addr)
        })
    }

    /// The `len` bytes the file loads at `addr`.
    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let &(start, off, _) = self
            .progbits
            .iter()
            .find(|&&(start, _, size)| start <= addr && addr + len as u64 <= start + size)
            .unwrap_or_else(|| panic!("{addr:#x} is in no loaded section of demo.elf"));
        let at = (off + addr - start) as usize;
        self.data[at..at + len].to_vec()
    }
}

// ---------------------------------------------------------------------------------------
// Raw RSP helpers

fn connect(k: &Kvmgdb) -> TcpStream {
    let addr = k.listen_addr.parse().expect("a TCP address");
    TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}\n{}", k.listen_addr, k.stderr()))
}

/// A client through gdb's opening (qSupported, QStartNoAckMode).
fn attach(k: &Kvmgdb) -> Client {
    attach_raw(k, true).0
}

/// A client through gdb's opening, in no-ack mode if `no_ack`, and its socket for raw
/// bytes (the socket closes once both are dropped).
fn attach_raw(k: &Kvmgdb, no_ack: bool) -> (Client, TcpStream) {
    let s = connect(k);
    let raw = s.try_clone().expect("dup a socket");
    let mut c = Client::new(s, REPLY_TIMEOUT).expect("client");
    c.handshake(no_ack)
        .unwrap_or_else(|e| panic!("handshake: {e}\nkvmgdb stderr:\n{}", k.stderr()));
    (c, raw)
}

/// Sends `packet` and returns the reply, failing with kvmgdb's stderr on any error.
#[track_caller]
fn ask(c: &mut Client, k: &Kvmgdb, packet: &str) -> String {
    c.request_text(packet.as_bytes())
        .unwrap_or_else(|e| panic!("{packet}: {e}\nkvmgdb stderr:\n{}", k.stderr()))
}

#[track_caller]
fn ask_ok(c: &mut Client, k: &Kvmgdb, packet: &str) {
    let reply = ask(c, k, packet);
    assert_eq!(reply, "OK", "{packet}\nkvmgdb stderr:\n{}", k.stderr());
}

/// RIP of the current thread (`p` of register 0x10 in the amd64 layout).
#[track_caller]
fn rip(c: &mut Client, k: &Kvmgdb) -> u64 {
    let hex = ask(c, k, "p10");
    let mut bytes = Vec::new();
    kvmgdb_bench::rsp::decode_hex(hex.as_bytes(), &mut bytes)
        .unwrap_or_else(|e| panic!("p10 answered {hex:?}: {e}"));
    u64::from_le_bytes(bytes.try_into().unwrap_or_else(|_| panic!("p10: {hex:?}")))
}

#[track_caller]
fn read_mem(c: &mut Client, k: &Kvmgdb, addr: u64, len: usize) -> Vec<u8> {
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    c.read_memory(addr, len, &mut scratch, &mut out)
        .unwrap_or_else(|e| panic!("m{addr:x},{len:x}: {e}\nkvmgdb stderr:\n{}", k.stderr()));
    out
}

#[track_caller]
fn resume(c: &mut Client, k: &Kvmgdb, packet: &str) -> Stop {
    c.resume(packet.as_bytes())
        .unwrap_or_else(|e| panic!("{packet}: {e}\nkvmgdb stderr:\n{}", k.stderr()))
}

/// Byte offsets in the `g` data of the registers the demo's long mode fixes (gdb's amd64
/// layout as QEMU numbers it, pinned by tests/registers.rs): RIP, CS, CR0, EFER.
const G_RIP: usize = 128;
const G_CS: usize = 140;
const G_CR0: usize = 188;
const G_EFER: usize = 228;

/// The registers of `g` are state the demo can be in (as the fuzz oracle checks,
/// bench/src/fuzz/driver/oracles.rs): RIP in its code, CR0.PE|PG (SDM Vol. 3A, 2.5),
/// EFER.LMA (2.2.1), CS the 64-bit code selector 0x10 (README "Boot formats").
#[track_caller]
fn assert_long_mode(g: &[u8], elf: &Elf) {
    assert!(g.len() >= G_EFER + 8, "g answered {} bytes", g.len());
    let at = |o: usize, n: usize| {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&g[o..o + n]);
        u64::from_le_bytes(v)
    };
    let (rip, cs, cr0, efer) = (at(G_RIP, 8), at(G_CS, 4), at(G_CR0, 8), at(G_EFER, 8));
    let shown = format!("rip={rip:#x} cs={cs:#x} cr0={cr0:#x} efer={efer:#x}");
    assert!(elf.in_code(rip), "RIP outside demo.elf's code: {shown}");
    assert_eq!(cr0 & (1 | 1 << 31), 1 | 1 << 31, "CR0 lacks PE|PG: {shown}");
    assert_ne!(efer & 1 << 10, 0, "EFER lacks LMA: {shown}");
    assert_eq!(cs, 0x10, "{shown}");
}

/// The checks every client after a fault makes: the stub answers, the registers are
/// readable, the guest's code at `stale` (a breakpoint of a dead session) reads as the ELF
/// has it, and a breakpoint of this session at bp_loop_target is the next stop, twice, so
/// none is left planted at tick (which runs just before it) either. Leaves the client stopped
/// there with no breakpoints.
#[track_caller]
fn check_fresh_session(c: &mut Client, k: &Kvmgdb, elf: &Elf, stale: u64) {
    let stop = ask(c, k, "?");
    assert!(
        stop.starts_with('T') || stop.starts_with('S'),
        "? answered {stop:?}"
    );
    let mut scratch = Vec::new();
    let mut regs = Vec::new();
    c.read_registers(&mut scratch, &mut regs)
        .unwrap_or_else(|e| panic!("g: {e}\nkvmgdb stderr:\n{}", k.stderr()));
    assert_long_mode(&regs, elf);
    assert_eq!(
        read_mem(c, k, stale, 4),
        elf.bytes(stale, 4),
        "code at {stale:#x}"
    );
    let target = elf.sym("bp_loop_target");
    ask_ok(c, k, &format!("Z0,{target:x},1"));
    // Twice: the first resume may start inside tick, past its first instruction.
    for _ in 0..2 {
        let stop = resume(c, k, "vCont;c");
        assert_eq!(stop.signal(), Some(SIGTRAP), "stop: {stop}");
        assert_eq!(rip(c, k), target, "stop: {stop}");
    }
    ask_ok(c, k, &format!("z0,{target:x},1"));
}

/// Asks the demo guest to exit with `code` (kmain's loop reads exit_request) and resumes:
/// the exit must come, not a stop at a breakpoint some dead session left on debug_exit.
/// kvmgdb then ends with the guest's status, (code << 1) | 1.
#[track_caller]
fn exit_guest(mut c: Client, mut k: Kvmgdb, elf: &Elf, code: u8) {
    let at = elf.sym("exit_request");
    ask_ok(&mut c, &k, &format!("M{at:x},4:{code:02x}000000"));
    let stop = resume(&mut c, &k, "vCont;c");
    let status = (code << 1) | 1;
    assert_eq!(stop, Stop::Exited(status), "kvmgdb stderr:\n{}", k.stderr());
    drop(c);
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), i32::from(status));
}

// ---------------------------------------------------------------------------------------
// gdb killed

/// Runs `script` in gdb, SIGKILLs gdb half a second after it prints `marker`, then checks
/// with a new gdb at once (after-killed-gdb.gdb) that kvmgdb kept the guest, ran it on as
/// after a detach, and left none of the dead session's breakpoints. Returns the dead gdb's
/// output after `marker`.
fn kill_gdb_then_reconnect(test: &str, script: &str, marker: &str) -> String {
    require_kvm_and_gdb();
    let dir = TestDir::new(test);
    let elf_path = guest("demo.elf");
    let elf = Elf::load(&elf_path);
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));

    let mut gdb = k.spawn_gdb(&dir, script, &elf_path);
    gdb.wait_for_output(marker, DEBUGGER_TIMEOUT, &k);
    std::thread::sleep(Duration::from_millis(500));
    let out1 = gdb.kill();
    let counter1 = tagged_one(&out1, "dead-session")["counter"];
    assert!(k.is_running(), "kvmgdb ended with its gdb:\n{}", k.stderr());

    let out2 = k.gdb(&dir, "after-killed-gdb.gdb", &elf_path);
    // The detach policy: the guest ran on once its gdb was gone.
    let counter2 = tagged_one(&out2, "session2")["counter"];
    assert!(
        counter2 > counter1,
        "counter did not grow after gdb died ({counter1} -> {counter2}):\n{out2}"
    );
    let regs = registers(&section(&out2, "regs"));
    assert!(
        regs.contains_key("rip") && regs.contains_key("rsp"),
        "registers:\n{out2}"
    );
    // "0x100298 <debug_exit>:\t0x..\t0x..\t0x..\t0x.."
    let code: Vec<u8> = section(&out2, "code")
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("0x"))
        .skip(1)
        .map(|h| u8::from_str_radix(h, 16).expect("a byte"))
        .collect();
    assert_eq!(
        code,
        elf.bytes(elf.sym("debug_exit"), 4),
        "debug_exit's code:\n{out2}"
    );
    let resumed = section(&out2, "continue");
    assert!(
        resumed.starts_with("\nBreakpoint 1, bp_loop_target () at "),
        "first stop after continue:\n{out2}"
    );
    // A breakpoint left on debug_exit would stop the guest there first.
    let exit = after(&out2, "==exit==\n");
    assert_contains(exit, "Packet received: W0f");
    assert!(
        !exit.contains("Packet received: T") && !exit.contains("Packet received: S"),
        "a stop before the exit:\n{exit}"
    );
    assert_contains(exit, "\n[Inferior 1 (process 1) exited with code 017]\n");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 15, "stderr:\n{}", k.stderr());
    after(&out1, marker).to_string()
}

#[test]
fn gdb_killed_during_continue() {
    kill_gdb_then_reconnect(
        "killed-continue",
        "killed-in-continue.gdb",
        "==continuing==\n",
    );
}

#[test]
fn gdb_killed_during_a_step_flood() {
    let steps = kill_gdb_then_reconnect(
        "killed-step-flood",
        "killed-in-step-flood.gdb",
        "==stepping==\n",
    );
    // The kill landed in the flood, not before it.
    assert!(
        steps.lines().filter(|l| !l.is_empty()).count() >= 5,
        "too few steps before the kill:\n{steps}"
    );
}

// ---------------------------------------------------------------------------------------
// Reconnecting

#[test]
fn reconnect_at_once_after_detach() {
    require_kvm();
    let dir = TestDir::new("reconnect-detach");
    let elf = Elf::load(&guest("demo.elf"));
    let k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let tick = elf.sym("tick");

    let mut c = attach(&k);
    ask_ok(&mut c, &k, &format!("Z0,{tick:x},1"));
    let stop = resume(&mut c, &k, "vCont;c");
    assert_eq!(stop.signal(), Some(SIGTRAP), "stop: {stop}");
    assert_eq!(rip(&mut c, &k), tick);
    // Detach with the breakpoint still set: kvmgdb removes it (RSP manual, `D`).
    ask_ok(&mut c, &k, "D");
    drop(c);

    let mut c = attach(&k);
    check_fresh_session(&mut c, &k, &elf, tick);
    exit_guest(c, k, &elf, 3);
}

#[test]
fn reconnect_at_once_after_a_close_mid_packet() {
    require_kvm();
    let dir = TestDir::new("reconnect-mid-packet");
    let elf = Elf::load(&guest("demo.elf"));
    let k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let debug_exit = elf.sym("debug_exit");

    // Stopped: half a packet, then the socket closes.
    let mut s = connect(&k);
    s.write_all(b"$qSupported:multiprocess+;swbr").unwrap();
    drop(s);

    // Running, with a breakpoint planted: half a packet, then the close.
    let (mut c, mut s) = attach_raw(&k, true);
    ask_ok(&mut c, &k, &format!("Z0,{debug_exit:x},1"));
    c.send(b"vCont;c").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"$m1000,").unwrap();
    drop((c, s));

    let mut c = attach(&k);
    check_fresh_session(&mut c, &k, &elf, debug_exit);
    // The breakpoint of the session that vanished mid-packet is gone.
    exit_guest(c, k, &elf, 4);
}

// ---------------------------------------------------------------------------------------
// Many connections

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"))
}

/// Closes `s` with a TCP reset instead of a FIN (SO_LINGER with a zero timeout).
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` is an open socket for the whole call and `linger` is a valid `linger`
    // of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(s);
}

/// One short connection of kind `i % 5`.
fn short_connection(k: &Kvmgdb, i: usize) {
    match i % 5 {
        // Connect and close without a byte.
        0 => drop(connect(k)),
        // gdb's opening and a stop query, then a close.
        1 => {
            let mut c = attach(k);
            ask(&mut c, k, "?");
        }
        // The opening, then half a packet and a close.
        2 => {
            let (c, mut s) = attach_raw(k, true);
            s.write_all(b"$m100000,4").unwrap();
            drop((c, s));
        }
        // In ack mode: a stop query and all registers, then a reset.
        3 => {
            let (mut c, s) = attach_raw(k, false);
            ask(&mut c, k, "?");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            c.read_registers(&mut a, &mut b).unwrap();
            drop(c);
            reset(s);
        }
        // Connect and reset at once.
        _ => reset(connect(k)),
    }
}

/// A client that has been answered, so every earlier session has ended (kvmgdb serves
/// one at a time): the moment to count kvmgdb's resources.
fn probe(k: &Kvmgdb) -> (Client, usize, u64) {
    let mut c = attach(k);
    ask(&mut c, k, "?");
    let pid = k.pid();
    (c, open_fds(pid), rss_kib(pid))
}

#[test]
fn hundred_connections_leave_fds_and_rss_flat() {
    require_kvm();
    let dir = TestDir::new("hundred-connections");
    let elf = Elf::load(&guest("demo.elf"));
    let k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let start = Instant::now();
    for i in 0..10 {
        short_connection(&k, i);
    }
    let (c, fds10, rss10) = probe(&k);
    drop(c);
    for i in 10..100 {
        short_connection(&k, i);
    }
    let (mut c, fds100, rss100) = probe(&k);
    eprintln!(
        "100 connections in {:?}: fds {fds10} -> {fds100}, VmRSS {rss10} -> {rss100} KiB",
        start.elapsed()
    );
    assert!(
        fds100 <= fds10 + 2,
        "open fds grew from {fds10} to {fds100}"
    );
    assert!(
        rss100 <= rss10 + 1024,
        "VmRSS grew from {rss10} KiB to {rss100} KiB"
    );
    check_fresh_session(&mut c, &k, &elf, elf.sym("tick"));
    exit_guest(c, k, &elf, 5);
}

/// The fd number the next open in process `pid` would get (the limit applies to it).
fn lowest_free_fd(pid: u32) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// Sets kvmgdb's soft limit on open files (raising it back needs no privilege while the
/// hard limit stays) and returns the old soft limit.
fn set_fd_limit(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads the current one into the valid `old`.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit that prlimit(2) only reads; no old value is asked for.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

#[test]
fn running_out_of_fds_keeps_the_guest_and_the_listener() {
    require_kvm();
    let dir = TestDir::new("out-of-fds");
    let elf = Elf::load(&guest("demo.elf"));
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    // One session first, so the guest runs unattended when accept(2) fails.
    let mut c = attach(&k);
    ask_ok(&mut c, &k, "D");
    drop(c);
    // Let kvmgdb see the close and drop the session's socket before counting.
    std::thread::sleep(Duration::from_millis(300));

    // No fd left for the next connection: accept(2) fails with EMFILE.
    let pid = k.pid();
    let old = set_fd_limit(pid, lowest_free_fd(pid));
    let waiting = connect(&k);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        k.is_running(),
        "kvmgdb ended when out of fds:\n{}",
        k.stderr()
    );
    assert_contains(&k.stderr(), "cannot accept a gdb connection now: ");
    set_fd_limit(pid, old);

    // The listener works again, and so does the connection that waited.
    let mut c = Client::new(waiting, REPLY_TIMEOUT).unwrap();
    c.handshake(true)
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", k.stderr()));
    check_fresh_session(&mut c, &k, &elf, elf.sym("tick"));
    exit_guest(c, k, &elf, 5);
}

// ---------------------------------------------------------------------------------------
// A second client

#[test]
fn a_second_client_waits_until_the_first_detaches() {
    require_kvm();
    let dir = TestDir::new("second-client");
    let elf = Elf::load(&guest("demo.elf"));
    let k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let tick = elf.sym("tick");

    let mut a = attach(&k);
    ask_ok(&mut a, &k, &format!("Z0,{tick:x},1"));
    assert_eq!(resume(&mut a, &k, "vCont;c").signal(), Some(SIGTRAP));

    // The second client's connect succeeds (the listen backlog), but nobody reads it.
    let mut b = connect(&k);
    b.write_all(b"+$?#3f").unwrap();
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    match b.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the second client got {other:?} while the first is attached"),
    }

    // The first session is undisturbed: same stop, same breakpoint, memory and registers.
    assert_eq!(rip(&mut a, &k), tick);
    assert_eq!(read_mem(&mut a, &k, tick, 4), elf.bytes(tick, 4));
    assert_eq!(resume(&mut a, &k, "vCont;c").signal(), Some(SIGTRAP));
    assert_eq!(rip(&mut a, &k), tick);
    ask_ok(&mut a, &k, "D");
    drop(a);

    // Now the second client is served: its `?` is answered.
    let mut b = Client::new(b, REPLY_TIMEOUT).unwrap();
    let reply = b
        .recv()
        .unwrap_or_else(|e| panic!("no reply to the queued `?`: {e}\n{}", k.stderr()));
    assert!(
        reply.starts_with(b"T") || reply.starts_with(b"S"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    b.handshake(true).unwrap();
    check_fresh_session(&mut b, &k, &elf, tick);
    exit_guest(b, k, &elf, 6);
}

// ---------------------------------------------------------------------------------------
// A client that stops reading

/// Sends `m` requests for big replies, as many as the socket takes, without reading one.
fn flood_unread(s: &mut TcpStream, packet_size: usize, addr: u64) {
    let len = packet_size / 2 - 16;
    let mut burst = Vec::new();
    for _ in 0..2000 {
        let body = format!("m{addr:x},{len:x}");
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        burst.extend_from_slice(format!("${body}#{sum:02x}").as_bytes());
    }
    // Once the stub blocks on its replies it stops reading too, so the burst may not all go.
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(&burst);
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_the_next_served() {
    require_kvm();
    let dir = TestDir::new("stops-reading");
    let elf = Elf::load(&guest("demo.elf"));
    let k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let tick = elf.sym("tick");

    let (mut a, mut raw) = attach_raw(&k, true);
    ask_ok(&mut a, &k, &format!("Z0,{tick:x},1"));
    assert_eq!(resume(&mut a, &k, "vCont;c").signal(), Some(SIGTRAP));
    let size = a.packet_size;
    flood_unread(&mut raw, size, tick);

    // The stub gives up on `a` after its write bound and serves the next client, while
    // `a` is still open.
    let start = Instant::now();
    let mut b = Client::new(connect(&k), Duration::from_secs(60)).unwrap();
    b.handshake(true)
        .unwrap_or_else(|e| panic!("next client not served: {e}\n{}", k.stderr()));
    let waited = start.elapsed();
    eprintln!("the next client was served after {waited:?}");
    assert!(
        waited < Duration::from_secs(35),
        "waited {waited:?}; kvmgdb:\n{}",
        k.stderr()
    );
    b.set_timeout(REPLY_TIMEOUT).unwrap();
    drop((a, raw));
    check_fresh_session(&mut b, &k, &elf, tick);
    ask_ok(&mut b, &k, "D");
    drop(b);

    let mut c = attach(&k);
    check_fresh_session(&mut c, &k, &elf, tick);
    exit_guest(c, k, &elf, 2);
}

#[test]
fn a_client_that_closes_with_replies_unread() {
    require_kvm();
    let dir = TestDir::new("closes-unread");
    let elf = Elf::load(&guest("demo.elf"));
    let k = Kvmgdb::start_tcp(&dir, Boot::guest("demo.elf"));
    let tick = elf.sym("tick");

    let (mut a, mut raw) = attach_raw(&k, true);
    ask_ok(&mut a, &k, &format!("Z0,{tick:x},1"));
    assert_eq!(resume(&mut a, &k, "vCont;c").signal(), Some(SIGTRAP));
    let size = a.packet_size;
    flood_unread(&mut raw, size, tick);
    drop((a, raw));

    let mut c = attach(&k);
    check_fresh_session(&mut c, &k, &elf, tick);
    exit_guest(c, k, &elf, 1);
}
