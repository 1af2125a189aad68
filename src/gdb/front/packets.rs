//! Per-packet validation and rewriting: the verdicts of [`Front::classify`], one per
//! packet gdbstub dispatches on, each following the RSP manual section cited on it.

use super::parse::{
    Id, PID, ThreadId, binary_len, hex_digit, is_hex_bytes, is_hex_bytes_or_empty, parse_hex,
    parse_thread, split_once,
};
use super::{Ctx, E_INVAL, E_SRCH, Fact, Front, MAX_REPLY_BODY, PACKET_SIZE, Verdict, push_fmt};

impl Front {
    pub(super) fn decide(&mut self, p: &[u8], ctx: &Ctx) -> Verdict {
        use Verdict::*;
        let Some(&first) = p.first() else {
            return Forward; // gdbstub: unknown packet, empty reply
        };
        let rest = &p[1..];
        // The prefixes and their order are those gdbstub dispatches on for this target.
        match first {
            // `?` ("Packets"): the reason the target halted, which gdbstub does not know
            // (it answers a made-up `T05`); the session answers it from the real stop. In
            // all-stop mode there is none while the guest runs.
            b'?' if ctx.running => Reply(E_INVAL),
            b'?' => match rest {
                [] => Status,
                _ => Reply(E_INVAL),
            },
            b'g' | b'k' => empty_or_inval(rest),
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
        // The reply: `$`, `m`/`l`, the data escaped (at most twice its length), `#xx`.
        let max = ((PACKET_SIZE - 5) / 2) as u64;
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
        // The whole framed reply fits PacketSize: `$`, two hex digits a byte, `#xx`.
        let max = (MAX_REPLY_BODY / 2) as u64;
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
                    // gdbstub refuses a thread-less step, and thread 0 ("any") anywhere.
                    if step || tid == Id::Any {
                        as_is = false;
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
