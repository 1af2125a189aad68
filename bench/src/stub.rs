//! The stubs under test: launching kvmgdb or QEMU on the bench guest, connecting to them,
//! and reading their CPU time and peak memory from /proc.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Errors launching or watching a stub process.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// The process could not be started.
    #[error("cannot start {0}")]
    Spawn(String, #[source] std::io::Error),
    /// No free port could be found.
    #[error("cannot find a free loopback port")]
    Port(#[source] std::io::Error),
    /// The stub never accepted a connection.
    #[error("{0} did not accept a gdb connection within {1:?}; its log: {2}")]
    Connect(&'static str, Duration, String),
    /// The process ended early.
    #[error("{0} exited ({1}) before accepting a gdb connection; its log: {2}")]
    Died(&'static str, ExitStatus, String),
    /// /proc could not be read.
    #[error("cannot read /proc for process {0}")]
    Proc(u32, #[source] std::io::Error),
}

/// Which stub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// kvmgdb.
    Kvmgdb,
    /// QEMU with KVM.
    Qemu,
}

impl Kind {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kvmgdb => "kvmgdb",
            Kind::Qemu => "QEMU",
        }
    }
}

/// How to start one stub.
#[derive(Clone, Debug)]
pub struct StubSpec {
    /// Which stub.
    pub kind: Kind,
    /// The program, and arguments that come before the per-run ones.
    pub program: PathBuf,
    /// Leading arguments (e.g. the bench binary's own `--exec-kvmgdb`).
    pub prefix: Vec<String>,
}

/// Guest RAM for both stubs: room for the 16 MiB pattern at 4 MiB, as in QEMU's default.
pub const GUEST_MEMORY_MIB: u32 = 128;

impl StubSpec {
    /// The command line for `guest` with the stub on `port`; `cpus` asks for that many
    /// vCPUs (and, for kvmgdb, the x86-64 register layout QEMU always sends).
    fn command(&self, guest: &Path, port: u16, cpus: Option<usize>) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix);
        match (self.kind, cpus) {
            (Kind::Kvmgdb, Some(n)) => {
                cmd.arg("--cpus")
                    .arg(n.to_string())
                    .args(["--gdb-arch", "x86-64"]);
            }
            (Kind::Qemu, Some(n)) => {
                cmd.arg("-smp").arg(n.to_string());
            }
            (_, None) => {}
        }
        match self.kind {
            Kind::Kvmgdb => {
                cmd.arg("-m")
                    .arg(format!("{GUEST_MEMORY_MIB}M"))
                    .arg("--gdb")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--serial")
                    .arg("none")
                    .arg(guest);
            }
            Kind::Qemu => {
                cmd.args(["-enable-kvm", "-S", "-gdb"])
                    .arg(format!("tcp:127.0.0.1:{port}"))
                    .arg("-kernel")
                    .arg(guest)
                    .args([
                        "-device",
                        "isa-debug-exit,iobase=0xf4,iosize=4",
                        "-display",
                        "none",
                        "-serial",
                        "none",
                        "-no-reboot",
                        // Names the vCPU threads `CPU n/KVM`, so the CPU figure can leave
                        // them out; it changes nothing else.
                        "-name",
                        "debug-threads=on",
                        "-m",
                    ])
                    .arg(format!("{GUEST_MEMORY_MIB}M"));
            }
        }
        cmd
    }

    /// The command line as text, for reports.
    pub fn describe(&self, guest: &Path, cpus: Option<usize>) -> String {
        let cmd = self.command(guest, 0, cpus);
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
            .replace("127.0.0.1:0", "127.0.0.1:PORT")
    }
}

/// A running stub.
pub struct Stub {
    /// Which stub.
    pub kind: Kind,
    child: Child,
    /// Its gdb port on 127.0.0.1.
    pub port: u16,
    /// When `spawn` was called.
    pub spawned_at: Instant,
    log: PathBuf,
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, StubError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(StubError::Port)?;
    Ok(l.local_addr().map_err(StubError::Port)?.port())
}

impl Stub {
    /// Starts `spec` on `guest`; its stderr goes to a log file read back on failure.
    pub fn spawn(spec: &StubSpec, guest: &Path) -> Result<Stub, StubError> {
        let port = free_port()?;
        Stub::launch(spec.kind, spec.command(guest, port, None), port)
    }

    /// Starts `spec` on `guest` with `cpus` vCPUs (kvmgdb's `--cpus`, QEMU's `-smp`).
    pub fn spawn_smp(spec: &StubSpec, guest: &Path, cpus: usize) -> Result<Stub, StubError> {
        let port = free_port()?;
        Stub::launch(spec.kind, spec.command(guest, port, Some(cpus)), port)
    }

