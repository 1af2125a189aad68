//! Sessions: the opening gdb sends (qSupported, no-ack mode, thread selection, the target
//! description), the marker and scratch the model starts from, and the ways a session or
//! the VM ends (`D`, a close, `k`).

use super::encode::{HexSink, escape_binary, unescape_binary};
use super::{Conn, Fault, Fuzzer, Step, TID, packet_size, wrong};
use crate::fuzz::target::{Layout, MARKER_LEN, SCRATCH, SCRATCH_LEN};
use crate::fuzz::wire::{Wire, WireError, frame};
use std::fmt::Write as _;
use std::time::Duration;

impl Fuzzer<'_> {
    pub(super) fn open_session(&mut self) -> Step {
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

    pub(super) fn no_ack_mode(&mut self) -> Step {
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
    pub(super) fn write_scratch(&mut self, off: usize, data: &[u8]) -> Step {
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

    /// Ends the session the way gdb does (`D`), by closing (gdb killed), or mid-packet.
    pub(super) fn act_session_end(&mut self) -> Step {
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
    pub(super) fn act_kill(&mut self) -> Step {
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
