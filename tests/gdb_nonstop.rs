//! gdb's non-stop mode (issue 10, item 4) on the SMP guest with 4 vCPUs: real gdb 13 with
//! `set non-stop on` stops CPU 0 at a breakpoint while CPU 1's counter still moves, then
//! `interrupt -a` and `continue -a`; and the raw protocol (QNonStop, vCont answered at once,
//! `%Stop` notifications, the vStopped sequence, vCont;t, `?`, back to all-stop) with the
//! out-of-order packets a client may send.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Boots smp.elf on `cpus` vCPUs, running, and waits until every CPU counts.
fn smp_guest(dir: &TestDir, cpus: usize) -> Kvmgdb {
    let n = cpus.to_string();
    let k = Kvmgdb::start_tcp(
        dir,
        Boot {
            no_wait: true,
            extra: &["--cpus", &n],
            ..Boot::guest("smp.elf")
        },
    );
    let last = format!("smp: CPU {} started", cpus - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !k.serial_output().contains(&last) {
        assert!(
            Instant::now() < deadline,
            "the APs did not all start; serial:\n{}\nstderr:\n{}",
            k.serial_output(),
            k.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the start-up, every CPU is in its counting loop.
    std::thread::sleep(Duration::from_millis(100));
    k
}

/// Runs gdb on `elf` with `set non-stop on`, `target remote` and then `script` fed on its
/// standard input (so that it takes stop notifications between commands); its output.
fn gdb_non_stop(dir: &TestDir, k: &Kvmgdb, script_name: &str, elf: &std::path::Path) -> String {
    let commands = format!(
        "set non-stop on\ntarget remote {}\n{}",
        k.target,
        std::fs::read_to_string(script(script_name)).expect("read the gdb script")
    );
    let out_path = dir.join("gdb-nonstop.out");
    let out = std::fs::File::create(&out_path).expect("create gdb's output file");
    let mut child = Command::new("gdb")
        .args(["-nx", "-q"])
        .args(["-ex", "set pagination off", "-ex", "set confirm off"])
        .args(["-ex", "set width 0"])
        .arg(elf)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(out.try_clone().expect("duplicate a file handle"))
        .stderr(out)
        .spawn()
        .expect("gdb not installed: apt-get install -y gdb");
    // gdb reads the commands as it gets to them; the pipe closes at their end (gdb quits).
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(commands.as_bytes())
        .expect("write gdb's commands");
    let deadline = Instant::now() + DEBUGGER_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gdb did not finish {script_name}:\n{}\nkvmgdb stderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                k.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(&out_path).expect("read gdb's output")
}

/// Non-stop in gdb: CPU 0 (thread 1) stops at cpu0_work while the other CPUs run and
/// count, read while they run; `interrupt -a` stops them all; `continue -a` runs them all.
#[test]
fn non_stop_breakpoint_on_cpu0_while_the_others_count() {
    require_kvm_and_gdb();
    let dir = TestDir::new("non_stop_breakpoint_on_cpu0_while_the_others_count");
    let mut k = smp_guest(&dir, 4);
    let elf = guest("smp.elf");
    let out = gdb_non_stop(&dir, &k, "nonstop-break.gdb", &elf);
    assert_contains(&out, "Thread 1 hit Breakpoint 1, cpu0_work (");
    let hit = section(&out, "hit");
    let row = |t: &str, s: &str| {
        s.lines()
            .find(|l| {
                l.trim_start()
                    .trim_start_matches('*')
                    .trim_start()
                    .starts_with(&format!("{t} "))
            })
            .unwrap_or_else(|| panic!("no thread {t} in info threads:\n{out}"))
            .to_string()
    };
    assert!(row("1", &hit).contains("cpu0_work"), "thread 1:\n{out}");
    for t in ["2", "3", "4"] {
        assert!(row(t, &hit).contains("(running)"), "thread {t}:\n{out}");
    }
    let (r1, r2) = (tagged_one(&out, "run1"), tagged_one(&out, "run2"));
    assert_eq!(r1["c0"], r2["c0"], "CPU 0 is stopped at cpu0_work:\n{out}");
    assert!(r2["c1"] > r1["c1"], "CPU 1 counts meanwhile:\n{out}");
    assert!(r2["c2"] > r1["c2"], "CPU 2 counts meanwhile:\n{out}");
    assert_contains(&out, "<cpu0_work");
    let stopped = section(&out, "stopped");
    for t in ["1", "2", "3", "4"] {
        assert!(
            !row(t, &stopped).contains("(running)"),
            "thread {t} stopped after interrupt -a:\n{out}"
        );
    }
    let (s1, s2) = (tagged_one(&out, "stop1"), tagged_one(&out, "stop2"));
    assert_eq!(s1, s2, "no CPU counts after interrupt -a:\n{out}");
    let (a1, a2) = (tagged_one(&out, "again1"), tagged_one(&out, "again2"));
    assert!(a2["c1"] > a1["c1"], "CPU 1 runs again:\n{out}");
    assert!(a2["c2"] > a1["c2"], "CPU 2 runs again:\n{out}");
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}

/// How long one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait to be sure nothing comes.
const QUIET: Duration = Duration::from_millis(300);

/// A raw RSP client in no-ack mode that tells replies (`$`) from notifications (`%`).
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(k: &Kvmgdb) -> Raw {
        let s = TcpStream::connect(&k.listen_addr).expect("connect to kvmgdb");
        s.set_nodelay(true).unwrap();
        let mut raw = Raw { s, buf: Vec::new() };
        raw.write(&frame(b"QStartNoAckMode"));
        assert_eq!(raw.next(REPLY_TIMEOUT), Some((b'+', String::new())));
        assert_eq!(raw.next(REPLY_TIMEOUT), Some((b'$', "OK".into())));
        raw.write(b"+");
        raw
    }

    fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to kvmgdb");
    }

    fn byte(&mut self, timeout: Duration) -> Option<u8> {
        if self.buf.is_empty() {
            self.s.set_read_timeout(Some(timeout)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("kvmgdb closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("read from kvmgdb: {e}"),
            }
        }
        Some(self.buf.remove(0))
    }

    /// The next unit: a `+`, or a packet (`$`) or notification (`%`) with a good checksum.
    fn next(&mut self, timeout: Duration) -> Option<(u8, String)> {
        let first = self.byte(timeout)?;
        if first == b'+' {
            return Some((b'+', String::new()));
        }
        assert!(matches!(first, b'$' | b'%'), "unexpected byte {first:#04x}");
        let mut body = Vec::new();
        loop {
            match self.byte(REPLY_TIMEOUT).expect("a packet cut short") {
                b'#' => break,
                b => body.push(b),
            }
        }
        let sum: String = (0..2)
            .map(|_| self.byte(REPLY_TIMEOUT).expect("checksum") as char)
            .collect();
        let want = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        assert_eq!(sum, format!("{want:02x}"), "checksum of {body:?}");
        let body = kvmgdb_bench::rsp::run_length_decode(&body).expect("run-length encoding");
        Some((first, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Sends `body` and returns the reply, which must be a packet.
    fn ask(&mut self, body: &str) -> String {
        self.write(&frame(body.as_bytes()));
        match self.next(REPLY_TIMEOUT) {
            Some((b'$', r)) => r,
            other => panic!("no reply to {body:?}: {other:?}"),
        }
    }

    /// The next notification's body.
    fn notification(&mut self) -> String {
        match self.next(REPLY_TIMEOUT) {
            Some((b'%', n)) => n,
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    fn quiet(&mut self, after: &str) {
        if let Some(u) = self.next(QUIET) {
            panic!("after {after}: unexpected {u:?}");
        }
    }

    /// Whether the counter at `addr` moves within 5 s (a loaded host may not run a vCPU
    /// thread for a while).
    fn moves(&mut self, addr: u64) -> bool {
        let start = self.read_u64(addr);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if self.read_u64(addr) != start {
                return true;
            }
        }
        false
    }

    /// Reads 8 bytes of guest memory at `addr` as a number.
    fn read_u64(&mut self, addr: u64) -> u64 {
        let hex = self.ask(&format!("m{addr:x},8"));
        let bytes: Vec<u8> = (0..8)
            .map(|i| {
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .unwrap_or_else(|_| panic!("m reply {hex:?}"))
            })
            .collect();
        u64::from_le_bytes(bytes.try_into().unwrap())
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    let mut v = vec![b'$'];
    v.extend_from_slice(body);
    v.extend_from_slice(format!("#{sum:02x}").as_bytes());
    v
}

/// The address of `name` in `elf`, from nm.
fn symbol(elf: &std::path::Path, name: &str) -> u64 {
    let out = Command::new("nm").arg(elf).output().expect("run nm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?;
            (f.nth(1)? == name).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("no symbol {name} in {}", elf.display()))
}

/// The thread a stop reply names (`thread:p01.NN;`).
fn stop_thread(reply: &str) -> u64 {
    let t = after(reply, "thread:p01.");
    u64::from_str_radix(&t[..t.find(';').expect("thread field ends")], 16).expect("hex tid")
}

/// The SMP guest running on `cpus` vCPUs with a raw client connected, multiprocess and
/// QNonStop+ negotiated; the addresses of cpu0_work and per_cpu_counter.
fn raw_session(test: &str, cpus: usize) -> (TestDir, Kvmgdb, Raw, [u64; 2]) {
    require_kvm();
    let dir = TestDir::new(test);
    let k = smp_guest(&dir, cpus);
    let elf = guest("smp.elf");
    let symbols = [symbol(&elf, "cpu0_work"), symbol(&elf, "per_cpu_counter")];
    let mut c = Raw::connect(&k);
    assert_contains(&c.ask("qSupported:multiprocess+"), ";QNonStop+");
    (dir, k, c, symbols)
}

/// The raw protocol of non-stop mode, hostile packets included, and the latency of a stop
/// notification after a breakpoint hit.
#[test]
fn non_stop_raw_protocol() {
    let (_dir, mut k, mut c, [bp, counters]) = raw_session("non_stop_raw_protocol", 4);
    let hw = symbol(&guest("smp.elf"), "cpu2_work");
    // Nothing to acknowledge: OK, nothing lost.
    assert_eq!(c.ask("vStopped"), "OK");
    assert_eq!(c.ask("QNonStop:2"), "E16");
    assert_eq!(c.ask("QNonStop:1"), "OK");
    assert_contains(&c.ask("vCont?"), ";t");
    // The attach stopped thread 1, signal 0; the others run.
    let first = c.ask("?");
    assert!(first.starts_with("T00thread:p01.01;"), "{first}");
    assert_eq!(c.ask("vStopped"), "OK");
    assert_eq!(c.ask("vStopped"), "OK");
    // A running thread's registers are an error, never stale values.
    assert_eq!(c.ask("Hgp1.2"), "OK");
    assert!(c.ask("g").starts_with('E'), "g on a running thread");
    // Memory reads while CPU 1 runs: its counter moves.
    assert!(c.moves(counters + 8), "CPU 1 counts in non-stop mode");
    assert_eq!(c.ask("Hgp1.1"), "OK");
    assert!(!c.ask("g").starts_with('E'), "g on the stopped thread");
    // Bad and out-of-order run control.
    assert_eq!(c.ask("vCont;t:99"), "E03");
    assert_eq!(c.ask("vCont;x"), "E16");
    assert_eq!(c.ask("c"), "E16");
    assert_eq!(c.ask("vCont;t:1"), "OK");
    c.quiet("vCont;t on a stopped thread");
    // CPU 0 at the breakpoint, many times: each hit is one notification.
    assert_eq!(c.ask(&format!("Z0,{bp:x},1")), "OK");
    let mut latency = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(c.ask("vCont;c:p1.1"), "OK");
        let n = c.notification();
        latency.push(t.elapsed());
        assert!(n.starts_with("Stop:T05thread:p01.01;"), "{n}");
        assert_contains(&n, "swbreak:;");
        assert_eq!(c.ask("vStopped"), "OK");
    }
    latency.sort();
    eprintln!(
        "non-stop: vCont;c to %Stop at the breakpoint, 20 runs: min {:?} median {:?} max {:?}",
        latency[0], latency[10], latency[19]
    );
    let c2 = c.read_u64(counters + 16);
    std::thread::sleep(Duration::from_millis(100));
    eprintln!(
        "non-stop: CPU 2 counted {} in 100 ms",
        c.read_u64(counters + 16) - c2
    );
    assert!(
        c.moves(counters + 16),
        "CPU 2 counts while CPU 0 stops and goes"
    );
    // A hardware breakpoint set while CPU 2 runs reaches it: thread 3 stops in cpu2_work.
    assert_eq!(c.ask(&format!("Z1,{hw:x},1")), "OK");
    let n = c.notification();
    assert!(n.starts_with("Stop:T05thread:p01.03;"), "{n}");
    assert_contains(&n, "hwbreak:;");
    assert_eq!(c.ask("vStopped"), "OK");
    assert_eq!(c.ask(&format!("z1,{hw:x},1")), "OK");
    assert_eq!(c.ask("vCont;c:p1.3"), "OK");
    // Stop thread 2: a notification with signal 0.
    assert_eq!(c.ask("vCont;t:p1.2"), "OK");
    let n = c.notification();
    assert!(n.starts_with("Stop:T00thread:p01.02;"), "{n}");
    assert_eq!(c.ask("vStopped"), "OK");
    // `?` lists the stopped threads 1 and 2, through vStopped.
    let mut listed = vec![stop_thread(&c.ask("?"))];
    loop {
        match c.ask("vStopped").as_str() {
            "OK" => break,
            r => listed.push(stop_thread(r)),
        }
    }
    assert_eq!(listed, [1, 2]);
    // Stop the rest: threads 3 and 4, each reported once (in one notification's vStopped
    // sequence, or in two when the second stop comes after the first sequence ended).
    assert_eq!(c.ask("vCont;t"), "OK");
    let mut rest = Vec::new();
    while rest.len() < 2 {
        rest.push(stop_thread(&c.notification()));
        loop {
            match c.ask("vStopped").as_str() {
                "OK" => break,
                r => rest.push(stop_thread(r)),
            }
        }
    }
    rest.sort();
    assert_eq!(rest, [3, 4]);
    c.quiet("every thread stopped");
    let frozen = c.read_u64(counters + 8);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.read_u64(counters + 8), frozen, "CPU 1 is stopped");
    // The same hits with every other vCPU stopped: the stub's own cost, without three
    // guest CPUs competing for the two host cores.
    let mut alone = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(c.ask("vCont;c:p1.1"), "OK");
        let n = c.notification();
        alone.push(t.elapsed());
        assert!(n.starts_with("Stop:T05thread:p01.01;"), "{n}");
        assert_eq!(c.ask("vStopped"), "OK");
    }
    alone.sort();
    eprintln!(
        "non-stop: the same with CPUs 1-3 stopped: min {:?} median {:?} max {:?}",
        alone[0], alone[10], alone[19]
    );
    // Back to all-stop: `?` is an all-stop reply, and continue waits for the breakpoint.
    assert_eq!(c.ask("QNonStop:0"), "OK");
    assert!(c.ask("?").starts_with('T'));
    let stop = c.ask("vCont;c");
    assert!(stop.starts_with("T05thread:p01.01;"), "{stop}");
    // All-stop's own round trip for the same hit, CPUs 1-3 stopped, to compare.
    let mut all_stop = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let stop = c.ask("vCont;c:p1.1");
        all_stop.push(t.elapsed());
        assert!(stop.starts_with("T05thread:p01.01;"), "{stop}");
    }
    all_stop.sort();
    eprintln!(
        "all-stop: vCont;c:1 to its stop reply, CPUs 1-3 stopped: min {:?} median {:?} max {:?}",
        all_stop[0], all_stop[10], all_stop[19]
    );
    assert_eq!(c.ask(&format!("z0,{bp:x},1")), "OK");
    assert_eq!(c.ask("vKill;1"), "OK");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}

/// Detach in non-stop mode, on 8 vCPUs, leaves the machine as an all-stop detach does:
/// breakpoints out and every vCPU running, CPU 0 (stopped at the breakpoint when gdb left)
/// included.
#[test]
fn non_stop_detach_runs_every_vcpu_without_breakpoints() {
    let (_dir, mut k, mut c, [bp, counters]) =
        raw_session("non_stop_detach_runs_every_vcpu_without_breakpoints", 8);
    assert_eq!(c.ask("QNonStop:1"), "OK");
    assert_eq!(c.ask(&format!("Z0,{bp:x},1")), "OK");
    assert_eq!(c.ask("vCont;c:p1.1"), "OK");
    assert!(c.notification().starts_with("Stop:T05thread:p01.01;"));
    // Detached with the stop not acknowledged, and CPUs 1-3 running.
    let before = c.read_u64(counters);
    assert_eq!(c.ask("D;1"), "OK");
    drop(c);
    std::thread::sleep(Duration::from_secs(1));
    // A new session in non-stop mode: only thread 1 stops, and the others must count.
    let mut c = Raw::connect(&k);
    assert_contains(&c.ask("qSupported:multiprocess+"), ";QNonStop+");
    assert_eq!(c.ask("QNonStop:1"), "OK");
    let stop = c.ask("?");
    assert!(stop.starts_with("T00thread:p01.01;"), "{stop}");
    assert_eq!(c.ask("vStopped"), "OK");
    let c0 = c.read_u64(counters);
    assert!(
        c0 > before,
        "CPU 0 ran on past cpu0_work ({before} then {c0})"
    );
    for i in 1..8 {
        assert!(c.moves(counters + 8 * i), "CPU {i} runs after the detach");
    }
    assert_eq!(c.ask("vKill;1"), "OK");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}
