//! The packet front: every byte from the client passes through here before gdbstub sees
//! it. gdbstub 0.7 ends the whole session on any packet it cannot parse or does not expect
//! (its state machine is consumed by the error), so the front frames the byte stream
//! itself, checks checksums and lengths, parses every packet gdbstub would parse, answers
//! or rewrites those gdbstub would mishandle, and forwards only packets it handles
//! correctly. The per-packet decisions are in [`Front::classify`]; the RSP manual sections
//! each one follows are cited there ("Overview", "Packet Acknowledgment", "Standard
//! Replies", and each packet's own section).
//!
//! Nothing here allocates per packet: the packet body and the scratch buffer for rewritten
//! packets are allocated once per session, bounded by [`PACKET_SIZE`].

use super::target::PACKET_BUFFER;
use std::fmt::Write as _;

/// The PacketSize we advertise in qSupported (gdbstub advertises its packet buffer's size).
/// gdb counts it as the whole packet, `$`, body, `#` and checksum, when it builds one; a
/// reply's body never exceeds it.
pub const PACKET_SIZE: usize = PACKET_BUFFER;

/// The longest packet body we accept: gdbstub's buffer holds the whole framed packet.
const MAX_BODY: usize = PACKET_SIZE - 4;

/// gdb's interrupt (Ctrl-C) byte, sent outside any packet (RSP manual, "Interrupts").
pub const INTERRUPT: u8 = 0x03;

/// Error replies, errno-style as gdbstub's own (RSP manual, "Standard Replies": `E NN`).
/// EINVAL: a malformed packet or an argument out of range.
pub const E_INVAL: &str = "E16";
/// ESRCH: a thread or process the machine does not have.
pub const E_SRCH: &str = "E03";
/// EREMOTEIO (gdbstub's code for a failed target operation): the stub failed the packet.
pub const E_FAILED: &str = "E79";

/// Where the framer is in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// Between packets.
    Idle,
    /// In a packet body, after `$`.
    Body,
    /// Expecting the first checksum digit.
    Sum1,
    /// Expecting the second checksum digit.
    Sum2,
    /// Dropping the rest of an over-long packet until the next `$`.
    Skip,
}

/// What the framer found in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Nothing complete yet: all input consumed.
    None,
    /// A Ctrl-C byte outside a packet.
    Interrupt,
    /// A `-`: the client wants our last reply again.
    Nack,
    /// A packet with a good checksum; its body is [`Front::body`].
    Packet,
    /// A packet with a bad checksum, or longer than PacketSize: dropped.
    Bad,
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the packet to gdbstub as received.
    Forward,
    /// Pass [`Front::rewritten`] to gdbstub instead: the same request in a form it handles.
    Rewrite,
    /// Answer it ourselves with this reply body.
    Reply(&'static str),
    /// A QEMU packet: answer it with [`super::qemu::answer`].
    Qemu,
}

/// What the front needs to know about the machine and the session.
pub struct Ctx {
    /// How many vCPUs (gdb threads 1..=vcpus) the machine has.
    pub vcpus: usize,
    /// The largest address the register layout can express (u32 or u64).
    pub addr_max: u64,
    /// Whether the guest runs (gdbstub's Running state).
    pub running: bool,
    /// Whether a `G` packet's decoded bytes fit the register layout.
    pub regs_fit: fn(&[u8]) -> bool,
}

/// A fact gdbstub learns from a packet, kept here so that a fresh gdbstub can be told it
/// again after an error (see [`Front::replay`]); applied once gdbstub took the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fact {
    NoAck,
    Multiprocess(bool),
    MemThread(usize),
    ResumeThread(Option<usize>),
}

/// A thread-id element (RSP manual, "thread-id syntax").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Id {
    /// `-1`: all.
    All,
    /// `0`: any.
    Any,
    /// A positive number.
    Num(u64),
}

/// A thread-id: `[p<pid>.]<tid>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ThreadId {
    pid: Option<Id>,
    tid: Id,
}

/// gdbstub's one process (its FAKE_PID).
const PID: u64 = 1;

