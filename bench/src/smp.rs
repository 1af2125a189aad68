//! The SMP figures (`--smp`, issue 10): stop-all and resume-all latency with N vCPUs,
//! kvmgdb against `qemu-system-x86_64 -enable-kvm -smp N`, on the SMP guest
//! (`guests/smp.c`, booted by both through the same Multiboot image, [`crate::smp_image`]).
//!
//! Every CPU of the guest increments its own `per_cpu_counter[cpu]` for ever. While the
//! guest runs, the benchmark reads those counters straight from the stub's guest RAM
//! ([`crate::guestmem`]) every [`SmpCounts::poll`]; in all-stop mode neither stub answers
//! packets then. So for both stubs alike:
//!
//! * **Ctrl-C → stop reply**: the time from writing 0x03 to the stop reply, all N vCPUs
//!   running (each counter has moved since the resume).
//! * **breakpoint → stop reply**: a hardware breakpoint (`Z1`) on `turn_work`, which no
//!   CPU calls while the benchmark holds `cpus_started` away from `cpus_listed` (the
//!   guest's own gate on taking turns). With every vCPU running, the benchmark opens the
//!   gate by writing guest RAM; the CPU whose turn it is calls `turn_work` within a few
//!   instructions of its next counter increment. The figure is the time from the last
//!   sample in which that CPU's counter moved (the hit follows within one poll interval)
//!   to the stop reply: the stop-all and the reply, not the trigger. The same samples show
//!   when the last counter of any CPU moved, i.e. when the stub had every vCPU stopped.
//! * **resume-all**: from sending `vCont;c` at a Ctrl-C stop to the first sample in which
//!   every CPU's counter has moved: the last vCPU running guest code again.
//!
//! Every stop is checked: the reply's signal and thread, and no counter may move after the
//! stop reply (read twice, 2 ms apart, and once more with `m`).

use crate::guest::{elf_symbols, elf64_code_segments};
use crate::guestmem::GuestRam;
use crate::measure::{
    self, BenchError, CONTINUE, Ctx, Outcome, SIGINT, SIGTRAP, T_CONNECT, T_REPLY, median,
};
use crate::report::json_str;
use crate::rsp::{Client, Stop};
use crate::stub::{GUEST_MEMORY_MIB, Kind, Stub, StubSpec};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The SMP guest's addresses.
pub struct SmpGuest {
    /// The Multiboot image both stubs boot.
    pub image: PathBuf,
    /// `per_cpu_counter`, `u64` per CPU.
    counters: u64,
    cpus_listed: u64,
    cpus_started: u64,
    turn: u64,
    turn_work: u64,
    /// The first bytes of `turn_work` in the ELF: what `m` and guest RAM must show there.
    code: Vec<u8>,
}

impl SmpGuest {
    /// Reads `elf`'s symbols and code and writes its Multiboot image.
    pub fn load(elf: &Path) -> Result<SmpGuest, BenchError> {
        let data = std::fs::read(elf)
            .map_err(|e| BenchError::Setup(format!("cannot read {}: {e}", elf.display())))?;
        let bad = |m: &str| BenchError::Setup(format!("{}: {m}", elf.display()));
        let syms = elf_symbols(&data).map_err(bad)?;
        let get = |name: &str| {
            syms.get(name)
                .copied()
                .ok_or_else(|| bad(&format!("no symbol {name}")))
        };
        let turn_work = get("turn_work")?;
        let code = elf64_code_segments(&data)
            .map_err(bad)?
            .into_iter()
            .find_map(|(at, bytes)| {
                let off = usize::try_from(turn_work.checked_sub(at)?).ok()?;
                bytes.get(off..off + 32).map(<[u8]>::to_vec)
            })
            .ok_or_else(|| bad("turn_work is not in a code segment"))?;
        Ok(SmpGuest {
            image: crate::smp_image::write(elf)?,
            counters: get("per_cpu_counter")?,
            cpus_listed: get("cpus_listed")?,
            cpus_started: get("cpus_started")?,
            turn: get("turn")?,
            turn_work,
            code,
        })
    }
}

