//! The fuzz loop: sessions against one VM at a time, each a random mix of checked packets
//! (whose one right reply the fuzzer knows from its own model of the guest) and junk
//! (bad checksums, stray bytes, NAKs, interrupts, mutated corpus packets, oversized
//! packets), each junk item followed by a sync sentinel. Every few hundred packets, and
//! before the fuzzer itself ends a session, the oracles run: the stub answers, the scratch
//! memory reads back as written, the code reads back unchanged, the registers are sane and
//! stable, a breakpoint still hits.
//!
//! This file holds the state, the model, the loop and the plumbing; the sessions, the
//! oracles and each family of actions have a file of their own.

use super::corpus;
use super::outcome::{Class, Finding, Outcome};
use super::rng::Rng;
use super::target::{Demo, Layout, MARKER_LEN, MEMORY, SCRATCH_LEN};
use super::vm::Vm;
use super::wire::{Wire, WireError};
use super::{Config, FuzzError, escape};
use crate::rsp::{decode_hex, parse_stop};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

mod encode;
mod junk;
mod malformed;
mod oracles;
mod queries;
mod resume;
mod session;
mod state;

/// How long any reply may take before the stub counts as hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many actions' bytes a reproducer keeps (within one session). Not just the bytes
/// since the last sync: some faults (a stray Ctrl-C remembered) strike an action later.
const CONTEXT_ACTIONS: usize = 4;
/// gdb's thread id of the demo's one vCPU (kvmgdb numbers vCPU n as thread n + 1).
const TID: &str = "p1.1";
/// Debug registers for hardware breakpoints and watchpoints (SDM Vol. 3B, 18.2).
const DEBUG_REGS: usize = 4;
/// What kvmgdb prints when the guest dies with no session attached (src/cli.rs).
const GUEST_STOPPED: &str = "kvmgdb: the guest stopped";

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