/// The packet front of one session.
pub struct Front {
    state: Recv,
    /// The body of the packet being received (between `$` and `#`).
    body: Vec<u8>,
    sum: u8,
    sum_hi: u8,
    /// A rewritten packet body for gdbstub.
    scratch: Vec<u8>,
    /// Per-vCPU vCont action (Some(step)) while normalising a vCont packet.
    plan: Vec<Option<bool>>,
    /// True once QStartNoAckMode has been accepted.
    no_ack: bool,
    multiprocess: bool,
    /// gdbstub's thread for memory and register access (gdb thread number).
    mem_thread: usize,
    /// gdbstub's thread for `c`/`s` (None: all threads).
    resume_thread: Option<usize>,
    pending: Option<Fact>,
}

impl Default for Front {
    fn default() -> Self {
        Front::new()
    }
}

impl Front {
    /// A front for a new session (ack mode, thread 1 selected, as gdbstub starts).
    pub fn new() -> Front {
        Front {
            state: Recv::Idle,
            body: Vec::with_capacity(MAX_BODY),
            sum: 0,
            sum_hi: 0,
            scratch: Vec::with_capacity(256),
            plan: Vec::new(),
            no_ack: false,
            multiprocess: false,
            mem_thread: 1,
            resume_thread: Some(1),
            pending: None,
        }
    }

    /// Whether packets are acknowledged (until QStartNoAckMode).
    pub fn acks(&self) -> bool {
        !self.no_ack
    }

    /// The body of the last packet [`Front::next`] returned.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The rewritten packet body of the last [`Verdict::Rewrite`].
    pub fn rewritten(&self) -> &[u8] {
        &self.scratch
    }