impl Drop for SmpGuest {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.image);
    }
}

/// How much the SMP part does.
#[derive(Clone, Debug)]
pub struct SmpCounts {
    /// The vCPU counts, each its own launch of each stub.
    pub cpus: Vec<usize>,
    /// Ctrl-C cycles (each also gives a resume-all sample) per launch.
    pub ctrl_c: u32,
    /// Breakpoint cycles per launch.
    pub bp: u32,
    /// How often guest RAM is sampled while the guest runs.
    pub poll: Duration,
}

impl SmpCounts {
    /// The timing run.
    pub fn full(cpus: Vec<usize>) -> SmpCounts {
        SmpCounts {
            cpus,
            ctrl_c: 10,
            bp: 10,
            poll: Duration::from_micros(20),
        }
    }

    /// `--smoke`: every path once or twice.
    pub fn smoke(cpus: Vec<usize>) -> SmpCounts {
        SmpCounts {
            ctrl_c: 2,
            bp: 2,
            ..SmpCounts::full(cpus)
        }
    }
}

/// One SMP row (per vCPU count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SmpFig {
    /// Ctrl-C → stop reply.
    CtrlC,
    /// Breakpoint hit → stop reply.
    Breakpoint,
    /// Breakpoint hit → the last sample in which any CPU's counter moved.
    BpLastMoved,
    /// `vCont;c` → every vCPU running.
    Resume,
    /// Launch → every CPU counting (firmware, boot and the APs' INIT-SIPI-SIPI).
    Boot,
}

impl SmpFig {
    /// Every row kind, in table order.
    pub const ALL: [SmpFig; 5] = [
        SmpFig::CtrlC,
        SmpFig::Breakpoint,
        SmpFig::BpLastMoved,
        SmpFig::Resume,
        SmpFig::Boot,
    ];

    /// The key in the JSON samples.
    pub fn key(self) -> &'static str {
        match self {
            SmpFig::CtrlC => "smp_ctrl_c_to_stop_us",
            SmpFig::Breakpoint => "smp_breakpoint_to_stop_us",
            SmpFig::BpLastMoved => "smp_breakpoint_to_last_cpu_moved_us",
            SmpFig::Resume => "smp_resume_all_us",
            SmpFig::Boot => "smp_launch_to_all_counting_s",
        }
    }

    /// The row label for `n` vCPUs.
    pub fn label(self, n: usize) -> String {
        let cpus = if n == 1 {
            "1 vCPU".to_string()
        } else {
            format!("{n} vCPUs")
        };
        match self {
            SmpFig::CtrlC => format!("Ctrl-C → stop reply, {cpus} (µs)"),
            SmpFig::Breakpoint => format!("hw breakpoint hit → stop reply, {cpus} (µs)"),
            SmpFig::BpLastMoved => {
                format!("… hit → the last guest instruction of any vCPU, {cpus} (µs)³")
            }
            SmpFig::Resume => format!("resume-all: `vCont;c` → every vCPU running, {cpus} (µs)"),
            SmpFig::Boot => format!("launch → every CPU counting, {cpus} (s)¹"),
        }
    }
}

/// The one-thread timer slack the sampling loop runs with, in ns (prctl(2)
/// PR_SET_TIMERSLACK): its sub-millisecond ppoll waits would otherwise end up to 50 µs late.
const SAMPLING_SLACK_NS: libc::c_ulong = 1;
/// How long every CPU gets to run again after a resume, or to hit the breakpoint.
const T_RUN: Duration = Duration::from_secs(10);
/// The gap between the two reads that show the counters stopped.
const STILL: Duration = Duration::from_millis(2);
/// How long the APs may take to start: 63 of them under an emulating KVM, on 2 cores, take
/// 15–30 s.
const T_BOOT: Duration = Duration::from_secs(300);
/// The bit the benchmark sets in `cpus_started` to close the guest's turn-taking gate.
const GATE_CLOSED: u32 = 0x8000_0000;

