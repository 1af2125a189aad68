//! Junk on the wire (bad checksums, stray bytes, NAKs, Ctrl-C while stopped, mutated
//! corpus packets, oversized packets), each followed by the sync sentinel that finds the
//! stream's end again and checks what came before it.

use super::encode::hex;
use super::{Fault, Fuzzer, REPLY_TIMEOUT, Step, TID};
use crate::fuzz::target::{MARKER_LEN, SCRATCH};
use crate::fuzz::vm::Vm;
use crate::fuzz::wire::{Event, WireError, frame};
use crate::fuzz::{corpus, escape};
use std::time::Duration;

/// How long the sentinel waits before it is sent again (an earlier junk byte may have
/// swallowed it).
const SENTINEL_RETRY: Duration = Duration::from_secs(2);
/// A client-controlled buffer that grows by more than this is unbounded.
const RSS_SLACK_KIB: u64 = 4 * 1024;
/// The unterminated packet that checks it (RSP data bytes).
const HUGE_PACKET: usize = 16 << 20;

impl Fuzzer<'_> {
    /// Junk, then the sentinel.
    pub(super) fn act_junk(&mut self) -> Step {
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
    pub(super) fn act_huge(&mut self) -> Step {
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