    /// Consumes bytes from `input` up to the end of the next unit; returns how many bytes
    /// it used and the unit. Outside packets only `$`, `-` and Ctrl-C mean anything: `+`
    /// acknowledges our reply and any other byte is noise between packets ("Overview").
    pub fn next(&mut self, input: &[u8]) -> (usize, Unit) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                Recv::Idle | Recv::Skip => {
                    let b = input[i];
                    i += 1;
                    match b {
                        b'$' => self.start(),
                        _ if self.state == Recv::Skip => {}
                        INTERRUPT => return (i, Unit::Interrupt),
                        b'-' => return (i, Unit::Nack),
                        _ => {}
                    }
                }
                Recv::Body => {
                    let rest = &input[i..];
                    let n = rest
                        .iter()
                        .position(|&c| c == b'#' || c == b'$')
                        .unwrap_or(rest.len());
                    let chunk = &rest[..n];
                    i += n;
                    if self.body.len() + chunk.len() > MAX_BODY {
                        // Longer than we can take: drop it now and resynchronise at the
                        // next `$`, so that no client-controlled buffer grows unbounded.
                        self.state = Recv::Skip;
                        return (i, Unit::Bad);
                    }
                    self.body.extend_from_slice(chunk);
                    self.sum = chunk.iter().fold(self.sum, |s, &c| s.wrapping_add(c));
                    if n < rest.len() {
                        i += 1;
                        if rest[n] == b'#' {
                            self.state = Recv::Sum1;
                        } else {
                            // `$` never occurs in a body (binary data escapes it): the
                            // packet was cut off and a new one starts.
                            self.start();
                        }
                    }
                }
                Recv::Sum1 => {
                    self.sum_hi = input[i];
                    i += 1;
                    self.state = Recv::Sum2;
                }
                Recv::Sum2 => {
                    let lo = input[i];
                    i += 1;
                    self.state = Recv::Idle;
                    let good = hex_digit(self.sum_hi)
                        .zip(hex_digit(lo))
                        .is_some_and(|(h, l)| (h << 4 | l) == self.sum);
                    return (i, if good { Unit::Packet } else { Unit::Bad });
                }
            }
        }
        (i, Unit::None)
    }

    fn start(&mut self) {
        self.state = Recv::Body;
        self.body.clear();
        self.sum = 0;
    }

    /// Notes that gdbstub took the last classified packet: what it learnt from it.
    pub fn commit(&mut self) {
        match self.pending.take() {
            Some(Fact::NoAck) => self.no_ack = true,
            Some(Fact::Multiprocess(on)) => self.multiprocess = on,
            Some(Fact::MemThread(t)) => self.mem_thread = t,
            Some(Fact::ResumeThread(t)) => self.resume_thread = t,
            None => {}
        }
    }

    /// Notes a stop reported for gdb thread `thread`: gdbstub makes it the thread for
    /// memory, registers and `c`/`s`.
    pub fn stopped(&mut self, thread: usize) {
        self.mem_thread = thread;
        self.resume_thread = Some(thread);
    }

    /// The packets that tell a fresh gdbstub what the session's gdbstub knew.
    pub fn replay(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.no_ack {
            v.push("QStartNoAckMode".to_string());
        }
        if self.multiprocess {
            v.push("qSupported:multiprocess+".to_string());
        }
        v.push(format!("Hg{:x}", self.mem_thread));
        v.push(match self.resume_thread {
            Some(t) => format!("Hc{t:x}"),
            None => "Hc-1".to_string(),
        });
        v
    }

    /// Decides what to do with the packet in [`Front::body`].
    pub fn classify(&mut self, ctx: &Ctx) -> Verdict {
        self.pending = None;
        let body = std::mem::take(&mut self.body);
        let v = self.decide(&body, ctx);
        self.body = body;
        v
    }

    fn decide(&mut self, p: &[u8], ctx: &Ctx) -> Verdict {
        use Verdict::*;
        let Some(&first) = p.first() else {
            return Forward; // gdbstub: unknown packet, empty reply
        };
        let rest = &p[1..];
        // The prefixes and their order are those gdbstub dispatches on for this target.
        match first {
            b'?' | b'g' | b'k' => empty_or_inval(rest),
            b'D' => match rest {
                [] => Forward,
                [b';', pid @ ..] if parse_hex(pid).is_some_and(|p| p != 0) => Forward,
                _ => Reply(E_INVAL),
            },
            b'G' => self.check_g(rest, ctx),
            b'H' => self.thread_select(rest, ctx),
            b'm' => self.read_memory(rest, ctx),
            b'M' => check_write(rest, ctx, false),
            b'X' => check_write(rest, ctx, true),
            b'T' => thread_alive(rest, ctx),
            b'c' | b's' => self.legacy_resume(first == b's', rest, ctx),
            b'p' => {
                if parse_hex(rest).is_some_and(|n| usize::try_from(n).is_ok()) {
                    Forward
                } else {
                    Reply(E_INVAL)
                }
            }
            b'P' => match split_once(rest, b'=') {
                Some((n, val))
                    if parse_hex(n).is_some_and(|n| usize::try_from(n).is_ok())
                        && is_hex_bytes(val) =>
                {
                    Forward
                }
                _ => Reply(E_INVAL),
            },
            b'z' | b'Z' => check_breakpoint(rest, ctx),
            b'v' => {
                if let Some(a) = p.strip_prefix(b"vKill") {
                    match a {
                        [b';', pid @ ..] if parse_hex(pid).is_some_and(|p| p != 0) => Forward,
                        _ => Reply(E_INVAL),
                    }
                } else if let Some(a) = p.strip_prefix(b"vCont") {
                    self.vcont(a, ctx)
                } else {
                    Forward // unknown to gdbstub: empty reply
                }
            }
            b'q' | b'Q' => self.query(p),
            _ => Forward,
        }
    }

    fn query(&mut self, p: &[u8]) -> Verdict {
        use Verdict::*;
        if p.starts_with(b"qqemu.") || p.starts_with(b"Qqemu.") {
            return Qemu;
        }
        if let Some(a) = p.strip_prefix(b"qAttached") {
            return match a {
                [] => Forward,
                [b':', pid @ ..] if parse_hex(pid).is_some_and(|p| p != 0) => Forward,
                _ => Reply(E_INVAL),
            };
        }
        if let Some(a) = p
            .strip_prefix(b"qfThreadInfo")
            .or_else(|| p.strip_prefix(b"qsThreadInfo"))
            .or_else(|| p.strip_prefix(b"QStartNoAckMode"))
        {
            if a.is_empty() && p.starts_with(b"QStartNoAckMode") {
                self.pending = Some(Fact::NoAck);
            }
            return empty_or_inval(a);
        }
        if let Some(a) = p.strip_prefix(b"qSupported") {
            return self.supported(a);
        }
        if let Some(a) = p.strip_prefix(b"qXfer:features:read") {
            return self.xfer_features(a);
        }
        if let Some(a) = p.strip_prefix(b"qRcmd") {
            return match a {
                [] => Forward,
                [b',', cmd @ ..] if cmd.is_empty() || is_hex_bytes(cmd) => Forward,
                _ => Reply(E_INVAL),
            };
        }
        Forward // unknown to gdbstub: empty reply
    }

    /// `qSupported[:gdbfeature[;gdbfeature]...]` ("General Query Packets"): the features
    /// are optional, and an empty one is no feature; gdbstub insists on at least one and
    /// ends the session on an empty one, so it gets the non-empty ones (or a harmless
    /// `name?` query it ignores).
    fn supported(&mut self, a: &[u8]) -> Verdict {
        let features = match a {
            [] => &[][..],
            [b':', f @ ..] => f,
            _ => return Verdict::Reply(E_INVAL),
        };
        let mut any_empty = features.is_empty();
        for f in features.split(|&b| b == b';') {
            match f {
                [] => any_empty = true,
                b"multiprocess+" => self.pending = Some(Fact::Multiprocess(true)),
                b"multiprocess-" => self.pending = Some(Fact::Multiprocess(false)),
                _ => {}
            }
        }
        if !any_empty {
            return Verdict::Forward;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(b"qSupported:");
        let mut first = true;
        for f in features.split(|&b| b == b';').filter(|f| !f.is_empty()) {
            if !first {
                self.scratch.push(b';');
            }
            first = false;
            self.scratch.extend_from_slice(f);
        }
        if first {
            self.scratch.extend_from_slice(b"kvmgdb?");
        }
        Verdict::Rewrite
    }

    /// `qXfer:features:read:annex:offset,length`: the reply (`m`/`l` and binary data,
    /// which escaping may double) must fit PacketSize, so a longer length is cut.
    fn xfer_features(&mut self, a: &[u8]) -> Verdict {
        let parsed = (|| {
            let a = a.strip_prefix(b":")?;
            let (annex, range) = split_once(a, b':')?;
            let (offset, length) = split_once(range, b',')?;
            parse_hex(offset)?;
            Some((annex, offset, parse_hex(length)?))
        })();
        let Some((annex, offset, length)) = parsed else {
            return Verdict::Reply(E_INVAL);
        };
        let max = ((PACKET_SIZE - 1) / 2) as u64;
        if length <= max {
            return Verdict::Forward;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(b"qXfer:features:read:");
        self.scratch.extend_from_slice(annex);
        self.scratch.push(b':');
        self.scratch.extend_from_slice(offset);
        push_fmt(&mut self.scratch, format_args!(",{max:x}"));
        Verdict::Rewrite
    }

    /// `G XX...`: gdbstub ends the session if the data does not fit the layout.
    fn check_g(&mut self, rest: &[u8], ctx: &Ctx) -> Verdict {
        if !is_hex_bytes(rest) {
            return Verdict::Reply(E_INVAL);
        }
        self.scratch.clear();
        self.scratch.extend(
            rest.chunks(2)
                .map(|h| hex_digit(h[0]).unwrap_or(0) << 4 | hex_digit(h[1]).unwrap_or(0)),
        );
        if (ctx.regs_fit)(&self.scratch) {
            Verdict::Forward
        } else {
            Verdict::Reply(E_INVAL)
        }
    }

    /// `H op thread-id` ("Packets"): op `g` for memory and registers, `c` for `c`/`s`;
    /// `-1` is all threads and `0` any thread. A thread the machine does not have is an
    /// error and leaves the selection as it was. gdbstub refuses `Hg-1` (all threads
    /// cannot be one register file) by ending the session, so all threads, like any
    /// thread, select the first. The packet is always passed on in one canonical form.
    fn thread_select(&mut self, rest: &[u8], ctx: &Ctx) -> Verdict {
        let (op, id) = match rest {
            [op @ (b'g' | b'c'), id @ ..] => (*op, id),
            _ => return Verdict::Reply(E_INVAL),
        };
        let Some(t) = parse_thread(id) else {
            return Verdict::Reply(E_INVAL);
        };
        if !pid_ok(t.pid) {
            return Verdict::Reply(E_SRCH);
        }
        let thread = match t.tid {
            Id::Num(n) if !thread_exists(n, ctx) => return Verdict::Reply(E_SRCH),
            Id::Num(n) => Some(n as usize),
            Id::Any => Some(1),
            Id::All if op == b'g' => Some(1),
            Id::All => None,
        };
        self.scratch.clear();
        self.scratch.push(b'H');
        self.scratch.push(op);
        match thread {
            Some(n) => push_fmt(&mut self.scratch, format_args!("{n:x}")),
            None => self.scratch.extend_from_slice(b"-1"),
        }
        self.pending = Some(match op {
            b'g' => Fact::MemThread(thread.unwrap_or(1)),
            _ => Fact::ResumeThread(thread),
        });
        Verdict::Rewrite
    }

    /// `m addr,length` ("Packets"): the reply may hold fewer bytes than asked for, and
    /// holds at most what fits in PacketSize; gdbstub would stream any length, and run on
    /// past a hole, so a longer length is cut to what fits. gdbstub then makes exactly one
    /// read, which stops at the first unmapped byte (a short read, or E if none).
    fn read_memory(&mut self, rest: &[u8], ctx: &Ctx) -> Verdict {
        let Some((addr, len)) = split_once(rest, b',') else {
            return Verdict::Reply(E_INVAL);
        };
        let (Some(a), Some(n)) = (parse_hex(addr), parse_hex(len)) else {
            return Verdict::Reply(E_INVAL);
        };
        if a > ctx.addr_max {
            return Verdict::Reply(E_INVAL);
        }
        let max = (PACKET_SIZE / 2) as u64;
        if n <= max {
            return Verdict::Forward;
        }
        self.scratch.clear();
        push_fmt(&mut self.scratch, format_args!("m{a:x},{max:x}"));
        Verdict::Rewrite
    }

    /// `c [addr]` / `s [addr]`: gdbstub ignores the address, which would resume somewhere
    /// else than asked, so an address is refused. `s` steps the `Hc` thread; after `Hc-1`
    /// that is every thread, which gdbstub refuses, so it gets the explicit vCont form.
    fn legacy_resume(&mut self, step: bool, rest: &[u8], ctx: &Ctx) -> Verdict {
        if ctx.running || !rest.is_empty() {
            return Verdict::Reply(E_INVAL);
        }
        if step && self.resume_thread.is_none() {
            self.plan.clear();
            self.plan.resize(ctx.vcpus, Some(true));
            self.write_plan();
            return Verdict::Rewrite;
        }
        Verdict::Forward
    }

    /// `vCont[;action[:thread-id]]...` ("Packets"). Each thread takes the leftmost action
    /// that names it; an action without a thread-id (or with `-1`) names every thread.
    /// There must be at least one action; `t` (stop) means something only in non-stop
    /// mode and we offer no range step (`vCont?` answers `c;C;s;S`), so both are errors
    /// here, as are threads the machine does not have. gdbstub handles the forms gdb sends
    /// (explicit steps, then at most one thread-less continue at the end); any other valid
    /// request is passed on as the equivalent explicit list, one action per thread.
    fn vcont(&mut self, a: &[u8], ctx: &Ctx) -> Verdict {
        use Verdict::*;
        if a == b"?" {
            return Forward;
        }
        if ctx.running {
            return Reply(E_INVAL);
        }
        let Some(actions) = a.strip_prefix(b";") else {
            return Reply(E_INVAL); // `vCont`, `vContX`: no action
        };
        self.plan.clear();
        self.plan.resize(ctx.vcpus, None);
        let mut as_is = true;
        let mut after_wildcard = false;
        for act in actions.split(|&b| b == b';') {
            let (kind, thread) = match split_once(act, b':') {
                Some((k, t)) => (k, Some(t)),
                None => (act, None),
            };
            let step = match kind {
                [b'c'] => false,
                [b's'] => true,
                [b'C' | b'S', sig @ ..] if parse_hex(sig).is_some_and(|s| s <= 0xff) => {
                    kind[0] == b'S'
                }
                _ => return Reply(E_INVAL),
            };
            if after_wildcard {
                as_is = false; // gdbstub would apply it over the wildcard
            }
            let tid = match thread {
                None => Id::All,
                Some(t) => {
                    let Some(t) = parse_thread(t) else {
                        return Reply(E_INVAL);
                    };
                    if !pid_ok(t.pid) {
                        return Reply(E_SRCH);
                    }
                    if !matches!(t.pid, None | Some(Id::All) | Some(Id::Num(PID))) {
                        as_is = false; // gdbstub refuses pid 0
                    }
                    t.tid
                }
            };
            match tid {
                Id::Num(n) => {
                    if !thread_exists(n, ctx) {
                        return Reply(E_SRCH);
                    }
                    let slot = &mut self.plan[n as usize - 1];
                    if slot.is_some() {
                        as_is = false;
                    } else {
                        *slot = Some(step);
                    }
                }
                Id::All | Id::Any => {
                    if step {
                        as_is = false; // gdbstub refuses a thread-less step
                    }
                    after_wildcard = true;
                    for slot in self.plan.iter_mut().filter(|s| s.is_none()) {
                        *slot = Some(step);
                    }
                }
            }
        }
        if as_is {
            return Forward;
        }
        self.write_plan();
        Rewrite
    }

    /// Writes the vCont packet for [`Front::plan`]: one explicit action per thread, or a
    /// plain continue when every thread continues.
    fn write_plan(&mut self) {
        self.scratch.clear();
        self.scratch.extend_from_slice(b"vCont");
        if self.plan.iter().all(|s| *s == Some(false)) {
            self.scratch.extend_from_slice(b";c");
            return;
        }
        for (i, slot) in self.plan.iter().enumerate() {
            if let Some(step) = slot {
                let k = if *step { 's' } else { 'c' };
                push_fmt(&mut self.scratch, format_args!(";{k}:{:x}", i + 1));
            }
        }
    }
}

/// A packet that takes no arguments.
fn empty_or_inval(rest: &[u8]) -> Verdict {
    if rest.is_empty() {
        Verdict::Forward
    } else {
        Verdict::Reply(E_INVAL)
    }
}

/// `M addr,length:XX...` and `X addr,length:XX...` (binary): the data must be as long as
/// the length says.
fn check_write(rest: &[u8], ctx: &Ctx, binary: bool) -> Verdict {
    let parsed = (|| {
        let (head, data) = split_once(rest, b':')?;
        let (addr, len) = split_once(head, b',')?;
        let addr = parse_hex(addr)?;
        let len = parse_hex(len)?;
        let n = if binary {
            binary_len(data)?
        } else {
            is_hex_bytes_or_empty(data).then_some(data.len() / 2)?
        };
        (addr <= ctx.addr_max && n as u64 == len).then_some(())
    })();
    match parsed {
        Some(()) => Verdict::Forward,
        None => Verdict::Reply(E_INVAL),
    }
}

/// `z type,addr,kind` / `Z type,addr,kind[;cond...]`: gdbstub ends the session if an
/// argument is missing or does not fit an address.
fn check_breakpoint(rest: &[u8], ctx: &Ctx) -> Verdict {
    let mut parts = rest.splitn(4, |&b| b == b',' || b == b';');
    let ok = (|| {
        parse_hex(parts.next()?).filter(|&t| t <= 0xff)?;
        parse_hex(parts.next()?).filter(|&a| a <= ctx.addr_max)?;
        parse_hex(parts.next()?).filter(|&k| k <= ctx.addr_max)?;
        Some(())
    })();
    match ok {
        Some(()) => Verdict::Forward,
        None => Verdict::Reply(E_INVAL),
    }
}

/// `T thread-id` ("Packets"): OK if the thread exists, else an error; answered here
/// (gdbstub ends the session on `T0` and `T-1`, which name no one thread).
fn thread_alive(rest: &[u8], ctx: &Ctx) -> Verdict {
    match parse_thread(rest) {
        None => Verdict::Reply(E_INVAL),
        Some(ThreadId {
            tid: Id::Num(n),
            pid,
        }) if pid_ok(pid) && thread_exists(n, ctx) => Verdict::Reply("OK"),
        Some(_) => Verdict::Reply(E_SRCH),
    }
}

fn thread_exists(n: u64, ctx: &Ctx) -> bool {
    n >= 1 && n <= ctx.vcpus as u64
}

fn pid_ok(pid: Option<Id>) -> bool {
    matches!(
        pid,
        None | Some(Id::All) | Some(Id::Any) | Some(Id::Num(PID))
    )
}

fn parse_id(s: &[u8]) -> Option<Id> {
    if s == b"-1" {
        return Some(Id::All);
    }
    match parse_hex(s)? {
        0 => Some(Id::Any),
        n => Some(Id::Num(n)),
    }
}

fn parse_thread(s: &[u8]) -> Option<ThreadId> {
    match s {
        [b'p', rest @ ..] => {
            let (pid, tid) = match split_once(rest, b'.') {
                Some((p, t)) => (p, Some(t)),
                None => (rest, None),
            };
            Some(ThreadId {
                pid: Some(parse_id(pid)?),
                tid: match tid {
                    Some(t) => parse_id(t)?,
                    None => Id::All, // `p<pid>` alone: all its threads
                },
            })
        }
        _ => Some(ThreadId {
            pid: None,
            tid: parse_id(s)?,
        }),
    }
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A non-empty hex number that fits 64 bits (leading zeros allowed).
fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = hex_digit(b)?;
        acc.checked_mul(16)?.checked_add(u64::from(d))
    })
}