/// The calling thread's timer slack, in ns.
fn timer_slack() -> libc::c_ulong {
    // SAFETY: PR_GET_TIMERSLACK takes no further arguments and only returns a value.
    let r = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    r.max(1) as libc::c_ulong
}

/// Sets the calling thread's timer slack; children inherit it, so it is set back before
/// each stub is started.
fn set_timer_slack(ns: libc::c_ulong) {
    // SAFETY: PR_SET_TIMERSLACK takes the value as its only argument and changes nothing
    // but this thread's timer slack; failure leaves it unchanged, which only costs precision.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) };
}

/// A connection to a stub running the SMP guest with `n` vCPUs.
struct SmpSession<'g> {
    c: Client,
    g: &'g SmpGuest,
    n: usize,
    poll: Duration,
    ram: Option<GuestRam>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl<'g> SmpSession<'g> {
    fn open(
        stub: &mut Stub,
        g: &'g SmpGuest,
        n: usize,
        poll: Duration,
    ) -> Result<Self, BenchError> {
        let stream = stub.connect(T_CONNECT)?;
        let mut c = Client::new(stream, T_REPLY).ctx("connecting")?;
        c.handshake(true).ctx("qSupported/QStartNoAckMode")?;
        let stop = c.resume(b"?").ctx("asking ?")?;
        if stop.signal().is_none() {
            return Err(BenchError::Verify(format!("`?` answered {stop}")));
        }
        Ok(SmpSession {
            c,
            g,
            n,
            poll,
            ram: None,
            buf: vec![0; 8 * n],
            scratch: Vec::new(),
        })
    }

    /// `len` bytes at `addr` through the stub (`m`).
    fn m_read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, BenchError> {
        let mut out = Vec::with_capacity(len);
        self.c
            .read_memory(addr, len, &mut self.scratch, &mut out)
            .ctx("reading memory (m)")?;
        Ok(out)
    }

    fn m_u32(&mut self, addr: u64) -> Result<u32, BenchError> {
        let b = self.m_read(addr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Writes a `u32` through the stub (`M`).
    fn m_write_u32(&mut self, addr: u64, v: u32) -> Result<(), BenchError> {
        let hex: String = v.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
        self.c
            .expect_ok(format!("M{addr:x},4:{hex}").as_bytes())
            .ctx("writing memory (M)")
    }

    fn ram(&self) -> &GuestRam {
        self.ram
            .as_ref()
            .expect("guest RAM is found before the guest is sampled")
    }

    /// Every CPU's counter, read from guest RAM.
    fn sample(&mut self, out: &mut Vec<u64>) -> Result<(), BenchError> {
        let ram = self
            .ram
            .as_ref()
            .expect("guest RAM is found before sampling");
        ram.read(self.g.counters, &mut self.buf)?;
        out.clear();
        out.extend(
            self.buf
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
        );
        Ok(())
    }

    fn expect(stop: &Stop, sig: u8, what: &str) -> Result<(), BenchError> {
        if stop.signal() != Some(sig) {
            return Err(BenchError::Verify(format!(
                "{what}: stopped with {stop}, expected signal {sig}"
            )));
        }
        Ok(())
    }

    /// Runs the guest until every CPU counts; returns when that was seen.
    fn boot(&mut self, stub: &mut Stub) -> Result<Instant, BenchError> {
        let step = Duration::from_millis(if self.n > 8 { 1000 } else { 200 });
        loop {
            self.c.send(CONTINUE).ctx("continuing")?;
            std::thread::sleep(step);
            self.c.interrupt().ctx("interrupting")?;
            let stop = self
                .c
                .wait_stop()
                .ctx("waiting for the stop after Ctrl-C")?;
            Self::expect(&stop, SIGINT, "Ctrl-C during the boot")?;
            let listed = self.m_u32(self.g.cpus_listed)?;
            let started = self.m_u32(self.g.cpus_started)?;
            if listed != 0 && listed as usize != self.n {
                return Err(BenchError::Verify(format!(
                    "the guest found {listed} CPUs in the MADT, not {}",
                    self.n
                )));
            }
            if listed as usize == self.n && started == listed {
                return Ok(Instant::now());
            }
            if stub.spawned_at.elapsed() > T_BOOT || !stub.is_running() {
                return Err(BenchError::Verify(format!(
                    "only {started} of {} CPUs counted {:?} after launch",
                    self.n,
                    stub.spawned_at.elapsed()
                )));
            }
        }
    }

    /// Finds the guest RAM mapping by what `m` returns, and checks `m` against the ELF.
    fn find_ram(&mut self, pid: u32) -> Result<(), BenchError> {
        let code = self.m_read(self.g.turn_work, self.g.code.len())?;
        if code != self.g.code {
            return Err(BenchError::Verify(
                "`m` at turn_work does not return the ELF's code".into(),
            ));
        }
        let counters = self.m_read(self.g.counters, 8 * self.n)?;
        let started = self.m_read(self.g.cpus_started, 4)?;
        let probes = [
            (self.g.turn_work, code),
            (self.g.counters, counters),
            (self.g.cpus_started, started),
        ];
        self.ram = Some(GuestRam::find(
            pid,
            u64::from(GUEST_MEMORY_MIB) << 20,
            &probes,
        )?);
        Ok(())
    }

    /// After a stop reply: no counter moves any more, and guest RAM agrees with `m`.
    fn check_stopped(&mut self, what: &str) -> Result<(), BenchError> {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        self.sample(&mut a)?;
        std::thread::sleep(STILL);
        self.sample(&mut b)?;
        let m = self.m_read(self.g.counters, 8 * self.n)?;
        if let Some(cpu) = (0..self.n).find(|&i| a[i] != b[i]) {
            return Err(BenchError::Verify(format!(
                "{what}: CPU {cpu}'s counter moved from {} to {} after the stop reply",
                a[cpu], b[cpu]
            )));
        }
        if m != self.buf {
            return Err(BenchError::Verify(format!(
                "{what}: `m` of the counters differs from guest RAM at a stop"
            )));
        }
        Ok(())
    }

    /// Samples until every counter differs from `before`; returns µs since `t0`.
    fn wait_all_running(&mut self, before: &[u64], t0: Instant) -> Result<f64, BenchError> {
        let mut moved = vec![false; self.n];
        let mut left = self.n;
        let mut cur = Vec::with_capacity(self.n);
        loop {
            self.sample(&mut cur)?;
            let t = Instant::now();
            for (i, m) in moved.iter_mut().enumerate() {
                if !*m && cur[i] != before[i] {
                    *m = true;
                    left -= 1;
                }
            }
            if left == 0 {
                return Ok(t.duration_since(t0).as_secs_f64() * 1e6);
            }
            if t.duration_since(t0) > T_RUN {
                let idle: Vec<usize> = (0..self.n).filter(|&i| !moved[i]).collect();
                return Err(BenchError::Verify(format!(
                    "CPUs {idle:?} did not run within {T_RUN:?} of the resume"
                )));
            }
            if self.c.wait_readable(self.poll).ctx("polling the socket")? {
                let p = self.c.recv().ctx("reading an unexpected packet")?;
                return Err(BenchError::Verify(format!(
                    "the stub sent {:?} while the guest should run",
                    String::from_utf8_lossy(&p)
                )));
            }
        }
    }

    /// One Ctrl-C cycle from a stop: resume, wait for every CPU, run a little, Ctrl-C.
    /// Returns (resume-all µs, Ctrl-C → stop µs).
    fn ctrl_c_cycle(&mut self, k: u32) -> Result<(f64, f64), BenchError> {
        let mut before = Vec::new();
        self.sample(&mut before)?;
        let t0 = Instant::now();
        self.c.send(CONTINUE).ctx("continuing")?;
        let resume = self.wait_all_running(&before, t0)?;
        // Vary the phase so that the interrupt lands at different points of the run.
        std::thread::sleep(Duration::from_micros(3000 + u64::from(k * 733 % 5000)));
        let t1 = Instant::now();
        self.c.interrupt().ctx("interrupting")?;
        let stop = self
            .c
            .wait_stop()
            .ctx("waiting for the stop after Ctrl-C")?;
        let ctrl_c = t1.elapsed().as_secs_f64() * 1e6;
        Self::expect(&stop, SIGINT, "Ctrl-C")?;
        self.check_stopped("Ctrl-C")?;
        Ok((resume, ctrl_c))
    }

    /// Closes the turn-taking gate and arms the hardware breakpoint on `turn_work`.
    fn arm(&mut self) -> Result<(), BenchError> {
        self.m_write_u32(self.g.cpus_started, self.n as u32 | GATE_CLOSED)?;
        // A CPU may have stopped between the gate's test and its call of turn_work. Let
        // every CPU count once more first (so any such call is over, and no later test
        // passes), then stop them and arm the breakpoint.
        let mut before = Vec::new();
        self.sample(&mut before)?;
        self.c.send(CONTINUE).ctx("continuing")?;
        self.wait_all_running(&before, Instant::now())?;
        self.c.interrupt().ctx("interrupting")?;
        let stop = self
            .c
            .wait_stop()
            .ctx("waiting for the stop after Ctrl-C")?;
        Self::expect(&stop, SIGINT, "Ctrl-C with the gate closed")?;
        self.check_stopped("Ctrl-C with the gate closed")?;
        self.c
            .expect_ok(format!("Z1,{:x},1", self.g.turn_work).as_bytes())
            .ctx("inserting Z1 at turn_work")
    }

    /// One breakpoint cycle from a stop with the gate closed and the breakpoint armed.
    /// Returns (breakpoint → stop reply, breakpoint → the last sample in which any counter
    /// moved), in µs.
    fn bp_cycle(&mut self, k: u32) -> Result<(f64, f64), BenchError> {
        let mut prev = Vec::new();
        self.sample(&mut prev)?;
        self.c.send(CONTINUE).ctx("continuing")?;
        self.wait_all_running(&prev, Instant::now())?;
        std::thread::sleep(Duration::from_micros(3000 + u64::from(k * 733 % 5000)));
        let mut turn = [0u8; 4];
        self.ram().read(self.g.turn, &mut turn)?;
        let cpu = u32::from_le_bytes(turn) as usize;
        if cpu >= self.n {
            return Err(BenchError::Verify(format!(
                "the guest's turn is CPU {cpu} of {}",
                self.n
            )));
        }
        self.sample(&mut prev)?;
        let mut cur = Vec::with_capacity(self.n);
        let trigger = Instant::now();
        self.ram()
            .write(self.g.cpus_started, &(self.n as u32).to_le_bytes())?;
        let (mut hit, mut last_moved) = (trigger, trigger);
        let reply = loop {
            if self.c.wait_readable(self.poll).ctx("polling the socket")? {
                break Instant::now();
            }
            self.sample(&mut cur)?;
            let t = Instant::now();
            if cur[cpu] != prev[cpu] {
                hit = t;
            }
            if cur != prev {
                last_moved = t;
                prev.clone_from(&cur);
            }
            if t.duration_since(trigger) > T_RUN {
                return Err(BenchError::Verify(format!(
                    "CPU {cpu} did not hit the breakpoint on turn_work within {T_RUN:?}"
                )));
            }
        };
        let stop = self.c.wait_stop().ctx("waiting for the breakpoint stop")?;
        Self::expect(&stop, SIGTRAP, "breakpoint on turn_work")?;
        if stop.thread() != Some(cpu as u64 + 1) {
            return Err(BenchError::Verify(format!(
                "the breakpoint on turn_work, CPU {cpu}'s turn, was reported as {stop}"
            )));
        }
        self.check_stopped("breakpoint")?;
        // Off the breakpoint as gdb does: gate closed, breakpoint out, step that thread
        // alone, breakpoint back in.
        self.m_write_u32(self.g.cpus_started, self.n as u32 | GATE_CLOSED)?;
        let z = format!("z1,{:x},1", self.g.turn_work);
        self.c.expect_ok(z.as_bytes()).ctx("removing Z1")?;
        let step = format!("vCont;s:p1.{:x}", cpu + 1);
        let stepped = self
            .c
            .resume(step.as_bytes())
            .ctx("stepping off turn_work")?;
        Self::expect(&stepped, SIGTRAP, "step off turn_work")?;
        self.c
            .expect_ok(format!("Z1,{:x},1", self.g.turn_work).as_bytes())
            .ctx("inserting Z1 at turn_work")?;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        Ok((
            us(reply.duration_since(hit)),
            us(last_moved.saturating_duration_since(hit)),
        ))
    }
}

/// One SMP figure from one launch.
pub type SmpFigures = Vec<(SmpFig, Outcome)>;

/// One launch of `spec` with `n` vCPUs; the figures, or why the stub failed.
pub fn run_rep(
    spec: &StubSpec,
    guest: &SmpGuest,
    n: usize,
    counts: &SmpCounts,
) -> Result<SmpFigures, BenchError> {
    let slack = timer_slack();
    let (mut stub, mut s) = measure::launch(
        || Stub::spawn_smp(spec, &guest.image, n),
        |stub| SmpSession::open(stub, guest, n, counts.poll),
    )?;
    let result = (|| {
        let counting = s.boot(&mut stub)?;
        let boot = counting.duration_since(stub.spawned_at).as_secs_f64();
        s.find_ram(stub.pid())?;
        set_timer_slack(SAMPLING_SLACK_NS);
        // One cycle to warm up, not counted.
        s.ctrl_c_cycle(0)?;
        let (mut resume, mut ctrl_c) = (Vec::new(), Vec::new());
        for k in 1..=counts.ctrl_c {
            let (r, c) = s.ctrl_c_cycle(k)?;
            resume.push(r);
            ctrl_c.push(c);
        }
        s.arm()?;
        let (mut bp, mut last) = (Vec::new(), Vec::new());
        for k in 0..counts.bp {
            let (b, l) = s.bp_cycle(k)?;
            bp.push(b);
            last.push(l);
        }
        let value = |v: Vec<f64>| Outcome::Value(median(&v), v);
        Ok(vec![
            (SmpFig::CtrlC, value(ctrl_c)),
            (SmpFig::Breakpoint, value(bp)),
            (SmpFig::BpLastMoved, value(last)),
            (SmpFig::Resume, value(resume)),
            (SmpFig::Boot, Outcome::Value(boot, Vec::new())),
        ])
    })();
    set_timer_slack(slack);
    let _ = s.c.send(b"vKill;1").and_then(|_| s.c.recv());
    drop(s);
    stub.finish(Duration::from_secs(3));
    result
}

/// Everything the SMP part measured.
#[derive(Default)]
pub struct SmpResults {
    /// (figure, vCPUs, stub) → (repetition, outcome).
    samples: BTreeMap<(SmpFig, usize, u8), Vec<(usize, Outcome)>>,
}

fn kind_index(k: Kind) -> u8 {
    match k {
        Kind::Kvmgdb => 0,
        Kind::Qemu => 1,
    }
}

impl SmpResults {
    /// Records one launch's figures.
    pub fn add(&mut self, rep: usize, kind: Kind, n: usize, figs: SmpFigures) {
        for (fig, o) in figs {
            self.samples
                .entry((fig, n, kind_index(kind)))
                .or_default()
                .push((rep, o));
        }
    }

    /// Records a launch that failed: every figure of it fails with `why`.
    pub fn fail(&mut self, rep: usize, kind: Kind, n: usize, why: &str) {
        let figs = SmpFig::ALL
            .iter()
            .map(|&f| (f, Outcome::Failed(why.to_string())))
            .collect();
        self.add(rep, kind, n, figs);
    }

    /// The median over the repetitions, and the first failure.
    fn summary(&self, fig: SmpFig, n: usize, kind: Kind) -> (Option<f64>, Option<String>) {
        let Some(v) = self.samples.get(&(fig, n, kind_index(kind))) else {
            return (None, None);
        };
        let values: Vec<f64> = v
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Value(x, _) => Some(*x),
                Outcome::Failed(_) => None,
            })
            .collect();
        let why = v.iter().find_map(|(_, o)| match o {
            Outcome::Failed(w) => Some(w.clone()),
            Outcome::Value(..) => None,
        });
        ((!values.is_empty()).then(|| median(&values)), why)
    }

    /// The Markdown table; `qemu_note` says why the QEMU column is empty, if it is.
    pub fn table(&self, cpus: &[usize], qemu_note: Option<&str>) -> String {
        let mut t = String::new();
        t.push_str("| figure | kvmgdb | QEMU | kvmgdb advantage² | target | verdict |\n");
        t.push_str("|---|---:|---:|---:|---|---|\n");
        let mut notes = Vec::new();
        for fig in SmpFig::ALL {
            for &n in cpus {
                let (k, kw) = self.summary(fig, n, Kind::Kvmgdb);
                let (q, qw) = self.summary(fig, n, Kind::Qemu);
                let cell =
                    |v: Option<f64>, why: &Option<String>, who: &str, notes: &mut Vec<String>| {
                        if let Some(w) = why {
                            // One note per stub and vCPU count: a failed launch fails
                            // every row.
                            let note = format!("{who} with {n} vCPUs: {w}");
                            if !notes.contains(&note) {
                                notes.push(note);
                            }
                        }
                        match (v, why) {
                            (Some(v), None) => fmt(fig, v),
                            (Some(v), Some(_)) => format!("{} (some failed)", fmt(fig, v)),
                            (None, Some(_)) => "**fails**".into(),
                            (None, None) => "—".into(),
                        }
                    };
                let kc = cell(k, &kw, "kvmgdb", &mut notes);
                let qc = cell(q, &qw, "QEMU", &mut notes);
                let adv = match (k, q) {
                    (Some(k), Some(q)) if k > 0.0 => Some(q / k),
                    _ => None,
                };
                let adv_cell = match adv {
                    Some(a) if fig != SmpFig::BpLastMoved => format!("{a:.1}×"),
                    _ => "—".into(),
                };
                let (target, verdict) = if matches!(fig, SmpFig::Boot | SmpFig::BpLastMoved) {
                    ("—".to_string(), "—".to_string())
                } else {
                    let mut target = "ahead of QEMU".to_string();
                    let mut verdict = match (adv, qemu_note) {
                        (Some(a), _) if a > 1.0 => "met".to_string(),
                        (Some(a), _) => format!("**missed** ({a:.1}×)"),
                        (None, Some(_)) => "no QEMU".into(),
                        (None, None) => "not measured".into(),
                    };
                    if n == 64 {
                        target.push_str("; <1 ms on hardware");
                        if let Some(k) = k {
                            let _ = write!(
                                verdict,
                                "; {} ms here{}",
                                fmt_ms(k),
                                if k < 1000.0 { "" } else { " (PVM, 2 cores)" }
                            );
                        }
                    }
                    (target, verdict)
                };
                let _ = writeln!(
                    t,
                    "| {} | {kc} | {qc} | {adv_cell} | {target} | {verdict} |",
                    fig.label(n)
                );
            }
        }
        t.push_str(
            "\n¹ Firmware (SeaBIOS for QEMU), boot, and the boot processor starting each AP \
             with INIT-SIPI-SIPI; seen by a Ctrl-C every 0.2 s (1 s above 8 vCPUs), so only \
             to that precision; for information.\n\
             ² QEMU/kvmgdb: how many times sooner kvmgdb's stop or resume comes. Medians over \
             the repetitions (each the median of its cycles).\n\
             ³ From the breakpoint hit to the last sample in which any vCPU's counter still \
             moved: how long guest code ran on after the hit before the stub had every vCPU \
             out of KVM_RUN; the rest, up to the stop reply, is the stub's own work. On 2 \
             host cores a vCPU thread that waits for a core has not moved for a while \
             already, so this is a lower bound; for information.\n",
        );
        if let Some(note) = qemu_note {
            let _ = writeln!(t, "\nThe QEMU column is empty: {note}.");
        }
        for n in notes {
            let _ = writeln!(t, "\n- {n}");
        }
        t
    }

    /// The raw samples as a JSON array.
    pub fn json(&self) -> String {
        let mut rows = Vec::new();
        for ((fig, n, k), v) in &self.samples {
            let stub = if *k == 0 { Kind::Kvmgdb } else { Kind::Qemu };
            for (rep, o) in v {
                let body = match o {
                    Outcome::Value(x, raw) => {
                        let raw: Vec<String> = raw.iter().map(|r| format!("{r}")).collect();
                        format!("\"value\": {x}, \"raw\": [{}]", raw.join(", "))
                    }
                    Outcome::Failed(why) => format!("\"failed\": {}", json_str(why)),
                };
                rows.push(format!(
                    "    {{\"figure\": {}, \"vcpus\": {n}, \"stub\": {}, \"rep\": {rep}, {body}}}",
                    json_str(fig.key()),
                    json_str(stub.name())
                ));
            }
        }
        format!("[\n{}\n  ]", rows.join(",\n"))
    }
}

