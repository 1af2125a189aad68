//! One repetition against one stub: launch it, drive it through the RSP client and real
//! gdb, verify every answer, and return the figures.

use crate::figures::Fig;
use crate::gdb;
use crate::guest::{BenchGuest, LoopState, Pattern};
use crate::rsp::{Client, RspError, Stop};
use crate::stub::{Kind, Stub, StubError, StubSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors that end the run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The stub's protocol failed during `.0`.
    #[error("{0}")]
    Rsp(String, #[source] RspError),
    /// The stub process failed.
    #[error(transparent)]
    Stub(#[from] StubError),
    /// An answer was wrong: the figure is not counted, the run fails.
    #[error("verification failed: {0}")]
    Verify(String),
    /// Real gdb failed.
    #[error("gdb: {0}")]
    Gdb(String),
    /// The guest image is unusable.
    #[error(transparent)]
    Guest(#[from] crate::guest::GuestError),
    /// A result file could not be written.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    /// Something the benchmark needs is missing.
    #[error("{0}")]
    Setup(String),
    /// Guest RAM could not be read or written from outside the stub.
    #[error(transparent)]
    GuestMem(#[from] crate::guestmem::GuestMemError),
    /// The Multiboot image of the SMP guest could not be made.
    #[error(transparent)]
    Image(#[from] crate::smp_image::ImageError),
}

/// Adds what the client was doing to an RSP error.
pub(crate) trait Ctx<T> {
    /// The error as a [`BenchError::Rsp`] saying what was being done.
    fn ctx(self, what: &str) -> Result<T, BenchError>;
}

impl<T> Ctx<T> for Result<T, RspError> {
    fn ctx(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|e| BenchError::Rsp(what.to_string(), e))
    }
}

/// How much work each figure does.
#[derive(Clone, Debug)]
pub struct Counts {
    /// `vCont;s` round trips, no-ack.
    pub steps: u64,
    /// `vCont;s` round trips, ack mode.
    pub ack_steps: u64,
    /// `vCont;s` + `g` pairs.
    pub step_g: u64,
    /// `g` round trips.
    pub g_reads: u64,
    /// Breakpoint cycles, each kind.
    pub bp_cycles: u64,
    /// Bytes of the small `m` read and how often it is repeated.
    pub mem_small: (usize, u32),
    /// Bytes of the large `m` read.
    pub mem_large: usize,
    /// gdb `stepi`s.
    pub gdb_stepi: u32,
    /// Bytes gdb dumps.
    pub gdb_dump: usize,
    /// Ctrl-C round trips.
    pub interrupts: u32,
    /// How long the guest runs freely for the CPU figure.
    pub cpu_window: Duration,
}

impl Counts {
    /// The timing run.
    pub fn full() -> Counts {
        Counts {
            steps: 20_000,
            ack_steps: 5_000,
            step_g: 10_000,
            g_reads: 20_000,
            bp_cycles: 3_000,
            mem_small: (1 << 20, 4),
            mem_large: 16 << 20,
            gdb_stepi: 1000,
            gdb_dump: 16 << 20,
            interrupts: 20,
            cpu_window: Duration::from_secs(2),
        }
    }

    /// `--smoke`: every code path, tiny counts.
    pub fn smoke() -> Counts {
        Counts {
            steps: 50,
            ack_steps: 20,
            step_g: 20,
            g_reads: 50,
            bp_cycles: 10,
            mem_small: (256 << 10, 1),
            mem_large: 1 << 20,
            gdb_stepi: 20,
            gdb_dump: 1 << 20,
            interrupts: 3,
            cpu_window: Duration::from_millis(200),
        }
    }
}

/// One figure's result from one repetition.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The figure, and the individual measurements behind it (if there are several).
    Value(f64, Vec<f64>),
    /// The stub could not do it (only accepted where a stub is known to fail).
    Failed(String),
}

/// Where the program counter and EAX sit in a stub's `g` reply.
#[derive(Clone, Copy, Debug)]
struct RegLayout {
    pc: usize,
    pc_len: usize,
    min_len: usize,
}

impl RegLayout {
    /// gdb's i386 `g` layout: eax .. edi, then eip.
    const I386: RegLayout = RegLayout {
        pc: 32,
        pc_len: 4,
        min_len: 40,
    };
    /// gdb's x86-64 layout: rax .. r15, then rip.
    const X86_64: RegLayout = RegLayout {
        pc: 128,
        pc_len: 8,
        min_len: 136,
    };

    /// The layout for the stub's target-description architecture; without one, what each
    /// stub is known to send for this 32-bit guest.
    fn of(arch: Option<&str>, kind: Kind) -> RegLayout {
        match (arch, kind) {
            (Some(a), _) if a.contains("x86-64") => RegLayout::X86_64,
            (Some(_), _) | (None, Kind::Kvmgdb) => RegLayout::I386,
            // qemu-system-x86_64 always sends the x86-64 layout.
            (None, Kind::Qemu) => RegLayout::X86_64,
        }
    }
}

pub(crate) const T_REPLY: Duration = Duration::from_secs(20);
/// Firmware, boot and the guest's pattern fill take seconds under an emulating KVM.
const T_READY: Duration = Duration::from_secs(180);
pub(crate) const T_CONNECT: Duration = Duration::from_secs(30);

const STEP: &[u8] = b"vCont;s:p1.1";
pub(crate) const CONTINUE: &[u8] = b"vCont;c:p1.-1";
pub(crate) const SIGINT: u8 = 2;
pub(crate) const SIGTRAP: u8 = 5;

/// A connection plus what the benchmark knows of the guest's state.
struct Session<'g> {
    c: Client,
    guest: &'g BenchGuest,
    layout: RegLayout,
    scratch: Vec<u8>,
    regs: Vec<u8>,
    state: LoopState,
}

impl<'g> Session<'g> {
    /// Connects, shakes hands and asks `?`. Returns the session and when the `?` reply came.
    fn open(
        stub: &mut Stub,
        guest: &'g BenchGuest,
        no_ack: bool,
    ) -> Result<(Self, Instant), BenchError> {
        let stream = stub.connect(T_CONNECT)?;
        let mut c = Client::new(stream, T_REPLY).ctx("connecting")?;
        c.handshake(no_ack).ctx("qSupported/QStartNoAckMode")?;
        let arch = c.architecture().ctx("reading the target description")?;
        c.send(b"?").ctx("sending ?")?;
        let stop = c.wait_stop().ctx("waiting for the reply to ?")?;
        let at = Instant::now();
        if stop.signal().is_none() {
            return Err(BenchError::Verify(format!(
                "{}: `?` answered {stop}, not a stopped target",
                stub.kind.name()
            )));
        }
        let s = Session {
            c,
            guest,
            layout: RegLayout::of(arch.as_deref(), stub.kind),
            scratch: Vec::with_capacity(4096),
            regs: Vec::with_capacity(1024),
            state: LoopState { index: 0, eax: 0 },
        };
        Ok((s, at))
    }

    /// Reads `g`; returns (pc, eax).
    fn pc_eax(&mut self) -> Result<(u64, u32), BenchError> {
        self.regs.clear();
        self.c
            .read_registers(&mut self.scratch, &mut self.regs)
            .ctx("reading registers (g)")?;
        let l = self.layout;
        if self.regs.len() < l.min_len {
            return Err(BenchError::Verify(format!(
                "g reply has {} bytes, fewer than the {} of the expected register layout",
                self.regs.len(),
                l.min_len
            )));
        }
        let mut pc = [0u8; 8];
        pc[..l.pc_len].copy_from_slice(&self.regs[l.pc..l.pc + l.pc_len]);
        let eax = u32::from_le_bytes([self.regs[0], self.regs[1], self.regs[2], self.regs[3]]);
        Ok((u64::from_le_bytes(pc), eax))
    }

    /// Learns the loop state from the registers; the guest must be in its hot loop.
    fn sync(&mut self) -> Result<(), BenchError> {
        let (pc, eax) = self.pc_eax()?;
        let index = self.guest.loop_index(pc).ok_or_else(|| {
            BenchError::Verify(format!(
                "the guest stopped at {pc:#x}, outside its loop {:#x}..={:#x}",
                self.guest.loop_pcs[0], self.guest.loop_pcs[4]
            ))
        })?;
        self.state = LoopState { index, eax };
        Ok(())
    }

    /// Checks the registers against the model.
    fn check(&mut self, what: &str) -> Result<(), BenchError> {
        let (pc, eax) = self.pc_eax()?;
        let want_pc = self.guest.loop_pcs[self.state.index];
        if pc != want_pc || eax != self.state.eax {
            return Err(BenchError::Verify(format!(
                "{what}: pc={pc:#x} eax={eax:#x}, expected pc={want_pc:#x} eax={:#x}",
                self.state.eax
            )));
        }
        Ok(())
    }

    fn expect_signal(stop: &Stop, sig: u8, what: &str) -> Result<(), BenchError> {
        if stop.signal() != Some(sig) {
            return Err(BenchError::Verify(format!(
                "{what}: stopped with {stop}, expected signal {sig}"
            )));
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), BenchError> {
        let stop = self.c.resume(STEP).ctx("single-stepping")?;
        Self::expect_signal(&stop, SIGTRAP, "single step")?;
        self.state = self.state.step();
        Ok(())
    }

    /// Runs to `bench_ready` with a hardware breakpoint, then steps into the loop.
    fn run_to_ready(&mut self) -> Result<(), BenchError> {
        let z = format!("Z1,{:x},1", self.guest.ready);
        self.c
            .expect_ok(z.as_bytes())
            .ctx("inserting Z1 at bench_ready")?;
        self.c.set_timeout(T_READY).ctx("setting a timeout")?;
        let stop = self.c.resume(CONTINUE).ctx("running to bench_ready")?;
        self.c.set_timeout(T_REPLY).ctx("setting a timeout")?;
        Self::expect_signal(&stop, SIGTRAP, "run to bench_ready")?;
        let (pc, _) = self.pc_eax()?;
        if pc != self.guest.ready {
            return Err(BenchError::Verify(format!(
                "the hw breakpoint at bench_ready ({:#x}) stopped at {pc:#x}",
                self.guest.ready
            )));
        }
        let z = format!("z1,{:x},1", self.guest.ready);
        self.c
            .expect_ok(z.as_bytes())
            .ctx("removing Z1 at bench_ready")?;
        // `xor %eax,%eax` leads into the loop.
        let stop = self.c.resume(STEP).ctx("stepping into the loop")?;
        Self::expect_signal(&stop, SIGTRAP, "step into the loop")?;
        self.state = LoopState { index: 0, eax: 0 };
        self.check("first step into the loop")
    }

    /// `n` bare steps; every reply must be a SIGTRAP stop, and afterwards pc and EAX must
    /// show that exactly `n` instructions ran. Returns steps/s.
    fn bare_steps(&mut self, n: u64) -> Result<f64, BenchError> {
        let start = self.state;
        let t = Instant::now();
        for i in 0..n {
            let stop = self.c.resume(STEP).ctx("single-stepping")?;
            if stop.signal() != Some(SIGTRAP) {
                return Err(BenchError::Verify(format!(
                    "step {i}: stopped with {stop}, expected SIGTRAP"
                )));
            }
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        self.state = start.steps(n);
        self.check(&format!("after {n} steps"))?;
        Ok(rate)
    }

    /// `n` steps each followed by `g`, each checked. Returns steps/s.
    fn steps_with_g(&mut self, n: u64) -> Result<f64, BenchError> {
        let t = Instant::now();
        for i in 0..n {
            self.step()?;
            self.check(&format!("step {i}"))?;
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    }

    /// `n` `g` reads; each must equal the first. Returns reads/s.
    fn g_reads(&mut self, n: u64) -> Result<f64, BenchError> {
        self.check("before the g reads")?;
        let first = self.regs.clone();
        let t = Instant::now();
        for i in 0..n {
            self.regs.clear();
            self.c
                .read_registers(&mut self.scratch, &mut self.regs)
                .ctx("reading registers (g)")?;
            if self.regs != first {
                return Err(BenchError::Verify(format!(
                    "g read {i} differs from the first at a stop"
                )));
            }
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    }

    /// gdb's cycle at a breakpoint in the loop: step off it, insert, continue, read
    /// registers, remove. Every hit must be at `bench_loop` exactly one lap later.
    /// Returns hits/s, or the stop that was not a hit.
    fn bp_cycles(&mut self, n: u64, hw: bool) -> Result<Result<f64, String>, BenchError> {
        let addr = self.guest.loop_pcs[0];
        let kind = if hw { 1 } else { 0 };
        let insert = format!("Z{kind},{addr:x},1");
        let remove = format!("z{kind},{addr:x},1");
        let t = Instant::now();
        for i in 0..n {
            self.step()?;
            self.c
                .expect_ok(insert.as_bytes())
                .ctx("inserting a breakpoint")?;
            let stop = self.c.resume(CONTINUE).ctx("continuing to a breakpoint")?;
            if stop.signal() != Some(SIGTRAP) {
                return Ok(Err(format!("hit {i}: the stub stopped with {stop}")));
            }
            self.state = self.state.run_to(0);
            self.check(&format!("breakpoint hit {i}"))?;
            self.c
                .expect_ok(remove.as_bytes())
                .ctx("removing a breakpoint")?;
        }
        Ok(Ok(n as f64 / t.elapsed().as_secs_f64()))
    }

    /// Reads `len` bytes of the pattern `times` times; checks every byte (outside the
    /// timing). Returns MiB/s.
    fn mem_read(&mut self, pattern: &Pattern, len: usize, times: u32) -> Result<f64, BenchError> {
        let base = self.guest.pattern.start;
        let mut data = Vec::with_capacity(len);
        let mut hex = Vec::with_capacity(self.c.packet_size + 16);
        let mut elapsed = Duration::ZERO;
        for _ in 0..times {
            data.clear();
            let t = Instant::now();
            self.c
                .read_memory(base, len, &mut hex, &mut data)
                .ctx("reading memory (m)")?;
            elapsed += t.elapsed();
            if data.len() != len {
                return Err(BenchError::Verify(format!(
                    "asked for {len} bytes, got {}",
                    data.len()
                )));
            }
            pattern.verify(base, &data).map_err(BenchError::Verify)?;
        }
        Ok((len as f64 * f64::from(times)) / (1 << 20) as f64 / elapsed.as_secs_f64())
    }

    /// Continue, let the guest run a few milliseconds, Ctrl-C; returns each latency in µs.
    fn interrupts(&mut self, n: u32) -> Result<Vec<f64>, BenchError> {
        let mut out = Vec::new();
        for i in 0..n {
            self.c.send(CONTINUE).ctx("continuing")?;
            // Vary the phase so the interrupt lands at different points of the guest's run.
            std::thread::sleep(Duration::from_micros(2000 + u64::from(i * 733 % 3000)));
            let t = Instant::now();
            self.c.interrupt().ctx("interrupting")?;
            let stop = self
                .c
                .wait_stop()
                .ctx("waiting for the stop after Ctrl-C")?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
            Self::expect_signal(&stop, SIGINT, "Ctrl-C")?;
            self.sync()?;
        }
        Ok(out)
    }

    /// The stub's own CPU (vCPU threads excluded) while the guest runs for `window`.
    fn stub_cpu(&mut self, stub: &Stub, window: Duration) -> Result<f64, BenchError> {
        let eax_before = self.state.eax;
        self.c.send(CONTINUE).ctx("continuing")?;
        std::thread::sleep(Duration::from_millis(100));
        let before = stub.cpu()?;
        std::thread::sleep(window);
        let after = stub.cpu()?;
        self.c.interrupt().ctx("interrupting")?;
        let stop = self
            .c
            .wait_stop()
            .ctx("waiting for the stop after Ctrl-C")?;
        Self::expect_signal(&stop, SIGINT, "Ctrl-C after the CPU window")?;
        self.sync()?;
        // The guest must really have run: EAX grows by 4 every lap, ~1M laps/s on PVM.
        let laps = self.state.eax.wrapping_sub(eax_before) / 4;
        if laps < 1000 {
            return Err(BenchError::Verify(format!(
                "the guest ran only {laps} loop laps in {window:?} of free running"
            )));
        }
        Ok(before.stub_percent_until(&after))
    }

    fn detach(mut self) -> Result<(), BenchError> {
        self.c.expect_ok(b"D;1").ctx("detaching")
    }
}

/// A figure in the making.
type Figures = Vec<(Fig, Outcome)>;

/// What one repetition against one stub produced.
pub struct RepOutput {
    /// The figures.
    pub figs: Figures,
    /// The stub offered no QStartNoAckMode, so every exchange was acknowledged.
    pub ack_only: bool,
}

fn value(figs: &mut Figures, fig: Fig, v: f64) {
    figs.push((fig, Outcome::Value(v, Vec::new())));
}

/// One repetition against one stub.
pub fn run_rep(
    spec: &StubSpec,
    guest: &BenchGuest,
    pattern: &Pattern,
    counts: &Counts,
    gdb_path: &Path,
) -> Result<RepOutput, BenchError> {
    let mut figs = Figures::new();
    let name = spec.kind.name();
    let in_stub = |e: BenchError| match e {
        BenchError::Verify(m) => BenchError::Verify(format!("{name}: {m}")),
        BenchError::Rsp(m, s) => BenchError::Rsp(format!("{name}: {m}"), s),
        other => other,
    };

    // Session 1, no-ack (when the stub offers it): everything but the sw breakpoints.
    let (mut stub, (mut s, first_stop)) = launch(
        || Stub::spawn(spec, &guest.path),
        |stub| Session::open(stub, guest, true),
    )
    .map_err(in_stub)?;
    value(
        &mut figs,
        Fig::Launch,
        first_stop.duration_since(stub.spawned_at).as_secs_f64() * 1e3,
    );
    let rss_start = stub.peak_rss_kib()? as f64 / 1024.0;
    value(&mut figs, Fig::RssStart, rss_start);
    s.run_to_ready().map_err(in_stub)?;
    value(
        &mut figs,
        Fig::Ready,
        stub.spawned_at.elapsed().as_secs_f64() * 1e3,
    );
    let no_ack = !s.c.ack_mode();
    let r = s.bare_steps(counts.steps).map_err(in_stub)?;
    value(&mut figs, Fig::Step, r);
    let r = s.steps_with_g(counts.step_g).map_err(in_stub)?;
    value(&mut figs, Fig::StepG, r);
    let r = s.g_reads(counts.g_reads).map_err(in_stub)?;
    value(&mut figs, Fig::GRead, r);
    match s.bp_cycles(counts.bp_cycles, true).map_err(in_stub)? {
        Ok(r) => value(&mut figs, Fig::HwBp, r),
        Err(why) => return Err(BenchError::Verify(format!("{name}: hw breakpoints: {why}"))),
    }
    let (small, times) = counts.mem_small;
    let r = s.mem_read(pattern, small, times).map_err(in_stub)?;
    value(&mut figs, Fig::Mem1, r);
    let r = s.mem_read(pattern, counts.mem_large, 1).map_err(in_stub)?;
    value(&mut figs, Fig::Mem16, r);
    let lat = s.interrupts(counts.interrupts).map_err(in_stub)?;
    figs.push((Fig::CtrlC, Outcome::Value(median(&lat), lat)));
    let r = s.stub_cpu(&stub, counts.cpu_window).map_err(in_stub)?;
    value(&mut figs, Fig::StubCpu, r);
    s.detach().map_err(in_stub)?;

    // Session 2, ack mode.
    let (mut s, _) = Session::open(&mut stub, guest, false).map_err(in_stub)?;
    s.sync().map_err(in_stub)?;
    let r = s.bare_steps(counts.ack_steps).map_err(in_stub)?;
    value(&mut figs, Fig::StepAck, r);
    let r = s.g_reads(counts.g_reads / 2).map_err(in_stub)?;
    value(&mut figs, Fig::GReadAck, r);
    s.detach().map_err(in_stub)?;

    // Real gdb.
    let g = gdb::run(gdb_path, &stub, guest, pattern, counts).map_err(in_stub)?;
    value(&mut figs, Fig::GdbStepi, g.stepi_per_s);
    value(&mut figs, Fig::GdbStepiCpu, g.stepi_gdb_cpu);
    value(&mut figs, Fig::GdbDump, g.dump_mib_per_s);
    value(&mut figs, Fig::GdbDumpCpu, g.dump_gdb_cpu);

    // Session 3: software breakpoints last, since they may end QEMU's VM.
    let (mut s, _) = Session::open(&mut stub, guest, true).map_err(in_stub)?;
    s.sync().map_err(in_stub)?;
    match s.bp_cycles(counts.bp_cycles, false).map_err(in_stub)? {
        Ok(r) => value(&mut figs, Fig::SwBp, r),
        Err(why) if spec.kind == Kind::Qemu => {
            let log = stub.log_text();
            let cause = log
                .lines()
                .find(|l| l.contains("KVM internal error") || l.contains("emulation failure"))
                .map(|l| format!("; QEMU says: {l}"))
                .unwrap_or_default();
            figs.push((Fig::SwBp, Outcome::Failed(format!("{why}{cause}"))));
        }
        Err(why) => return Err(BenchError::Verify(format!("{name}: sw breakpoints: {why}"))),
    }
    let rss = stub.peak_rss_kib()? as f64 / 1024.0;
    value(&mut figs, Fig::Rss, rss);
    let (now, guest_ram) = stub.rss_split_kib()?;
    value(
        &mut figs,
        Fig::RssOwn,
        now.saturating_sub(guest_ram) as f64 / 1024.0,
    );
    // gdb's kill; either an OK or the connection closing is fine.
    let _ = s.c.send(b"vKill;1").and_then(|_| s.c.recv());
    drop(s);
    stub.finish(Duration::from_secs(3));

    Ok(RepOutput {
        figs,
        ack_only: !no_ack,
    })
}

/// Starts a stub with `spawn` and opens a session on it with `open`. The port was free
/// when chosen; if something took it since, starts again on another.
pub(crate) fn launch<T>(
    spawn: impl Fn() -> Result<Stub, StubError>,
    open: impl Fn(&mut Stub) -> Result<T, BenchError>,
) -> Result<(Stub, T), BenchError> {
    let mut tries = 0;
    loop {
        let mut stub = spawn()?;
        match open(&mut stub) {
            Ok(s) => return Ok((stub, s)),
            Err(BenchError::Stub(StubError::Died(_, _, log)))
                if tries < 3 && log.contains("in use") =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The median (mean of the middle two for an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