/// Non-empty hex data: pairs of hex digits.
fn is_hex_bytes(s: &[u8]) -> bool {
    !s.is_empty() && is_hex_bytes_or_empty(s)
}

fn is_hex_bytes_or_empty(s: &[u8]) -> bool {
    s.len() % 2 == 0 && s.iter().all(|&b| hex_digit(b).is_some())
}

/// The length of escaped binary data (`}` escapes the next byte, "Overview"), or None if
/// it ends inside an escape.
fn binary_len(s: &[u8]) -> Option<usize> {
    let mut n = 0;
    let mut escaped = false;
    for &b in s {
        if escaped {
            escaped = false;
            n += 1;
        } else if b == b'}' {
            escaped = true;
        } else {
            n += 1;
        }
    }
    (!escaped).then_some(n)
}

fn push_fmt(buf: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    struct W<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    let _ = W(buf).write_fmt(args);
}

/// The checksum of a packet body (RSP manual, "Overview": the sum of its bytes mod 256).
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// Appends a framed reply to `out`: `+` first in ack mode (acknowledging the packet it
/// answers), then `$body#xx`.
pub fn frame_into(out: &mut Vec<u8>, body: &[u8], ack: bool) {
    if ack {
        out.push(b'+');
    }
    out.push(b'$');
    out.extend_from_slice(body);
    push_fmt(out, format_args!("#{:02x}", checksum(body)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(vcpus: usize) -> Ctx {
        Ctx {
            vcpus,
            addr_max: u64::MAX,
            running: false,
            regs_fit: |b| b.len() == 4,
        }
    }

    fn packet(f: &mut Front, bytes: &[u8]) -> Vec<(Unit, String)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (n, u) = f.next(&bytes[pos..]);
            pos += n;
            if u != Unit::None {
                out.push((u, String::from_utf8_lossy(f.body()).into_owned()));
            }
        }
        out
    }

    fn verdict(f: &mut Front, body: &str, vcpus: usize) -> (Verdict, String) {
        let mut framed = Vec::new();
        frame_into(&mut framed, body.as_bytes(), false);
        assert_eq!(packet(f, &framed)[0].0, Unit::Packet);
        let v = f.classify(&ctx(vcpus));
        (v, String::from_utf8_lossy(f.rewritten()).into_owned())
    }

    #[test]
    fn frames_checksums_and_noise() {
        let mut f = Front::new();
        let units = packet(&mut f, b"x+$g#67\x03-$g#00$m0,4#fd");
        let kinds: Vec<Unit> = units.iter().map(|u| u.0).collect();
        assert_eq!(
            kinds,
            [
                Unit::Packet,
                Unit::Interrupt,
                Unit::Nack,
                Unit::Bad,
                Unit::Packet
            ]
        );
        assert_eq!(units[4].1, "m0,4");
        // A `$` inside a packet starts a new one.
        let units = packet(&mut f, b"$m0$g#67");
        assert_eq!(units, [(Unit::Packet, "g".to_string())]);
    }

    #[test]
    fn over_long_packet_is_dropped_and_bounded() {
        let mut f = Front::new();
        let mut bytes = vec![b'$'];
        bytes.extend(std::iter::repeat_n(b'a', MAX_BODY + 10));
        bytes.extend_from_slice(b"-\x03#00$g#67");
        let kinds: Vec<Unit> = packet(&mut f, &bytes).iter().map(|u| u.0).collect();
        assert_eq!(kinds, [Unit::Bad, Unit::Packet]);
        assert!(f.body.capacity() <= MAX_BODY);
    }

    #[test]
    fn decisions() {
        let mut f = Front::new();
        use Verdict::*;
        assert_eq!(verdict(&mut f, "g", 1).0, Forward);
        assert_eq!(verdict(&mut f, "mzz,4", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "Z0,100000", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "Z0,100000,1", 1).0, Forward);
        assert_eq!(verdict(&mut f, "P10=zz", 1).0, Reply(E_INVAL));
        assert_eq!(
            verdict(&mut f, "qSupported", 1),
            (Rewrite, "qSupported:kvmgdb?".into())
        );
        assert_eq!(
            verdict(&mut f, "vCont;s", 2),
            (Rewrite, "vCont;s:1;s:2".into())
        );
        assert_eq!(
            verdict(&mut f, "vCont;s:-1", 1),
            (Rewrite, "vCont;s:1".into())
        );
        assert_eq!(verdict(&mut f, "vCont;s:1;c", 2).0, Forward);
        assert_eq!(
            verdict(&mut f, "vCont;c;s:1", 2),
            (Rewrite, "vCont;c".into())
        );
        assert_eq!(verdict(&mut f, "vCont;t", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "vCont;s:2", 1).0, Reply(E_SRCH));
        assert_eq!(verdict(&mut f, "vContX", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "vCont;;", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "vCont", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "T0", 1).0, Reply(E_SRCH));
        assert_eq!(verdict(&mut f, "T-1", 1).0, Reply(E_SRCH));
        assert_eq!(verdict(&mut f, "T1", 1).0, Reply("OK"));
        assert_eq!(verdict(&mut f, "Hg-1", 1), (Rewrite, "Hg1".into()));
        assert_eq!(verdict(&mut f, "Hgp1.-1", 1), (Rewrite, "Hg1".into()));
        assert_eq!(verdict(&mut f, "Hgffff", 1).0, Reply(E_SRCH));
        assert_eq!(verdict(&mut f, "Hm1", 1).0, Reply(E_INVAL));
        assert_eq!(
            verdict(&mut f, "m101020,ffffffff", 1),
            (Rewrite, format!("m101020,{:x}", PACKET_SIZE / 2))
        );
        assert_eq!(verdict(&mut f, "G00112233", 1).0, Forward);
        assert_eq!(verdict(&mut f, "G0011", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "X100,2:}]a", 1).0, Forward);
        assert_eq!(verdict(&mut f, "X100,2:a}", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "qqemu.sstep", 1).0, Qemu);
    }

    #[test]
    fn facts_wait_for_commit() {
        let mut f = Front::new();
        verdict(&mut f, "Hc-1", 2);
        assert_eq!(f.resume_thread, Some(1));
        f.commit();
        assert_eq!(f.resume_thread, None);
        assert_eq!(
            verdict(&mut f, "s", 2),
            (Verdict::Rewrite, "vCont;s:1;s:2".into())
        );
        verdict(&mut f, "QStartNoAckMode", 1);
        assert!(f.acks());
        f.commit();
        assert!(!f.acks());
        assert_eq!(f.replay(), ["QStartNoAckMode", "Hg1", "Hc-1"]);
    }
}
