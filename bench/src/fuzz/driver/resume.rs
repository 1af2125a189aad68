//! Breakpoints and resumes: Z/z of every kind, continue (to a breakpoint or until a
//! Ctrl-C) and single step, and the checks on the stop each ends in.

use super::{DEBUG_REGS, Fault, Fuzzer, REPLY_TIMEOUT, Step, is_error, wrong};
use crate::fuzz::escape;
use crate::fuzz::target::{MARKER_LEN, SCRATCH, SCRATCH_LEN};
use crate::fuzz::wire::{WireError, frame};
use crate::rsp::{Stop, parse_stop};
use std::time::{Duration, Instant};

/// How long a continue with a breakpoint on the demo's hot path may take to hit it.
const HIT_TIMEOUT: Duration = Duration::from_secs(3);
/// gdb's signal numbers for the stops the fuzzer causes: SIGINT, SIGTRAP.
const SIGINT: u8 = 2;
const SIGTRAP: u8 = 5;

impl Fuzzer<'_> {
    /// Classifies a stop reply: Ok(signal) for a stop the fuzzer can cause.
    fn stop_signal(&mut self, req: &[u8], r: &[u8]) -> Step<u8> {
        match parse_stop(r) {
            Ok(Some(Stop::Signal(s, _))) if s == SIGINT || s == SIGTRAP => Ok(s),
            Ok(Some(Stop::Signal(s, p))) => Err(Fault::Death(format!(
                "stop with signal {s} ({p}) after {}",
                escape(req)
            ))),
            Ok(Some(stop)) => Err(Fault::Death(format!("{stop} after {}", escape(req)))),
            _ => Err(wrong(req, r, "a resume must end in a stop reply")),
        }
    }

    /// Waits for the stop after a resume (console output skipped).
    fn wait_stop(&mut self, req: &[u8], timeout: Duration) -> Step<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.reply_within(left)?;
            if parse_stop(&r).is_ok_and(|s| s.is_none()) {
                continue;
            }
            let s = self.stop_signal(req, &r)?;
            return Ok((s, r));
        }
    }

    /// A continue. With a breakpoint set, it must hit one; without, the guest must run
    /// until the fuzzer's Ctrl-C. `with_interrupt` sends the 0x03 in the same write.
    pub(super) fn resume_continue(&mut self, req: &[u8], with_interrupt: bool) -> Step {
        let before = self.read_counter()?;
        self.model().last_g = None;
        let bps = self.model().any_breakpoint();
        if with_interrupt {
            let mut bytes = frame(req);
            bytes.push(0x03);
            self.send_raw(&bytes)?;
            self.out.packets += 1;
            let (s, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
            if s == SIGTRAP && !bps {
                return Err(wrong(req, &r, "SIGTRAP with no breakpoint set"));
            }
            self.model().tick_stop_counter = None;
            self.check_registers("registers after continue+Ctrl-C in one write")?;
            return Ok(());
        }
        self.send(req)?;
        if bps {
            match self.wait_stop(req, HIT_TIMEOUT) {
                Ok((s, r)) => {
                    if s != SIGTRAP {
                        return Err(wrong(req, &r, "a breakpoint stop must be SIGTRAP"));
                    }
                    return self.after_breakpoint_stop(req, &r, before);
                }
                Err(Fault::Wire(WireError::Timeout(_))) => {
                    self.send_raw(&[0x03])?;
                    let (_, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
                    return Err(wrong(
                        req,
                        &r,
                        "a breakpoint on the demo's hot path never hit",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        // Nothing may stop the guest before the interrupt.
        let run_for = Duration::from_millis(2 + self.rng.below(20));
        if !self.conn().wire.quiet_for(run_for)? {
            let r = self.reply()?;
            return Err(wrong(req, &r, "the guest stopped before the interrupt"));
        }
        self.send_raw(&[0x03])?;
        let (s, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
        if s != SIGINT {
            return Err(wrong(req, &r, "an interrupt must stop with SIGINT"));
        }
        self.model().tick_stop_counter = None;
        if self.rng.chance(50) {
            self.check_registers("registers after an interrupt")?;
        }
        Ok(())
    }

    /// At a breakpoint stop: rip is a breakpoint, and two consecutive stops at `tick` are
    /// one `counter++` apart (the instruction under the breakpoint ran in between).
    fn after_breakpoint_stop(&mut self, req: &[u8], r: &[u8], before: u64) -> Step {
        let g = self.check_registers("registers at a breakpoint")?;
        let layout = self.layout.clone().expect("layout");
        let rip = layout
            .get("rip")
            .ok()
            .and_then(|s| layout.value(&g, s))
            .unwrap_or(0);
        let m = self.model();
        if !m.sw.contains(&rip) && !m.hw.contains(&rip) {
            return Err(wrong(
                req,
                r,
                &format!("stopped at {rip:#x}, which has no breakpoint"),
            ));
        }
        let prev_tick = m.tick_stop_counter.take();
        if rip == self.demo.tick {
            let now = self.read_counter()?;
            if let Some(prev) = prev_tick {
                if now != prev + 1 {
                    return Err(Fault::Wrong(format!(
                        "two stops at tick {} counter increments apart (before the resume: {before}), not 1: the breakpoint was re-reported",
                        now.wrapping_sub(prev)
                    )));
                }
            }
            self.model().tick_stop_counter = Some(now);
        }
        Ok(())
    }

    fn read_counter(&mut self) -> Step<u64> {
        let addr = self.demo.counter;
        match self.read_mem(addr, 8)? {
            Some(b) if b.len() == 8 => Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
            _ => Err(Fault::Wrong(format!("m{addr:x},8 of `counter` failed"))),
        }
    }

    /// A single step: one SIGTRAP stop, registers sane.
    fn resume_step(&mut self, req: &[u8]) -> Step {
        self.model().last_g = None;
        self.model().tick_stop_counter = None;
        self.send(req)?;
        let (s, r) = self.wait_stop(req, REPLY_TIMEOUT)?;
        if s != SIGTRAP {
            return Err(wrong(req, &r, "a step must stop with SIGTRAP"));
        }
        if self.rng.chance(60) {
            self.check_registers("registers after a step")?;
        }
        Ok(())
    }

    pub(super) fn act_breakpoints(&mut self) -> Step {
        let hot = *self.rng.pick(&self.demo.hot);
        match self.rng.below(4) {
            0 => {
                self.begin("Z0 on the hot path");
                let req = format!("Z0,{hot:x},1");
                self.expect_ok(req.as_bytes())?;
                self.model().sw.insert(hot);
                self.check_code(hot, 1)
            }
            1 => {
                self.begin("z removes a breakpoint");
                let (kind, addr) = {
                    let m = self.model();
                    match (m.sw.iter().next(), m.hw.iter().next()) {
                        (Some(&a), _) => (0, a),
                        (None, Some(&a)) => (1, a),
                        _ => return Ok(()),
                    }
                };
                let req = format!("z{kind},{addr:x},1");
                self.expect_ok(req.as_bytes())?;
                // z0 and z1 remove only their own kind: a hardware breakpoint at the same
                // address stays.
                let m = self.model();
                if kind == 0 {
                    m.sw.remove(&addr);
                } else {
                    m.hw.remove(&addr);
                }
                Ok(())
            }
            2 => {
                self.begin("Z1 on the hot path");
                let free = self.model().hw_used() < DEBUG_REGS;
                let req = format!("Z1,{hot:x},1");
                let r = self.request(req.as_bytes())?;
                if r == b"OK" {
                    self.model().hw.insert(hot);
                } else if free || !is_error(&r) {
                    return Err(wrong(
                        req.as_bytes(),
                        &r,
                        "a free debug register: must be OK",
                    ));
                }
                Ok(())
            }
            _ => {
                // A watchpoint on scratch the guest never touches: set, then maybe removed.
                self.begin("watchpoint on scratch");
                let kind = 2 + self.rng.below(3) as u8;
                let len = 1u64 << self.rng.below(4);
                let off = (self.rng.index(SCRATCH_LEN - MARKER_LEN) as u64) & !(len - 1);
                let addr = SCRATCH + MARKER_LEN as u64 + off;
                let free = self.model().hw_used() < DEBUG_REGS;
                let req = format!("Z{kind},{addr:x},{len:x}");
                let r = self.request(req.as_bytes())?;
                if r == b"OK" {
                    self.model().watch.insert((kind, addr, len));
                } else if free || !is_error(&r) {
                    return Err(wrong(
                        req.as_bytes(),
                        &r,
                        "a free debug register: must be OK",
                    ));
                }
                if self.rng.chance(50) {
                    if let Some(&(k, a, l)) = self.model().watch.iter().next() {
                        let req = format!("z{k},{a:x},{l:x}");
                        self.expect_ok(req.as_bytes())?;
                        self.model().watch.remove(&(k, a, l));
                    }
                }
                Ok(())
            }
        }
    }

    pub(super) fn act_resume(&mut self) -> Step {
        if self.rng.chance(45) {
            self.begin("step");
            let req = *self.rng.pick(&[
                "s",
                "vCont;s:1",
                "vCont;s:p1.1",
                "vCont;s:p1.1;c:p1.-1",
                "vCont;s",
                "vCont;s:-1",
                "vCont;s:p1.-1",
            ]);
            if req == "vCont;s" || req.ends_with("-1") {
                self.label = "vCont;s for all threads";
            }
            return self.resume_step(req.as_bytes());
        }
        self.begin("continue");
        let req = *self
            .rng
            .pick(&["c", "vCont;c", "vCont;c:p1.-1", "vCont;c:1"]);
        let together = self.rng.chance(20);
        if together {
            self.label = "continue and Ctrl-C in one write";
        }
        self.resume_continue(req.as_bytes(), together)
    }
}
