//! Queries and thread packets: the read-only packets gdb sends, each with the reply it
//! must get, monitor commands, and thread selection (good, doubtful and bad ids).

use super::encode::hex;
use super::{Fuzzer, Step, TID, is_error, packet_size, wrong};
use crate::fuzz::corpus;
use crate::rsp::{Stop, parse_stop};

impl Fuzzer<'_> {
    pub(super) fn act_queries(&mut self) -> Step {
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

    pub(super) fn act_threads(&mut self) -> Step {
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
}