fn fmt(fig: SmpFig, v: f64) -> String {
    match fig {
        SmpFig::Boot => format!("{v:.1}"),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

fn fmt_ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

/// Runs the SMP part: each vCPU count, each stub, `reps` launches (alternating which
/// stub goes first). A QEMU launch that fails is recorded and the run goes on; a kvmgdb
/// failure is recorded too, and returned at the end so the run fails.
pub fn run(
    specs: &[StubSpec],
    guest: &SmpGuest,
    counts: &SmpCounts,
    reps: usize,
    results: &mut SmpResults,
) -> Result<(), BenchError> {
    let mut kvmgdb_failure = None;
    for rep in 0..reps {
        for &n in &counts.cpus {
            let order: Vec<&StubSpec> = if rep % 2 == 0 {
                specs.iter().collect()
            } else {
                specs.iter().rev().collect()
            };
            for spec in order {
                eprintln!(
                    "kvmgdb-bench: SMP repetition {}/{reps}: {} vCPUs: {}",
                    rep + 1,
                    n,
                    spec.kind.name()
                );
                let _ = std::io::stderr().flush();
                match run_rep(spec, guest, n, counts) {
                    Ok(figs) => results.add(rep, spec.kind, n, figs),
                    Err(e) => {
                        let why = measure::error_chain(&e);
                        eprintln!("kvmgdb-bench: {} with {n} vCPUs: {why}", spec.kind.name());
                        results.fail(rep, spec.kind, n, &why);
                        if spec.kind == Kind::Kvmgdb && kvmgdb_failure.is_none() {
                            kvmgdb_failure = Some(e);
                        }
                    }
                }
            }
        }
    }
    kvmgdb_failure.map_or(Ok(()), Err)
}
