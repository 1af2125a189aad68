//! Well-framed packets with bad arguments: each gets an error or the empty reply and has
//! no effect (no write lands, no register changes, nothing resumes).

use super::encode::hex;
use super::{Fault, Fuzzer, Step, is_error, wrong};
use crate::fuzz::target::{MARKER_LEN, SCRATCH};
use crate::fuzz::wire::WireError;
use std::time::Duration;

/// How long a packet that must not resume may stay unanswered before the fuzzer asks (with
/// a Ctrl-C) whether the guest runs: a stub answers such packets at once.
const NO_RESUME_WAIT: Duration = Duration::from_secs(1);

impl Fuzzer<'_> {
    /// Well-framed packets with bad arguments: one reply, an error or empty; no effect.
    pub(super) fn act_malformed(&mut self) -> Step {
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
}
