//! The stopped guest's state: scratch memory reads and writes, and register reads and
//! writes (`p`, `P`, `g`, `G`), each checked against the model.

use super::encode::hex;
use super::{Fault, Fuzzer, Step, is_error, wrong};
use crate::fuzz::target::{MARKER_LEN, SCRATCH_LEN};
use crate::rsp::decode_hex;

impl Fuzzer<'_> {
    pub(super) fn act_memory(&mut self) -> Step {
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

    pub(super) fn act_registers(&mut self) -> Step {
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

    pub(super) fn read_reg(&mut self, num: usize) -> Step<u64> {
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

    pub(super) fn write_reg(&mut self, num: usize, v: u64) -> Step {
        let req = format!("P{num:x}={}", hex(&v.to_le_bytes()));
        self.expect_ok(req.as_bytes())
    }
}
