//! The oracles: the stub answers, the scratch reads back as written, the code reads back
//! as the image has it, the registers are sane and stable, a breakpoint still hits.

use super::encode::hex;
use super::{DEBUG_REGS, Fault, Fuzzer, Step, wrong};
use crate::fuzz::target::{MARKER_LEN, SCRATCH, SCRATCH_LEN};
use crate::fuzz::wire::WireError;
use crate::rsp::{Stop, decode_hex, parse_stop};

/// CR0.PE and CR0.PG (SDM Vol. 3A, 2.5).
const CR0_PE_PG: u64 = 1 | 1 << 31;
/// EFER.LMA (SDM Vol. 3A, 2.2.1).
const EFER_LMA: u64 = 1 << 10;
/// The demo's 64-bit code selector (README "Boot formats": CS = 0x10).
const DEMO_CS: u64 = 0x10;

impl Fuzzer<'_> {
    /// The periodic check.
    pub(super) fn checkpoint(&mut self) -> Step {
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
    pub(super) fn expect_stop_query(&mut self) -> Step {
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
    pub(super) fn check_scratch_range(&mut self, off: usize, len: usize) -> Step {
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
    pub(super) fn check_code(&mut self, addr: u64, len: usize) -> Step {
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
    pub(super) fn check_registers(&mut self, what: &'static str) -> Step<Vec<u8>> {
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
}
