//! The packet front: every byte from the client passes through here before gdbstub sees
//! it. gdbstub 0.7 ends the whole session on any packet it cannot parse or does not expect
//! (its state machine is consumed by the error), so the front frames the byte stream
//! itself, checks checksums and lengths, parses every packet gdbstub would parse, answers
//! or rewrites those gdbstub would mishandle, and forwards only packets it handles
//! correctly. This module frames the stream (acks, retransmits, buffer bounds) and keeps
//! what gdbstub learnt; the per-packet decisions behind [`Front::classify`] are in
//! `packets`, with the RSP manual section each one follows ("Overview", "Packet
//! Acknowledgment", "Standard Replies", and each packet's own section); `parse` holds the
//! argument parsers.
//!
//! Nothing here allocates per packet: the packet body and the scratch buffer for rewritten
//! packets are allocated once per session, bounded by [`PACKET_SIZE`].

mod packets;
pub(super) mod parse;

use super::target::PACKET_BUFFER;
use parse::hex_digit;
use std::fmt::Write as _;

/// The PacketSize we advertise in qSupported (gdbstub advertises its packet buffer's size).
/// gdb counts it as the whole packet, `$`, body, `#` and checksum, when it builds one; the
/// replies the front bounds (`m`, `qXfer`) never exceed it either, framed.
pub const PACKET_SIZE: usize = PACKET_BUFFER;

/// The longest reply body that, framed, fits [`PACKET_SIZE`].
pub const MAX_REPLY_BODY: usize = PACKET_SIZE - 4;

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
    /// `?`: answer it with the stop reply for the machine's current stop.
    Status,
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

    /// Whether the client negotiated multiprocess thread-ids (`p<pid>.<tid>`).
    pub fn multiprocess(&self) -> bool {
        self.multiprocess
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
        // The per-thread forms gdb sends with several vCPUs pass as they are: a step alone
        // (scheduler locking), a step with the others continuing, two threads only.
        assert_eq!(verdict(&mut f, "vCont;s:2", 3).0, Forward);
        assert_eq!(verdict(&mut f, "vCont;s:2;c", 3).0, Forward);
        assert_eq!(verdict(&mut f, "vCont;c:1;c:3", 3).0, Forward);
        assert_eq!(verdict(&mut f, "vCont;c:-1", 3).0, Forward);
        // Thread 0 (any thread) is every thread here; gdbstub would refuse it.
        assert_eq!(verdict(&mut f, "vCont;c:0", 3), (Rewrite, "vCont;c".into()));
        assert_eq!(
            verdict(&mut f, "vCont;s:2;c:0", 3),
            (Rewrite, "vCont;c:1;s:2;c:3".into())
        );
        assert_eq!(
            verdict(&mut f, "vCont;s:0", 2),
            (Rewrite, "vCont;s:1;s:2".into())
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
            (Rewrite, format!("m101020,{:x}", MAX_REPLY_BODY / 2))
        );
        assert_eq!(verdict(&mut f, "G00112233", 1).0, Forward);
        assert_eq!(verdict(&mut f, "G0011", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "X100,2:}]a", 1).0, Forward);
        assert_eq!(verdict(&mut f, "X100,2:a}", 1).0, Reply(E_INVAL));
        assert_eq!(verdict(&mut f, "qqemu.sstep", 1).0, Qemu);
        assert_eq!(verdict(&mut f, "?", 1).0, Status);
        assert_eq!(verdict(&mut f, "?1", 1).0, Reply(E_INVAL));
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