    /// Starts `cmd`, a `kind` stub that listens on `port` (if it listens at all); its
    /// stderr goes to a log file read back on failure.
    pub fn launch(kind: Kind, mut cmd: Command, port: u16) -> Result<Stub, StubError> {
        let log = std::env::temp_dir().join(format!(
            "kvmgdb-bench-{}-{}-{port}.log",
            std::process::id(),
            kind.name()
        ));
        let err_file = std::fs::File::create(&log)
            .map_err(|e| StubError::Spawn(log.display().to_string(), e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file));
        let spawned_at = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| StubError::Spawn(cmd.get_program().to_string_lossy().into_owned(), e))?;
        Ok(Stub {
            kind,
            child,
            port,
            spawned_at,
            log,
        })
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stub's stderr so far.
    pub fn log_text(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let t = t.trim();
        if t.is_empty() {
            "(empty)".into()
        } else {
            t.chars().take(2000).collect()
        }
    }

    /// Connects, retrying every 100 µs while the stub starts up.
    pub fn connect(&mut self, timeout: Duration) -> Result<TcpStream, StubError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = TcpStream::connect(addr) {
                return Ok(s);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StubError::Died(self.kind.name(), status, self.log_text()));
            }
            if Instant::now() > deadline {
                return Err(StubError::Connect(
                    self.kind.name(),
                    timeout,
                    self.log_text(),
                ));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// CPU time of the whole process and of its vCPU threads.
    pub fn cpu(&self) -> Result<CpuSample, StubError> {
        cpu_sample(self.pid())
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64, StubError> {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| StubError::Proc(pid, e))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| StubError::Proc(pid, std::io::Error::other("no VmHWM line")))
    }

    /// Resident memory now, in KiB: (whole process, guest RAM). Guest RAM is the mapping
    /// of exactly the guest's RAM size (one anonymous mmap in both kvmgdb and QEMU).
    pub fn rss_split_kib(&self) -> Result<(u64, u64), StubError> {
        let pid = self.pid();
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
            .map_err(|e| StubError::Proc(pid, e))?;
        let field = |l: &str, key: &str| -> Option<u64> {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        let (mut total, mut guest, mut size) = (0, 0, 0);
        for l in smaps.lines() {
            if let Some(s) = field(l, "Size:") {
                size = s;
            } else if let Some(r) = field(l, "Rss:") {
                total += r;
                if size == u64::from(GUEST_MEMORY_MIB) * 1024 {
                    guest += r;
                }
            }
        }
        Ok((total, guest))
    }

    /// Waits up to `timeout` for the process to exit on its own, then kills it. Returns the
    /// exit status if it exited by itself.
    pub fn finish(mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return Some(status);
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        None
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        // Never leave a stub behind when a run fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time consumed so far, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    /// All live threads of the process.
    pub total_ns: u64,
    /// Its vCPU threads (kvmgdb's `vcpuN`, QEMU's `CPU N/KVM`).
    pub vcpu_ns: u64,
    /// When the sample was taken.
    pub at: Option<Instant>,
}

impl CpuSample {
    /// The share of one core the non-vCPU threads used between `self` and `later`, in %.
    pub fn stub_percent_until(&self, later: &CpuSample) -> f64 {
        let wall = match (self.at, later.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_nanos() as f64,
            _ => return f64::NAN,
        };
        let total = later.total_ns.saturating_sub(self.total_ns);
        let vcpu = later.vcpu_ns.saturating_sub(self.vcpu_ns);
        total.saturating_sub(vcpu) as f64 / wall * 100.0
    }
}

/// Is this thread name one of a VMM's vCPU threads?
fn is_vcpu_thread(comm: &str) -> bool {
    comm.starts_with("vcpu") || comm.contains("/KVM")
}

/// Sums per-thread run time from /proc/PID/task/*/schedstat (nanoseconds; the first field
/// is time spent on a CPU), which is far finer than the clock ticks of /proc/PID/stat.
fn cpu_sample(pid: u32) -> Result<CpuSample, StubError> {
    let dir = format!("/proc/{pid}/task");
    let mut s = CpuSample {
        at: Some(Instant::now()),
        ..Default::default()
    };
    for entry in std::fs::read_dir(&dir).map_err(|e| StubError::Proc(pid, e))? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        // A thread can end between read_dir and these reads; skip it then.
        let (Ok(sched), Ok(comm)) = (
            std::fs::read_to_string(path.join("schedstat")),
            std::fs::read_to_string(path.join("comm")),
        ) else {
            continue;
        };
        let ns: u64 = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        s.total_ns += ns;
        if is_vcpu_thread(comm.trim()) {
            s.vcpu_ns += ns;
        }
    }
    Ok(s)
}

/// Finds `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
