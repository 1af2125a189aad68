//! The fuzz loop: sessions against one VM at a time, each a random mix of checked packets
//! (whose one right reply the fuzzer knows from its own model of the guest) and junk
//! (bad checksums, stray bytes, NAKs, interrupts, mutated corpus packets, oversized
//! packets), each junk item followed by a sync sentinel. Every few hundred packets, and
//! before the fuzzer itself ends a session, the oracles run: the stub answers, the scratch
//! memory reads back as written, the code reads back unchanged, the registers are sane and
//! stable, a breakpoint still hits.

use super::corpus;
use super::outcome::{Class, Finding, Outcome};
use super::rng::Rng;
use super::target::{Demo, Layout, MARKER_LEN, MEMORY, SCRATCH, SCRATCH_LEN};
use super::vm::Vm;
use super::wire::{Event, Wire, WireError, frame};
use super::{Config, FuzzError, escape};
use crate::rsp::{Stop, decode_hex, parse_stop};
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long any reply may take before the stub counts as hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the sentinel waits before it is sent again (an earlier junk byte may have
/// swallowed it).
const SENTINEL_RETRY: Duration = Duration::from_secs(2);
/// How long a continue with a breakpoint on the demo's hot path may take to hit it.
const HIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a packet that must not resume may stay unanswered before the fuzzer asks (with
/// a Ctrl-C) whether the guest runs: a stub answers such packets at once.
const NO_RESUME_WAIT: Duration = Duration::from_secs(1);
/// How many actions' bytes a reproducer keeps (within one session). Not just the bytes
/// since the last sync: some faults (a stray Ctrl-C remembered) strike an action later.
const CONTEXT_ACTIONS: usize = 4;
/// gdb's thread id of the demo's one vCPU (kvmgdb numbers vCPU n as thread n + 1).
const TID: &str = "p1.1";
/// CR0.PE and CR0.PG (SDM Vol. 3A, 2.5).
const CR0_PE_PG: u64 = 1 | 1 << 31;
/// EFER.LMA (SDM Vol. 3A, 2.2.1).
const EFER_LMA: u64 = 1 << 10;
/// The demo's 64-bit code selector (README "Boot formats": CS = 0x10).
const DEMO_CS: u64 = 0x10;
/// Debug registers for hardware breakpoints and watchpoints (SDM Vol. 3B, 18.2).
const DEBUG_REGS: usize = 4;
/// gdb's signal numbers for the stops the fuzzer causes: SIGINT, SIGTRAP.
const SIGINT: u8 = 2;
const SIGTRAP: u8 = 5;
/// What kvmgdb prints when the guest dies with no session attached (src/cli.rs).
const GUEST_STOPPED: &str = "kvmgdb: the guest stopped";
/// A client-controlled buffer that grows by more than this is unbounded.
const RSS_SLACK_KIB: u64 = 4 * 1024;
/// The unterminated packet that checks it (RSP data bytes).
const HUGE_PACKET: usize = 16 << 20;

/// How a step of the fuzz loop went wrong, or ended the session on purpose.
enum Fault {
    /// The socket: closed, timed out, or the stub sent garbage.
    Wire(WireError),
    /// A wrong answer.
    Wrong(String),
    /// The guest died.
    Death(String),
    /// The fuzzer ended the session itself (`D`, or a close).
    End,
    /// The fuzzer ended the VM itself (`k`, `vKill`).
    Killed,
}

impl From<WireError> for Fault {
    fn from(e: WireError) -> Fault {
        Fault::Wire(e)
    }
}

type Step<T = ()> = Result<T, Fault>;

/// One connection.
struct Conn {
    wire: Wire,
    /// The stub's PacketSize (bytes of packet data).
    packet_size: usize,
    /// The stub's last reply (what a `-` from us may make it send again).
    last_reply: Option<Vec<u8>>,
    /// Sentinel replies that may still arrive late (after a retransmitted sentinel).
    stale: Vec<Vec<u8>>,
}

/// The fuzzer's model of the stopped guest and the stub's debug state.
struct Model {
    /// What the writable scratch holds (None: unknown after a malformed write).
    scratch: Vec<Option<u8>>,
    /// The marker bytes at the start of the scratch.
    marker: Vec<u8>,
    /// Software breakpoints set (addresses on the demo's hot path).
    sw: BTreeSet<u64>,
    /// Hardware breakpoints set.
    hw: BTreeSet<u64>,
    /// Watchpoints set: (kind 2–4, address, length), all in the scratch.
    watch: BTreeSet<(u8, u64, u64)>,
    /// The last `g` since the guest last ran or a register was written.
    last_g: Option<Vec<u8>>,
    /// `counter` at the last stop, if that stop was a breakpoint hit at `tick`.
    tick_stop_counter: Option<u64>,
}

impl Model {
    fn new(rng: &mut Rng) -> Model {
        Model {
            scratch: vec![None; SCRATCH_LEN - MARKER_LEN],
            marker: rng.bytes(MARKER_LEN),
            sw: BTreeSet::new(),
            hw: BTreeSet::new(),
            watch: BTreeSet::new(),
            last_g: None,
            tick_stop_counter: None,
        }
    }

    /// A session ended: gdb's detach removes every breakpoint (README: "If gdb dies
    /// mid-session, kvmgdb treats it as a detach") and the guest runs on.
    fn session_ended(&mut self) {
        self.sw.clear();
        self.hw.clear();
        self.watch.clear();
        self.last_g = None;
        self.tick_stop_counter = None;
    }

    fn hw_used(&self) -> usize {
        self.hw.len() + self.watch.len()
    }

    fn any_breakpoint(&self) -> bool {
        !self.sw.is_empty() || !self.hw.is_empty()
    }
}

/// Runs the fuzzer as `cfg` says.
pub fn run(cfg: &Config) -> Result<Outcome, FuzzError> {
    let mut f = Fuzzer {
        cfg,
        rng: Rng::new(cfg.seed),
        demo: Demo::load()?,
        corpus: corpus::packets(),
        out: Outcome::new(cfg.seed),
        vm: None,
        conn: None,
        model: None,
        layout: None,
        context: VecDeque::new(),
        label: "",
        syncs: 0,
        since_check: 0,
        failed_starts: 0,
        vm_started_at: 0,
        timing: Default::default(),
    };
    let start = Instant::now();
    while f.out.packets < cfg.packets {
        if cfg.time_limit.is_some_and(|t| start.elapsed() > t) {
            f.out.timed_out = true;
            break;
        }
        f.step()?;
    }
    // The closing oracles and a clean end (the guest runs on, kvmgdb is told to quit).
    if f.conn.is_some() {
        f.label = "final check";
        let r = f.checkpoint();
        f.settle(r)?;
    }
    if f.vm.as_mut().is_some_and(|vm| vm.exited().is_some()) {
        f.vm_gone_finding();
    }
    f.out.seconds = start.elapsed().as_secs_f64();
    if cfg.verbose {
        let mut t: Vec<_> = f.timing.iter().collect();
        t.sort_by_key(|(_, (_, d))| std::cmp::Reverse(*d));
        for (l, (n, d)) in t {
            eprintln!("{l}: {n} in {d:?}");
        }
    }
    Ok(f.out)
}

struct Fuzzer<'a> {
    cfg: &'a Config,
    rng: Rng,
    demo: Demo,
    corpus: Vec<Vec<u8>>,
    out: Outcome,
    vm: Option<Vm>,
    conn: Option<Conn>,
    model: Option<Model>,
    layout: Option<Layout>,
    /// The bytes of the last actions since the last sync point.
    context: VecDeque<Vec<u8>>,
    /// What the current action is, for grouping findings.
    label: &'static str,
    syncs: u64,
    since_check: u64,
    failed_starts: u32,
    /// The packet count when the current VM started.
    vm_started_at: u64,
    timing: std::collections::HashMap<&'static str, (u64, Duration)>,
}

impl Fuzzer<'_> {
    /// One action, with its findings recorded.
    fn step(&mut self) -> Result<(), FuzzError> {
        if self.vm.is_none() {
            let vm = match Vm::start(&self.cfg.kvmgdb, MEMORY) {
                Ok(vm) => vm,
                Err(e) => {
                    self.failed_starts += 1;
                    if self.failed_starts > 3 {
                        return Err(e.into());
                    }
                    return Ok(());
                }
            };
            self.failed_starts = 0;
            self.out.vms += 1;
            self.vm_started_at = self.out.packets;
            self.vm = Some(vm);
            self.model = Some(Model::new(&mut self.rng));
            self.conn = None;
        }
        let t0 = Instant::now();
        let r = if self.conn.is_none() {
            self.label = "session start";
            self.open_session()
        } else if self.since_check >= self.cfg.check_every {
            self.since_check = 0;
            self.label = "periodic check";
            self.checkpoint()
        } else {
            self.action()
        };
        let label = self.label;
        let e = self.timing.entry(label).or_default();
        e.0 += 1;
        e.1 += t0.elapsed();
        self.settle(r)
    }

    /// Turns a step's result into findings and the state the next step starts from.
    fn settle(&mut self, r: Step) -> Result<(), FuzzError> {
        let fault = match r {
            Ok(()) => return Ok(()),
            Err(f) => f,
        };
        match fault {
            Fault::End => self.end_session(),
            Fault::Killed => {
                let exited = self.vm.as_mut().and_then(|vm| vm.wait_exit(REPLY_TIMEOUT));
                if exited.is_none() {
                    self.finding(Class::Wrong, "k did not end kvmgdb".into());
                } else if self.vm.as_ref().is_some_and(Vm::panicked) {
                    self.finding(Class::Panic, "panic while ending the VM".into());
                }
                self.vm = None;
                self.conn = None;
            }
            Fault::Wrong(detail) => {
                self.finding(Class::Wrong, detail);
                // The session's state is no longer known: start a fresh one.
                self.end_session();
            }
            Fault::Death(detail) => {
                self.finding(Class::GuestDeath, detail);
                self.vm = None;
                self.conn = None;
            }
            Fault::Wire(e) => {
                let gone = self.vm.as_mut().is_some_and(|vm| {
                    // A crash shows as a closed socket a moment before the exit status; one
                    // missed here is caught when the next connection is refused.
                    vm.wait_exit(Duration::from_millis(2)).is_some()
                });
                if gone {
                    self.vm_gone_finding();
                    self.vm = None;
                    self.conn = None;
                    return Ok(());
                }
                match e {
                    WireError::Closed | WireError::Io(_) => {
                        self.finding(Class::Dropped, "the stub closed the connection".into());
                        self.end_session();
                    }
                    WireError::Timeout(t) => {
                        self.finding(Class::Hang, format!("no reply within {t:?}"));
                        self.vm = None;
                        self.conn = None;
                    }
                    WireError::Malformed(m) => {
                        self.finding(Class::Wrong, format!("malformed reply: {m}"));
                        self.end_session();
                    }
                }
            }
        }
        Ok(())
    }

    /// Records why the VM process is gone.
    fn vm_gone_finding(&mut self) {
        let Some(vm) = self.vm.as_mut() else { return };
        let status = vm.exited();
        let stderr = vm.stderr();
        let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        if vm.panicked() {
            self.finding(
                Class::Panic,
                format!("kvmgdb panicked ({status:?}): {tail}"),
            );
        } else if let Some(line) = stderr.lines().find(|l| l.contains(GUEST_STOPPED)) {
            // The guest died while no session was there to see it (e.g. after a detach).
            let line = line.to_string();
            self.finding(Class::GuestDeath, format!("kvmgdb ended: {line}"));
        } else {
            self.finding(
                Class::Crash,
                format!("kvmgdb exited unasked ({status:?}): {tail}"),
            );
        }
    }

    fn end_session(&mut self) {
        self.conn = None;
        if let Some(m) = self.model.as_mut() {
            m.session_ended();
        }
    }

    fn finding(&mut self, class: Class, detail: String) {
        let mut bytes: Vec<u8> = self.context.iter().flatten().copied().collect();
        let mut no_ack = false;
        if let Some(c) = self.conn.as_mut() {
            bytes.extend(c.wire.take_log());
            no_ack = !c.wire.ack;
        }
        self.context.clear();
        if self.cfg.verbose {
            eprintln!(
                "kvmgdb-fuzz: {}: {}: {detail}\n  bytes: {}",
                class.name(),
                self.label,
                escape(&bytes)
            );
        }
        self.out.record(Finding {
            class,
            label: self.label.to_string(),
            detail,
            bytes,
            no_ack,
            at_packet: self.out.packets,
        });
    }

    // ---- plumbing ------------------------------------------------------------------

    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a session is open")
    }

    fn model(&mut self) -> &mut Model {
        self.model.as_mut().expect("a VM runs")
    }

    /// Starts an action: its bytes go into the reproducer context.
    fn begin(&mut self, label: &'static str) {
        self.label = label;
        if let Some(c) = self.conn.as_mut() {
            let log = c.wire.take_log();
            if !log.is_empty() {
                self.context.push_back(log);
                if self.context.len() > CONTEXT_ACTIONS {
                    self.context.pop_front();
                }
            }
        }
    }

    /// Sends one well-formed packet.
    fn send(&mut self, data: &[u8]) -> Step {
        self.out.packets += 1;
        self.since_check += 1;
        self.conn().wire.write_packet(data)?;
        Ok(())
    }

    /// Sends raw bytes counted as one packet (junk, interrupts).
    fn send_raw(&mut self, bytes: &[u8]) -> Step {
        self.out.packets += 1;
        self.since_check += 1;
        self.conn().wire.write(bytes)?;
        Ok(())
    }

    /// The next reply packet; `O` console output and late sentinel replies are skipped.
    fn reply(&mut self) -> Step<Vec<u8>> {
        self.reply_within(REPLY_TIMEOUT)
    }

    fn reply_within(&mut self, timeout: Duration) -> Step<Vec<u8>> {
        let c = self.conn();
        loop {
            let p = c.wire.next_packet(timeout)?;
            if let Some(i) = c.stale.iter().position(|s| *s == p) {
                c.stale.swap_remove(i);
                continue;
            }
            c.last_reply = Some(p.clone());
            return Ok(p);
        }
    }

    /// Sends `data` and returns its reply.
    fn request(&mut self, data: &[u8]) -> Step<Vec<u8>> {
        self.send(data)?;
        let r = self.reply()?;
        // `?` is the one non-resuming packet answered with a stop reply (RSP manual, "?").
        if data != b"?" && parse_stop(&r).is_ok_and(|s| s.is_some()) {
            return Err(wrong(
                data,
                &r,
                "a stop reply to a packet that does not resume",
            ));
        }
        Ok(r)
    }

    /// Sends `data`; the reply must satisfy `ok`.
    fn expect(&mut self, data: &[u8], what: &str, ok: impl Fn(&[u8]) -> bool) -> Step<Vec<u8>> {
        let r = self.request(data)?;
        if !ok(&r) {
            return Err(wrong(data, &r, what));
        }
        Ok(r)
    }

    fn expect_ok(&mut self, data: &[u8]) -> Step {
        self.expect(data, "the reply must be OK", |r| r == b"OK")
            .map(drop)
    }

    /// Reads `len` bytes at `addr` with one `m`; None for an `E` reply.
    fn read_mem(&mut self, addr: u64, len: usize) -> Step<Option<Vec<u8>>> {
        let req = format!("m{addr:x},{len:x}");
        let r = self.request(req.as_bytes())?;
        if is_error(&r) {
            return Ok(None);
        }
        let mut out = Vec::new();
        decode_hex(&r, &mut out).map_err(|e| wrong(req.as_bytes(), &r, &e.to_string()))?;
        if out.len() > len {
            return Err(wrong(req.as_bytes(), &r, "more bytes than asked for"));
        }
        Ok(Some(out))
    }

    // ---- sessions ------------------------------------------------------------------

    fn open_session(&mut self) -> Step {
        let stream = self
            .vm
            .as_ref()
            .expect("a VM runs")
            .connect()
            .map_err(|e| Fault::Wire(WireError::Io(std::io::Error::other(e.to_string()))))?;
        self.out.sessions += 1;
        self.context.clear();
        self.conn = Some(Conn {
            wire: Wire::new(stream)?,
            packet_size: 0,
            last_reply: None,
            stale: Vec::new(),
        });
        self.begin("session start");
        if self.rng.chance(50) {
            // gdb opens with an ack.
            self.send_raw(b"+")?;
        }
        // gdb's own qSupported, or the bare packet that older clients send (RSP manual:
        // "qSupported [:gdbfeature [;gdbfeature]... ]").
        let qsupported: &[u8] = if self.rng.chance(75) {
            b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;memory-tagging+;xmlRegisters=i386"
        } else {
            self.label = "bare qSupported";
            b"qSupported"
        };
        let r = self.expect(qsupported, "qSupported must give PacketSize", |r| {
            packet_size(r).is_some()
        })?;
        self.conn().packet_size = packet_size(&r).unwrap_or(0x1000);
        self.label = "session start";
        if self.rng.chance(70) {
            self.no_ack_mode()?;
        }
        let h = format!("Hg{TID}");
        self.expect_ok(h.as_bytes())?;
        self.expect_stop_query()?;
        if self.layout.is_none() {
            self.layout = Some(self.read_layout()?);
        }
        // A fresh VM: lay down the marker and the scratch contents.
        let unknown = self.model().scratch.iter().any(Option::is_none);
        if unknown {
            let marker = self.model().marker.clone();
            self.write_mem(SCRATCH, &marker)?;
            let fill = self.rng.bytes(SCRATCH_LEN - MARKER_LEN);
            self.write_scratch(0, &fill)?;
        }
        self.check_registers("registers at the session's first stop")?;
        if unknown && self.rng.chance(50) {
            // A fresh VM's first resume with gdb's Ctrl-C in the same write: the stop can
            // land before the vCPU first entered KVM, whose registers must still be real.
            self.label = "fresh VM: continue and Ctrl-C in one write";
            self.resume_continue(b"vCont;c", true)?;
        }
        Ok(())
    }

    fn no_ack_mode(&mut self) -> Step {
        self.expect_ok(b"QStartNoAckMode")?;
        self.conn().wire.ack = false;
        Ok(())
    }

    fn read_layout(&mut self) -> Step<Layout> {
        let mut xml = Vec::new();
        loop {
            let req = format!("qXfer:features:read:target.xml:{:x},ffb", xml.len());
            let r = self.request(req.as_bytes())?;
            match r.split_first() {
                Some((b'm', d)) => xml.extend_from_slice(&unescape_binary(d)),
                Some((b'l', d)) => {
                    xml.extend_from_slice(&unescape_binary(d));
                    break;
                }
                _ => return Err(wrong(req.as_bytes(), &r, "no target description")),
            }
        }
        let layout = Layout::from_xml(&String::from_utf8_lossy(&xml));
        for name in ["rip", "cr0", "efer", "cs", "r8"] {
            layout
                .get(name)
                .map_err(|e| Fault::Wrong(format!("target.xml: {e}")))?;
        }
        Ok(layout)
    }

    // ---- the model's writes ----------------------------------------------------------

    /// `M` at an absolute address (the marker or the scratch).
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Step {
        let mut req = format!("M{addr:x},{:x}:", data.len()).into_bytes();
        for b in data {
            let _ = write!(HexSink(&mut req), "{b:02x}");
        }
        self.expect_ok(&req)
    }

    /// `M` or `X` at an offset into the writable scratch, updating the model.
    fn write_scratch(&mut self, off: usize, data: &[u8]) -> Step {
        let addr = SCRATCH + (MARKER_LEN + off) as u64;
        if self.rng.chance(50) {
            self.write_mem(addr, data)?;
        } else {
            let mut req = format!("X{addr:x},{:x}:", data.len()).into_bytes();
            escape_binary(data, &mut req);
            self.expect_ok(&req)?;
        }
        let m = self.model();
        for (i, &b) in data.iter().enumerate() {
            m.scratch[off + i] = Some(b);
        }
        Ok(())
    }

    // ---- oracles -------------------------------------------------------------------

    /// The periodic check.
    fn checkpoint(&mut self) -> Step {
        self.begin("periodic check");
        if self.vm.as_mut().is_some_and(|vm| vm.exited().is_some()) {
            return Err(Fault::Wire(WireError::Closed));
        }
        self.expect_stop_query()?;
        self.expect(b"qAttached", "qAttached answers 0 or 1", |r| {
            r == b"1" || r == b"0"
        })?;
        self.check_all_scratch()?;
        self.check_code_around_breakpoints()?;
        self.check_registers("registers at a periodic check")?;
        self.check_registers("registers read twice")?;
        if !self.model().any_breakpoint() {
            self.breakpoint_still_hits()?;
        }
        Ok(())
    }

    /// `?` gives a stop reply.
    fn expect_stop_query(&mut self) -> Step {
        self.expect(b"?", "? must give a stop reply", |r| {
            matches!(parse_stop(r), Ok(Some(Stop::Signal(..))))
        })
        .map(drop)
    }

    fn check_all_scratch(&mut self) -> Step {
        let chunk = (self.conn().packet_size / 2).clamp(16, 2048);
        let mut off = 0;
        while off < SCRATCH_LEN - MARKER_LEN {
            let n = chunk.min(SCRATCH_LEN - MARKER_LEN - off);
            self.check_scratch_range(off, n)?;
            off += n;
        }
        Ok(())
    }

    /// `m` over part of the writable scratch equals what was written.
    fn check_scratch_range(&mut self, off: usize, len: usize) -> Step {
        let addr = SCRATCH + (MARKER_LEN + off) as u64;
        let Some(got) = self.read_mem(addr, len)? else {
            return Err(Fault::Wrong(format!(
                "m{addr:x},{len:x} of written RAM answered an error"
            )));
        };
        if got.len() != len {
            return Err(Fault::Wrong(format!(
                "m{addr:x},{len:x} returned {} bytes of RAM that exists",
                got.len()
            )));
        }
        let model = &self.model.as_ref().expect("a VM runs").scratch[off..off + len];
        if let Some(i) = (0..len).find(|&i| model[i].is_some_and(|b| b != got[i])) {
            return Err(Fault::Wrong(format!(
                "m{addr:x},{len:x}: byte at {:#x} reads {:#04x}, the fuzzer wrote {:#04x}",
                addr + i as u64,
                got[i],
                model[i].unwrap_or(0)
            )));
        }
        Ok(())
    }

    /// `m` over code equals the ELF's bytes (breakpoints never show).
    fn check_code(&mut self, addr: u64, len: usize) -> Step {
        let Some(want) = self.demo.code_at(addr, len).map(<[u8]>::to_vec) else {
            return Ok(());
        };
        let got = self.read_mem(addr, len)?;
        if got.as_deref() != Some(want.as_slice()) {
            return Err(Fault::Wrong(format!(
                "m{addr:x},{len:x} of code reads {}, the image has {}",
                got.map_or("an error".into(), |g| hex(&g)),
                hex(&want)
            )));
        }
        Ok(())
    }

    fn check_code_around_breakpoints(&mut self) -> Step {
        let mut at: Vec<u64> = self.model().sw.iter().copied().collect();
        at.push(self.demo.tick);
        for a in at {
            self.check_code(a.saturating_sub(4), 12)?;
        }
        Ok(())
    }

    /// `g`: the right size, sane long-mode state, equal to the last `g` unless the guest
    /// ran or a register was written since.
    fn check_registers(&mut self, what: &'static str) -> Step<Vec<u8>> {
        let r = self.request(b"g")?;
        let layout = self
            .layout
            .clone()
            .expect("the layout is read at session start");
        let mut g = Vec::new();
        decode_hex(&r, &mut g).map_err(|e| wrong(b"g", &r, &e.to_string()))?;
        if g.len() != layout.g_len {
            return Err(wrong(
                b"g",
                &r,
                &format!("{} bytes, the description says {}", g.len(), layout.g_len),
            ));
        }
        let val = |name: &'static str| {
            layout
                .get(name)
                .ok()
                .and_then(|s| layout.value(&g, s))
                .unwrap_or(0)
        };
        let (rip, cr0, efer, cs) = (val("rip"), val("cr0"), val("efer"), val("cs"));
        let mut bad = Vec::new();
        if !self.demo.in_code(rip) {
            bad.push(format!("rip {rip:#x} is outside the demo's code"));
        }
        if cr0 & CR0_PE_PG != CR0_PE_PG {
            bad.push(format!("cr0 {cr0:#x} lacks PE|PG"));
        }
        if efer & EFER_LMA == 0 {
            bad.push(format!("efer {efer:#x} lacks LMA"));
        }
        if cs != DEMO_CS {
            bad.push(format!("cs {cs:#x} is not the demo's {DEMO_CS:#x}"));
        }
        if !bad.is_empty() {
            return Err(Fault::Wrong(format!(
                "{what}: g shows state the demo cannot be in: {}",
                bad.join(", ")
            )));
        }
        let m = self.model();
        if let Some(prev) = &m.last_g {
            if *prev != g {
                let i = prev.iter().zip(&g).position(|(a, b)| a != b).unwrap_or(0);
                return Err(Fault::Wrong(format!(
                    "{what}: two g without a resume differ (first at byte {i})"
                )));
            }
        }
        m.last_g = Some(g.clone());
        Ok(g)
    }

    /// With a breakpoint on `tick`, a continue stops there.
    fn breakpoint_still_hits(&mut self) -> Step {
        self.label = "breakpoint after junk";
        let tick = self.demo.tick;
        let hw = self.rng.chance(30) && self.model().hw_used() < DEBUG_REGS;
        let z = format!("Z{},{tick:x},1", u8::from(hw));
        self.expect_ok(z.as_bytes())?;
        if hw {
            self.model().hw.insert(tick);
        } else {
            self.model().sw.insert(tick);
        }
        self.resume_continue(b"vCont;c:p1.-1", false)?;
        let zr = format!("z{},{tick:x},1", u8::from(hw));
        self.expect_ok(zr.as_bytes())?;
        let m = self.model();
        m.sw.remove(&tick);
        m.hw.remove(&tick);
        Ok(())
    }

    // ---- resumes -------------------------------------------------------------------

    /// Classifies a stop reply: Ok(signal) for a stop the fuzzer can cause.
    fn stop_signal(&mut self, req: &[u8], r: &[u8]) -> Step<u8> {
        match parse_stop(r) {
            Ok(Some(Stop::Signal(s, _))) if s == SIGINT || s == SIGTRAP => Ok(s),
            Ok(Some(Stop::Signal(s, p))) => Err(Fault::Death(format!(
                "stop with signal {s} ({p}) after {}",
                escape(req)
            ))),
            Ok(Some(stop)) => Err(Fault::Death(format!("{stop} after {}", escape(req)))),
            _ => Err(wrong(req, r, "a resume must end in a stop reply")),
        }
    }

    /// Waits for the stop after a resume (console output skipped).
    fn wait_stop(&mut self, req: &[u8], timeout: Duration) -> Step<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.reply_within(left)?;
            if parse_stop(&r).is_ok_and(|s| s.is_none()) {
                continue;
            }
            let s = self.stop_signal(req, &r)?;
            return Ok((s, r));
        }
    }

    /// A continue. With a breakpoint set, it must hit one; without, the guest must run
    /// until the fuzzer's Ctrl-C. `with_interrupt` sends the 0x03 in the same write.
    fn resume_continue(&mut self, req: &[u8], with_interrupt: bool) -> Step {
        let before = self.read_counter()?;
        self.model().last_g = None;
        let bps = self.model().any_breakpoint();
        if with_interrupt {
            let mut bytes = frame(req);
            bytes.push(0x03);
            self.send_raw(&bytes)?;
            self.out.packets += 1;
            let (s, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
            if s == SIGTRAP && !bps {
                return Err(wrong(req, &r, "SIGTRAP with no breakpoint set"));
            }
            self.model().tick_stop_counter = None;
            self.check_registers("registers after continue+Ctrl-C in one write")?;
            return Ok(());
        }
        self.send(req)?;
        if bps {
            match self.wait_stop(req, HIT_TIMEOUT) {
                Ok((s, r)) => {
                    if s != SIGTRAP {
                        return Err(wrong(req, &r, "a breakpoint stop must be SIGTRAP"));
                    }
                    return self.after_breakpoint_stop(req, &r, before);
                }
                Err(Fault::Wire(WireError::Timeout(_))) => {
                    self.send_raw(&[0x03])?;
                    let (_, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
                    return Err(wrong(
                        req,
                        &r,
                        "a breakpoint on the demo's hot path never hit",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        // Nothing may stop the guest before the interrupt.
        let run_for = Duration::from_millis(2 + self.rng.below(20));
        if !self.conn().wire.quiet_for(run_for)? {
            let r = self.reply()?;
            return Err(wrong(req, &r, "the guest stopped before the interrupt"));
        }
        self.send_raw(&[0x03])?;
        let (s, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
        if s != SIGINT {
            return Err(wrong(req, &r, "an interrupt must stop with SIGINT"));
        }
        self.model().tick_stop_counter = None;
        if self.rng.chance(50) {
            self.check_registers("registers after an interrupt")?;
        }
        Ok(())
    }

    /// At a breakpoint stop: rip is a breakpoint, and two consecutive stops at `tick` are
    /// one `counter++` apart (the instruction under the breakpoint ran in between).
    fn after_breakpoint_stop(&mut self, req: &[u8], r: &[u8], before: u64) -> Step {
        let g = self.check_registers("registers at a breakpoint")?;
        let layout = self.layout.clone().expect("layout");
        let rip = layout
            .get("rip")
            .ok()
            .and_then(|s| layout.value(&g, s))
            .unwrap_or(0);
        let m = self.model();
        if !m.sw.contains(&rip) && !m.hw.contains(&rip) {
            return Err(wrong(
                req,
                r,
                &format!("stopped at {rip:#x}, which has no breakpoint"),
            ));
        }
        let prev_tick = m.tick_stop_counter.take();
        if rip == self.demo.tick {
            let now = self.read_counter()?;
            if let Some(prev) = prev_tick {
                if now != prev + 1 {
                    return Err(Fault::Wrong(format!(
                        "two stops at tick {} counter increments apart (before the resume: {before}), not 1: the breakpoint was re-reported",
                        now.wrapping_sub(prev)
                    )));
                }
            }
            self.model().tick_stop_counter = Some(now);
        }
        Ok(())
    }

    fn read_counter(&mut self) -> Step<u64> {
        let addr = self.demo.counter;
        match self.read_mem(addr, 8)? {
            Some(b) if b.len() == 8 => Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
            _ => Err(Fault::Wrong(format!("m{addr:x},8 of `counter` failed"))),
        }
    }

    /// A single step: one SIGTRAP stop, registers sane.
    fn resume_step(&mut self, req: &[u8]) -> Step {
        self.model().last_g = None;
        self.model().tick_stop_counter = None;
        self.send(req)?;
        let (s, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
        if s != SIGTRAP {
            return Err(wrong(req, &r, "a step must stop with SIGTRAP"));
        }
        if self.rng.chance(60) {
            self.check_registers("registers after a step")?;
        }
        Ok(())
    }

    // ---- the actions -------------------------------------------------------------------

    fn action(&mut self) -> Step {
        // A smoke run reboots at least twice, whatever the dice say.
        if self.cfg.smoke && self.out.packets - self.vm_started_at > self.cfg.packets / 3 {
            return self.act_kill();
        }
        match self.rng.below(100) {
            0..=9 => self.act_memory(),
            10..=14 => self.act_registers(),
            15..=20 => self.act_breakpoints(),
            21..=27 => self.act_resume(),
            28..=35 => self.act_queries(),
            36..=47 => self.act_malformed(),
            48..=77 => self.act_junk(),
            78..=81 => self.act_threads(),
            82..=85 => {
                self.begin("registers");
                self.check_registers("g").map(drop)
            }
            86..=88 => {
                self.begin("code read");
                let (a, b) = self.rng.pick(&self.demo.code).clone();
                let off = self.rng.index(b.len());
                let len = 1 + self.rng.index(64);
                self.check_code(a + off as u64, len.min(b.len() - off))
            }
            89..=94 => self.act_session_end(),
            95..=96 if self.conn().wire.ack => {
                self.begin("QStartNoAckMode");
                self.no_ack_mode()
            }
            97 if self.rng.chance(4) => self.act_kill(),
            _ => self.act_huge(),
        }
    }

    fn act_memory(&mut self) -> Step {
        let space = SCRATCH_LEN - MARKER_LEN;
        let off = self.rng.index(space);
        let len = 1 + self.rng.index((space - off).min(512));
        if self.rng.chance(50) {
            self.begin("memory write");
            let data = self.rng.bytes(len);
            self.write_scratch(off, &data)
        } else {
            self.begin("memory read");
            self.check_scratch_range(off, len)
        }
    }

    fn act_registers(&mut self) -> Step {
        let layout = self.layout.clone().expect("layout");
        match self.rng.below(4) {
            0 => {
                // P on a general register reads back, then the old value is restored.
                self.begin("P write reads back");
                let name = *self
                    .rng
                    .pick(&["r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]);
                let slot = layout.get(name).map_err(|e| Fault::Wrong(e.to_string()))?;
                let old = self.read_reg(slot.num)?;
                let new = self.rng.next_u64();
                self.model().last_g = None;
                self.write_reg(slot.num, new)?;
                let got = self.read_reg(slot.num)?;
                self.write_reg(slot.num, old)?;
                if got != new {
                    return Err(Fault::Wrong(format!(
                        "P{:x}={} then p{:x} reads {got:#x}",
                        slot.num,
                        hex(&new.to_le_bytes()),
                        slot.num
                    )));
                }
                Ok(())
            }
            1 => {
                // G with what g gave is a no-op.
                self.begin("G round trip");
                let g = self.check_registers("g before G")?;
                let mut req = b"G".to_vec();
                req.extend(hex(&g).bytes());
                self.model().last_g = None;
                self.expect_ok(&req)?;
                self.model().last_g = Some(g);
                self.check_registers("g after G").map(drop)
            }
            2 => {
                // A value no CPU accepts: refused, old value kept (SDM Vol. 3A, 2.5, 2.2.1).
                self.begin("bad system-register write");
                let (name, bad) =
                    *self
                        .rng
                        .pick(&[("cr0", 0u64), ("efer", 0), ("cr4", 0xffff_ffff)]);
                let slot = layout.get(name).map_err(|e| Fault::Wrong(e.to_string()))?;
                let old = self.read_reg(slot.num)?;
                let req = format!("P{:x}={}", slot.num, hex(&bad.to_le_bytes()));
                let r = self.request(req.as_bytes())?;
                let now = self.read_reg(slot.num)?;
                if now != old {
                    self.write_reg(slot.num, old)?;
                }
                if !is_error(&r) || now != old {
                    return Err(wrong(
                        req.as_bytes(),
                        &r,
                        &format!(
                            "{name} = {bad:#x} must be refused, {name} kept ({old:#x}, now {now:#x})"
                        ),
                    ));
                }
                Ok(())
            }
            _ => {
                // p equals the g slice.
                self.begin("p equals g");
                let g = self.check_registers("g before p")?;
                let slot = *self.rng.pick(&layout.regs);
                let req = format!("p{:x}", slot.num);
                let r = self.request(req.as_bytes())?;
                let want = hex(&g[slot.offset..slot.offset + slot.size]);
                if r != want.as_bytes() {
                    return Err(wrong(req.as_bytes(), &r, &format!("g has {want}")));
                }
                Ok(())
            }
        }
    }

    fn read_reg(&mut self, num: usize) -> Step<u64> {
        let req = format!("p{num:x}");
        let r = self.request(req.as_bytes())?;
        let mut b = Vec::new();
        decode_hex(&r, &mut b).map_err(|e| wrong(req.as_bytes(), &r, &e.to_string()))?;
        if b.is_empty() || b.len() > 8 {
            return Err(wrong(req.as_bytes(), &r, "not a register value"));
        }
        b.resize(8, 0);
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn write_reg(&mut self, num: usize, v: u64) -> Step {
        let req = format!("P{num:x}={}", hex(&v.to_le_bytes()));
        self.expect_ok(req.as_bytes())
    }

    fn act_breakpoints(&mut self) -> Step {
        let hot = *self.rng.pick(&self.demo.hot);
        match self.rng.below(4) {
            0 => {
                self.begin("Z0 on the hot path");
                let req = format!("Z0,{hot:x},1");
                self.expect_ok(req.as_bytes())?;
                self.model().sw.insert(hot);
                self.check_code(hot, 1)
            }
            1 => {
                self.begin("z removes a breakpoint");
                let (kind, addr) = {
                    let m = self.model();
                    match (m.sw.iter().next(), m.hw.iter().next()) {
                        (Some(&a), _) => (0, a),
                        (None, Some(&a)) => (1, a),
                        _ => return Ok(()),
                    }
                };
                let req = format!("z{kind},{addr:x},1");
                self.expect_ok(req.as_bytes())?;
                // z0 and z1 remove only their own kind: a hardware breakpoint at the same
                // address stays.
                let m = self.model();
                if kind == 0 {
                    m.sw.remove(&addr);
                } else {
                    m.hw.remove(&addr);
                }
                Ok(())
            }
            2 => {
                self.begin("Z1 on the hot path");
                let free = self.model().hw_used() < DEBUG_REGS;
                let req = format!("Z1,{hot:x},1");
                let r = self.request(req.as_bytes())?;
                if r == b"OK" {
                    self.model().hw.insert(hot);
                } else if free || !is_error(&r) {
                    return Err(wrong(
                        req.as_bytes(),
                        &r,
                        "a free debug register: must be OK",
                    ));
                }
                Ok(())
            }
            _ => {
                // A watchpoint on scratch the guest never touches: set, then maybe removed.
                self.begin("watchpoint on scratch");
                let kind = 2 + self.rng.below(3) as u8;
                let len = 1u64 << self.rng.below(4);
                let off = (self.rng.index(SCRATCH_LEN - MARKER_LEN) as u64) & !(len - 1);
                let addr = SCRATCH + MARKER_LEN as u64 + off;
                let free = self.model().hw_used() < DEBUG_REGS;
                let req = format!("Z{kind},{addr:x},{len:x}");
                let r = self.request(req.as_bytes())?;
                if r == b"OK" {
                    self.model().watch.insert((kind, addr, len));
                } else if free || !is_error(&r) {
                    return Err(wrong(
                        req.as_bytes(),
                        &r,
                        "a free debug register: must be OK",
                    ));
                }
                if self.rng.chance(50) {
                    if let Some(&(k, a, l)) = self.model().watch.iter().next() {
                        let req = format!("z{k},{a:x},{l:x}");
                        self.expect_ok(req.as_bytes())?;
                        self.model().watch.remove(&(k, a, l));
                    }
                }
                Ok(())
            }
        }
    }

    fn act_resume(&mut self) -> Step {
        if self.rng.chance(45) {
            self.begin("step");
            let req = *self.rng.pick(&[
                "s",
                "vCont;s:1",
                "vCont;s:p1.1",
                "vCont;s:p1.1;c:p1.-1",
                "vCont;s",
                "vCont;s:-1",
                "vCont;s:p1.-1",
            ]);
            if req == "vCont;s" || req.ends_with("-1") {
                self.label = "vCont;s for all threads";
            }
            return self.resume_step(req.as_bytes());
        }
        self.begin("continue");
        let req = *self
            .rng
            .pick(&["c", "vCont;c", "vCont;c:p1.-1", "vCont;c:1"]);
        let together = self.rng.chance(20);
        if together {
            self.label = "continue and Ctrl-C in one write";
        }
        self.resume_continue(req.as_bytes(), together)
    }

    fn act_queries(&mut self) -> Step {
        self.begin("query");
        type Check = fn(&[u8]) -> bool;
        let any: Check = |_| true;
        let table: &[(&str, &str, Check)] = &[
            ("?", "a stop reply", |r| {
                matches!(parse_stop(r), Ok(Some(Stop::Signal(..))))
            }),
            ("qAttached", "0 or 1", |r| r == b"0" || r == b"1"),
            ("qAttached:1", "0 or 1", |r| r == b"0" || r == b"1"),
            ("qC", "QC and a thread, or empty", |r| {
                r.starts_with(b"QC") || r.is_empty()
            }),
            ("qfThreadInfo", "a thread list", |r| r.starts_with(b"m")),
            ("qsThreadInfo", "the list's end", |r| r == b"l"),
            ("vCont?", "the vCont actions", |r| r.starts_with(b"vCont;")),
            ("vMustReplyEmpty", "the empty reply", |r| r.is_empty()),
            ("qOffsets", "any", any),
            ("qSymbol::", "any", any),
            ("qTStatus", "any", any),
            ("qSupported", "PacketSize", |r| packet_size(r).is_some()),
            ("QNonStop:0", "OK or empty", |r| r == b"OK" || r.is_empty()),
            ("QThreadEvents:0", "OK or empty", |r| {
                r == b"OK" || r.is_empty()
            }),
            ("qXfer:features:read:target.xml:0,40", "m or l data", |r| {
                r.starts_with(b"m") || r.starts_with(b"l")
            }),
            ("qXfer:features:read:nosuch.xml:0,40", "an error", is_error),
            ("qXfer:features:read:target.xml:zz,40", "an error", is_error),
            ("vFile:open:2f,0,0", "empty or F-1", |r| {
                r.is_empty() || r.starts_with(b"F-1")
            }),
        ];
        if self.rng.chance(10) {
            return self.monitor();
        }
        if self.rng.chance(30) {
            // A read-only corpus packet replayed as gdb sent it: exactly one reply.
            self.label = "corpus replay";
            let ro: Vec<Vec<u8>> = self
                .corpus
                .iter()
                .filter(|p| corpus::read_only(p) && !p.starts_with(b"m"))
                .cloned()
                .collect();
            let p = self.rng.pick(&ro).clone();
            self.request(&p)?;
            return Ok(());
        }
        let (req, what, ok) = *self.rng.pick(table);
        if req == "qSupported" {
            self.label = "bare qSupported";
        }
        self.expect(req.as_bytes(), what, ok).map(drop)
    }

    /// `qRcmd`: console output, then OK (or an error for a command it does not know).
    fn monitor(&mut self) -> Step {
        self.label = "monitor command";
        let cmd = *self
            .rng
            .pick(&["info registers", "info cpus", "info mem", "help", "nosuch"]);
        let req = format!("qRcmd,{}", hex(cmd.as_bytes()));
        self.send(req.as_bytes())?;
        loop {
            let r = self.reply()?;
            if r.first() == Some(&b'O') && r.len() > 1 && r[1..].iter().all(u8::is_ascii_hexdigit) {
                continue;
            }
            if r == b"OK" || is_error(&r) {
                return Ok(());
            }
            return Err(wrong(
                req.as_bytes(),
                &r,
                "a monitor command ends in OK or E",
            ));
        }
    }

    fn act_threads(&mut self) -> Step {
        self.begin("thread selection");
        let good = [
            "Hg0", "Hgp1.1", "Hc-1", "Hg1", "Hcp1.-1", "Hgp0.0", "T1", "Tp1.1",
        ];
        let unsure = ["Hg-1", "Hgp1.-1", "T0", "T-1", "Hm1", "Hmp1.1"];
        let bad = ["Hgffff", "Hgp1.5", "Hc2", "Hgp2.1", "T2", "Tp1.2", "Hcp1.9"];
        let r = match self.rng.below(3) {
            0 => {
                let p = *self.rng.pick(&good);
                self.expect_ok(p.as_bytes())
            }
            1 => {
                self.label = "thread packets gdbstub rejects";
                let p = *self.rng.pick(&unsure);
                self.expect(p.as_bytes(), "OK or an error", |r| {
                    r == b"OK" || is_error(r)
                })
                .map(drop)
            }
            _ => {
                self.label = "a thread that does not exist";
                let p = *self.rng.pick(&bad);
                self.expect(p.as_bytes(), "an unknown thread is an error", is_error)
                    .map(drop)
            }
        };
        r?;
        // Back to the one real thread, as gdb would select it.
        self.expect_ok(format!("Hg{TID}").as_bytes())?;
        self.expect_ok(b"Hc-1")
    }

    /// Well-framed packets with bad arguments: one reply, an error or empty; no effect.
    fn act_malformed(&mut self) -> Step {
        self.begin("malformed arguments");
        let layout = self.layout.clone().expect("layout");
        let w = SCRATCH + MARKER_LEN as u64 + self.rng.below(64);
        match self.rng.below(7) {
            0 => {
                let w16 = format!("m{w:x},");
                let p = self
                    .rng
                    .pick(&["mzz,4", "m", "m8000", "m,4", "m100000,zz", "m-1,4", &w16])
                    .to_string();
                self.expect(p.as_bytes(), "an error", |r| is_error(r) || r.is_empty())
                    .map(drop)
            }
            1 => {
                // A write with a broken length or data: refused; the range is then unknown
                // in case part of it landed.
                let p = match self.rng.below(4) {
                    0 => format!("M{w:x},4:zz112233"),
                    1 => format!("M{w:x},2:112233"),
                    2 => format!("M{w:x},4:1122"),
                    _ => "Mzz,1:00".to_string(),
                };
                let off = (w - SCRATCH) as usize - MARKER_LEN;
                for b in &mut self.model().scratch[off..off + 4] {
                    *b = None;
                }
                self.expect(p.as_bytes(), "an error", is_error).map(drop)
            }
            2 => {
                // Breakpoint packets missing or breaking a field (on scratch, never run).
                let p = self
                    .rng
                    .pick(&[
                        format!("Z0,{w:x}"),
                        "Z0,zz,1".to_string(),
                        format!("Z9,{w:x},1"),
                        format!("z0,{w:x}"),
                        format!("Z1,{w:x},zz"),
                        "Z".to_string(),
                    ])
                    .clone();
                self.expect(p.as_bytes(), "an error or empty", |r| {
                    is_error(r) || r.is_empty()
                })
                .map(drop)
            }
            3 => {
                // P with bad data: refused, the register unchanged.
                let name = *self.rng.pick(&["rip", "r8", "rax"]);
                let slot = layout.get(name).map_err(|e| Fault::Wrong(e.to_string()))?;
                let old = self.read_reg(slot.num)?;
                let n = slot.num;
                let p = self
                    .rng
                    .pick(&[
                        format!("P{n:x}=zz"),
                        format!("P{n:x}=12"),
                        format!("P{n:x}"),
                        "Pzz=00".to_string(),
                        "P=".to_string(),
                        format!("P{n:x}=00112233445566778899"),
                    ])
                    .clone();
                self.model().last_g = None;
                let r = self.request(p.as_bytes())?;
                let now = self.read_reg(n)?;
                if now != old {
                    self.write_reg(n, old)?;
                    return Err(wrong(
                        p.as_bytes(),
                        &r,
                        &format!("{name} changed from {old:#x} to {now:#x}"),
                    ));
                }
                if !is_error(&r) {
                    return Err(wrong(
                        p.as_bytes(),
                        &r,
                        "bad register data must be an error",
                    ));
                }
                Ok(())
            }
            4 => {
                // G too short: refused, registers unchanged.
                let g = self.check_registers("g before a short G")?;
                let cut = 1 + self.rng.index(g.len() - 1);
                let mut p = b"G".to_vec();
                p.extend(hex(&g[..cut]).bytes());
                self.model().last_g = None;
                let r = self.request(&p)?;
                self.model().last_g = Some(g.clone());
                let after = self.check_registers("g after a short G");
                if after.is_err() {
                    // Put the registers back so the guest survives the stub's mistake.
                    let mut full = b"G".to_vec();
                    full.extend(hex(&g).bytes());
                    self.model().last_g = None;
                    let _ = self.request(&full);
                    after?;
                }
                if !is_error(&r) {
                    return Err(wrong(&p, &r, "a short G must be an error"));
                }
                Ok(())
            }
            5 => {
                // vCont forms that resume nothing, or a thread that does not exist.
                self.label = "vCont without a valid action";
                let p = *self.rng.pick(&[
                    "vContX",
                    "vCont;;",
                    "vCont;t",
                    "vCont;s:2",
                    "vCont;x",
                    "vCont;c:zz",
                    "vCont",
                ]);
                self.expect_no_resume(p.as_bytes())
            }
            _ => {
                // m beyond RAM, across its end, or longer than PacketSize.
                self.label = "m beyond RAM or PacketSize";
                let ram_end = 128u64 << 20;
                let ps = self.conn().packet_size;
                match self.rng.below(3) {
                    0 => {
                        let req = format!("m{:x},10", ram_end + self.rng.below(1 << 30));
                        self.expect(req.as_bytes(), "no RAM there: an error", is_error)
                            .map(drop)
                    }
                    1 => {
                        let req = format!("m{:x},10", ram_end - 8);
                        self.expect(req.as_bytes(), "8 bytes or an error", |r| {
                            is_error(r) || r.len() == 16
                        })
                        .map(drop)
                    }
                    _ => {
                        let big = if self.rng.chance(10) {
                            0xffff_ffff
                        } else {
                            ps as u64 + 1 + self.rng.below(1 << 20)
                        };
                        let req = format!("m{:x},{big:x}", SCRATCH + MARKER_LEN as u64);
                        let r = self.request(req.as_bytes())?;
                        if r.len() > ps {
                            return Err(wrong(
                                req.as_bytes(),
                                &r[..64],
                                &format!("a {}-byte reply exceeds PacketSize {ps:#x}", r.len()),
                            ));
                        }
                        if is_error(&r) {
                            return Err(wrong(
                                req.as_bytes(),
                                &r,
                                "the RAM there exists: give what fits",
                            ));
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// A packet that must not resume: an error or empty reply, the guest still stopped.
    fn expect_no_resume(&mut self, req: &[u8]) -> Step {
        self.send(req)?;
        match self.reply_within(NO_RESUME_WAIT) {
            Ok(r) if is_error(&r) || r.is_empty() || r == b"OK" => Ok(()),
            Ok(r) => Err(wrong(req, &r, "an error or the empty reply")),
            Err(Fault::Wire(WireError::Timeout(_))) => {
                // No reply: did it resume? An interrupt tells.
                self.send_raw(&[0x03])?;
                let r = self.reply()?;
                Err(wrong(req, &r, "no reply: the packet resumed the guest"))
            }
            Err(e) => Err(e),
        }
    }

    /// Junk, then the sentinel.
    fn act_junk(&mut self) -> Step {
        let ack = self.conn().wire.ack;
        match self.rng.below(6) {
            0 => {
                self.begin("bad checksum");
                let p = self.read_only_packet();
                let mut bytes = frame(&p);
                let n = bytes.len();
                bytes[n - 1] = if bytes[n - 1] == b'0' { b'1' } else { b'0' };
                self.send_raw(&bytes)?;
                // Ack mode: `-`, no reply (RSP manual, "Packet Acknowledgment"). No-ack
                // mode: dropped or answered, never the session's end.
                self.sync(Junk {
                    max_replies: usize::from(!ack),
                    need_nak: ack,
                    empty_only: false,
                })
            }
            1 => {
                self.begin("stray bytes between packets");
                let n = 1 + self.rng.index(16);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        loop {
                            let b = self.rng.next_u64() as u8;
                            if !matches!(b, b'$' | 0x03 | b'-') {
                                break b;
                            }
                        }
                    })
                    .collect();
                self.send_raw(&bytes)?;
                self.sync(Junk {
                    max_replies: 0,
                    need_nak: false,
                    empty_only: false,
                })
            }
            2 => {
                self.begin("a `-` from the client");
                self.send_raw(b"-")?;
                // Ack mode: the last reply again, or nothing.
                self.sync(Junk {
                    max_replies: usize::from(ack),
                    need_nak: false,
                    empty_only: false,
                })
            }
            3 => {
                self.begin("Ctrl-C while stopped");
                self.send_raw(&[0x03])?;
                self.sync(Junk {
                    max_replies: 0,
                    need_nak: false,
                    empty_only: false,
                })?;
                if self.rng.chance(60) {
                    // gdb's race: its Ctrl-C arrives just after a stop, then it resumes.
                    self.label = "resume after Ctrl-C while stopped";
                    self.resume_continue(b"vCont;c:p1.-1", false)?;
                }
                Ok(())
            }
            _ => {
                self.begin("mutated corpus packet");
                let src = self.rng.pick(&self.corpus).clone();
                let p = corpus::mutate(&mut self.rng, &src);
                let unknown = corpus::UNKNOWN_LETTERS.contains(&p[0]);
                if unknown {
                    self.label = "unknown packet";
                }
                let touches_threads = p[0] == b'H';
                self.send(&p)?;
                self.sync(Junk {
                    max_replies: 1,
                    need_nak: false,
                    empty_only: unknown,
                })?;
                if touches_threads {
                    self.expect_ok(format!("Hg{TID}").as_bytes())?;
                    self.expect_ok(b"Hc-1")?;
                }
                Ok(())
            }
        }
    }

    /// A packet that only reads state.
    fn read_only_packet(&mut self) -> Vec<u8> {
        let fixed: [&[u8]; 4] = [b"?", b"g", b"qAttached", b"m100000,10"];
        if self.rng.chance(50) {
            return self.rng.pick(&fixed).to_vec();
        }
        let ro: Vec<&Vec<u8>> = self
            .corpus
            .iter()
            .filter(|p| corpus::read_only(p))
            .collect();
        self.rng.pick(&ro).to_vec()
    }

    /// The sync sentinel after junk: an `m` of the marker (a different slice each time,
    /// so a late copy is never mistaken for a fresh one). Replies before it must fit `junk`.
    fn sync(&mut self, junk: Junk) -> Step {
        let off = (self.syncs as usize * 37) % (MARKER_LEN - 16);
        self.syncs += 1;
        let req = format!("m{:x},10", SCRATCH + off as u64);
        let want = hex(&self.model().marker[off..off + 16]).into_bytes();
        let label = self.label;
        self.send(req.as_bytes())?;
        let mut replies = Vec::new();
        let mut naks = 0;
        let mut resent = false;
        loop {
            let wait = if resent {
                REPLY_TIMEOUT
            } else {
                SENTINEL_RETRY
            };
            match self.conn().wire.next_event(wait) {
                Ok(Event::Ack) => {}
                Ok(Event::Nak) => naks += 1,
                Ok(Event::Packet(p)) if p == want => break,
                Ok(Event::Packet(p)) => {
                    let c = self.conn();
                    if let Some(i) = c.stale.iter().position(|s| *s == p) {
                        c.stale.swap_remove(i);
                    } else {
                        replies.push(p);
                    }
                }
                Err(WireError::Timeout(_)) if !resent => {
                    resent = true;
                    self.conn().stale.push(want.clone());
                    self.send(req.as_bytes())?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.label = label;
        let ack = self.conn().wire.ack;
        if junk.need_nak && ack && naks == 0 {
            return Err(Fault::Wrong("ack mode: no `-` for a bad checksum".into()));
        }
        if replies.len() > junk.max_replies {
            let shown: Vec<String> = replies.iter().map(|r| escape(r)).collect();
            return Err(Fault::Wrong(format!(
                "{} replies to junk that allows {}: {}",
                replies.len(),
                junk.max_replies,
                shown.join(" | ")
            )));
        }
        if junk.empty_only && replies.iter().any(|r| !r.is_empty()) {
            return Err(Fault::Wrong(format!(
                "an unknown packet must get the empty reply, not {}",
                escape(&replies[0])
            )));
        }
        if let Some(r) = replies.last() {
            self.conn().last_reply = Some(r.clone());
        }
        Ok(())
    }

    /// An oversized packet: one that overruns PacketSize, or one never terminated. The
    /// stub must bound what it buffers.
    fn act_huge(&mut self) -> Step {
        let ps = self.conn().packet_size.max(0x1000);
        if self.rng.chance(if self.cfg.smoke { 30 } else { 5 }) {
            self.begin("unterminated 16 MiB packet");
            let rss = self.vm.as_ref().map_or(0, Vm::rss_kib);
            let mut bytes = vec![b'$'];
            bytes.extend(std::iter::repeat_n(b'0', HUGE_PACKET));
            self.send_raw(&bytes)?;
            std::thread::sleep(Duration::from_millis(200));
            let grown = self.vm.as_ref().map_or(0, Vm::rss_kib).saturating_sub(rss);
            if grown > RSS_SLACK_KIB {
                return Err(Fault::Wrong(format!(
                    "an unterminated packet grew kvmgdb by {} MiB: unbounded buffer",
                    grown / 1024
                )));
            }
            self.send_raw(b"#00")?;
            return self.sync(Junk {
                max_replies: 1,
                need_nak: false,
                empty_only: false,
            });
        }
        self.begin("packet over PacketSize");
        let n = ps + 1 + self.rng.index(4 * ps);
        // An unknown query: whatever the stub does with its tail, no reply but an error or
        // the empty one.
        let mut p = b"qKvmgdbFuzz:".to_vec();
        p.extend(std::iter::repeat_n(b'6', n));
        self.send(&p)?;
        self.sync(Junk {
            max_replies: 1,
            need_nak: false,
            empty_only: false,
        })
    }

    /// Ends the session the way gdb does (`D`), by closing (gdb killed), or mid-packet.
    fn act_session_end(&mut self) -> Step {
        match self.rng.below(4) {
            0 => {
                self.begin("detach");
                self.checkpoint()?;
                let p = *self.rng.pick(&["D", "D;1"]);
                self.expect_ok(p.as_bytes())?;
                Err(Fault::End)
            }
            1 => {
                self.begin("close while running");
                self.send(b"vCont;c:p1.-1")?;
                if self.rng.chance(50) {
                    std::thread::sleep(Duration::from_millis(self.rng.below(5)));
                }
                Err(Fault::End)
            }
            2 => {
                self.begin("close mid-packet");
                let p = frame(b"m100000,40");
                let cut = 1 + self.rng.index(p.len() - 1);
                self.send_raw(&p[..cut])?;
                Err(Fault::End)
            }
            _ => {
                self.begin("close while stopped");
                if self.rng.chance(50) {
                    self.checkpoint()?;
                }
                Err(Fault::End)
            }
        }
    }

    /// `k` or `vKill;1`: the VM ends (and the next step boots a new one).
    fn act_kill(&mut self) -> Step {
        self.begin("kill");
        let p: &[u8] = if self.rng.chance(50) {
            b"k"
        } else {
            b"vKill;1"
        };
        self.send(p)?;
        Err(Fault::Killed)
    }
}

/// What a sync accepts before its sentinel reply.
struct Junk {
    /// At most this many reply packets.
    max_replies: usize,
    /// In ack mode, a `-` must come.
    need_nak: bool,
    /// Every reply must be empty.
    empty_only: bool,
}

fn wrong(req: &[u8], reply: &[u8], what: &str) -> Fault {
    let shown: Vec<u8> = reply.iter().take(200).copied().collect();
    Fault::Wrong(format!(
        "{} answered {:?}: {what}",
        escape(&req[..req.len().min(200)]),
        escape(&shown)
    ))
}

/// An `E NN` error reply (or gdbstub's `E.text`).
fn is_error(r: &[u8]) -> bool {
    r.first() == Some(&b'E') && (r.len() == 3 || r.get(1) == Some(&b'.'))
}

fn packet_size(r: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(r)
        .split(';')
        .find_map(|f| f.strip_prefix("PacketSize=").map(str::to_string))
        .and_then(|h| usize::from_str_radix(&h, 16).ok())
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// `fmt::Write` into a byte buffer.
struct HexSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for HexSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Binary data as `X` sends it: `#`, `$`, `}` and `*` escaped as `}` and the byte XOR 0x20
/// (RSP manual, "Overview", binary data).
fn escape_binary(data: &[u8], out: &mut Vec<u8>) {
    for &b in data {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            out.push(b'}');
            out.push(b ^ 0x20);
        } else {
            out.push(b);
        }
    }
}

fn unescape_binary(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut it = data.iter();
    while let Some(&b) = it.next() {
        if b == b'}' {
            if let Some(&n) = it.next() {
                out.push(n ^ 0x20);
            }
        } else {
            out.push(b);
        }
    }
    out
}
