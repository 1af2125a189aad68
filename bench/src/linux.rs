//! The Linux figures (`--linux`): Debian's real cloud kernel ([`crate::debian`]) booted by
//! kvmgdb and by `qemu-system-x86_64 -enable-kvm`, each from the bzImage and from the
//! vmlinux (QEMU boots an ELF vmlinux through its PVH note, as kvmgdb does):
//!
//! * launch → `Linux version` on the serial port, per image;
//! * launch → stopped at `start_kernel` through the real gdb (`hbreak start_kernel`,
//!   `continue`), from the vmlinux;
//! * how far each gets: the last serial line within the time limit, and when it came.
//!
//! Both stubs get the same kernel command line: the one a developer passes on this KVM
//! (docs/kvm-quirks.md), with `nokaslr` so the -dbg symbols match. QEMU also gets
//! `-cpu host,-cx16`, the one CPUID change this KVM honours, so that it reaches its own
//! furthest point; kvmgdb hides CX16 itself.

use crate::debian::DebianKernel;
use crate::figures::Fig;
use crate::measure::{BenchError, Outcome};
use crate::stub::{self, Kind, Stub, StubSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel command line both stubs get (on PVM with [`PVM_PARAMS`] after it).
pub const CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr panic=-1 \
    initcall_blacklist=load_system_certificate_list cryptomgr.notests";
/// What kvmgdb's `--pvm-linux` preset appends on PVM; QEMU gets the same by hand.
pub const PVM_PARAMS: &str =
    "noxsave clearcpuid=popcnt,smap,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni";
/// Guest RAM for both.
pub const RAM: &str = "256M";
/// The first line of the kernel proper on the console.
const VERSION_LINE: &str = "Linux version";
/// How often the serial file and gdb's output are looked at.
const POLL: Duration = Duration::from_millis(5);
/// The longest wait for gdb to stop at start_kernel.
const START_KERNEL_TIMEOUT: Duration = Duration::from_secs(300);
/// Marks the line the gdb script prints at the stop.
const MARK: &str = "KVMGDB-BENCH-LINUX";

/// One repetition's figures.
pub type Figures = Vec<(Fig, Outcome)>;

/// Which image a Linux run boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// The compressed bzImage (boot protocol; the guest decompresses itself).
    BzImage,
    /// The ELF vmlinux (PVH entry).
    Vmlinux,
}

impl Image {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Image::BzImage => "bzImage",
            Image::Vmlinux => "vmlinux",
        }
    }

    fn path(self, k: &DebianKernel) -> &Path {
        match self {
            Image::BzImage => &k.bzimage,
            Image::Vmlinux => &k.vmlinux,
        }
    }
}

/// How far one stub got with one image.
#[derive(Clone, Debug)]
pub struct Reach {
    /// The stub.
    pub kind: Kind,
    /// The image.
    pub image: Image,
    /// The last serial line and when it came (from launch); `None` if nothing came.
    pub last: Option<(Duration, String)>,
    /// Why the run ended: the time limit, or the process's exit status.
    pub ended: String,
}

/// The Linux part's settings.
pub struct LinuxBench {
    /// The kernel.
    pub kernel: DebianKernel,
    /// How long each serial run may go on.
    pub limit: Duration,
    /// Whether kvmgdb gets `--pvm-linux` (on PVM).
    pub pvm: bool,
}

impl LinuxBench {
    /// The stub's command line for `image`, serial output to `serial`, a gdb stub on
    /// `gdb_port` that waits for gdb before the guest runs, or none.
    fn command(
        &self,
        spec: &StubSpec,
        image: Image,
        serial: &Path,
        gdb_port: Option<u16>,
    ) -> Command {
        let kernel = image.path(&self.kernel);
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.prefix);
        match spec.kind {
            Kind::Kvmgdb => {
                cmd.args(["-m", RAM, "--serial"]).arg(serial).arg("--gdb");
                match gdb_port {
                    Some(port) => cmd.arg(format!("127.0.0.1:{port}")),
                    None => cmd.arg("none"),
                };
                // The native form (--append), which --serial and --gdb belong to.
                cmd.args(["--append", CMDLINE]);
                if self.pvm {
                    cmd.arg("--pvm-linux");
                }
                cmd.arg(kernel);
            }
            Kind::Qemu => {
                cmd.args(["-enable-kvm", "-cpu", "host,-cx16", "-m", RAM, "-kernel"])
                    .arg(kernel)
                    .arg("-append")
                    .arg(if self.pvm {
                        format!("{CMDLINE} {PVM_PARAMS}")
                    } else {
                        CMDLINE.to_string()
                    })
                    .args(["-display", "none", "-monitor", "none", "-no-reboot"])
                    .arg("-serial")
                    .arg(format!("file:{}", serial.display()));
                if let Some(port) = gdb_port {
                    cmd.args(["-S", "-gdb"])
                        .arg(format!("tcp:127.0.0.1:{port}"));
                }
            }
        }
        cmd
    }

    /// One repetition against one stub: a serial run per image, then the gdb run.
    pub fn run_rep(
        &self,
        spec: &StubSpec,
        gdb: &Path,
    ) -> Result<(Figures, Vec<Reach>), BenchError> {
        let mut figs = Vec::new();
        let mut reaches = Vec::new();
        for (image, fig) in [
            (Image::BzImage, Fig::LinuxVersionBz),
            (Image::Vmlinux, Fig::LinuxVersionVm),
        ] {
            eprintln!(
                "kvmgdb-bench: Linux {} on {}, up to {:?}",
                image.name(),
                spec.kind.name(),
                self.limit
            );
            let (version, reach) = self.serial_run(spec, image)?;
            figs.push((
                fig,
                match version {
                    Some(t) => Outcome::Value(t.as_secs_f64(), Vec::new()),
                    None => Outcome::Failed(format!(
                        "no {VERSION_LINE:?} on serial within {:?}",
                        self.limit
                    )),
                },
            ));
            reaches.push(reach);
        }
        eprintln!(
            "kvmgdb-bench: Linux vmlinux on {}: gdb hbreak start_kernel",
            spec.kind.name()
        );
        figs.push((
            Fig::StartKernelVm,
            match self.start_kernel(spec, Image::Vmlinux, gdb)? {
                Ok(t) => Outcome::Value(t.as_secs_f64(), Vec::new()),
                Err(why) => Outcome::Failed(why),
            },
        ));
        Ok((figs, reaches))
    }

    /// Boots `image` without gdb for at most the time limit, timing each serial line.
    /// Returns when `Linux version` came, and how far the kernel got.
    fn serial_run(
        &self,
        spec: &StubSpec,
        image: Image,
    ) -> Result<(Option<Duration>, Reach), BenchError> {
        let serial = scratch(spec.kind, "serial.txt");
        let _ = std::fs::remove_file(&serial);
        let mut stub = Stub::launch(spec.kind, self.command(spec, image, &serial, None), 0)?;
        let mut lines = SerialLines::default();
        let ended = loop {
            lines.poll(&serial, stub.spawned_at);
            if !stub.is_running() {
                break format!("{} exited", spec.kind.name());
            }
            if stub.spawned_at.elapsed() >= self.limit {
                break format!("time limit {:?}", self.limit);
            }
            std::thread::sleep(POLL);
        };
        lines.poll(&serial, stub.spawned_at);
        // The log's first line says why a stub ended early (QEMU's KVM error, a bad flag).
        let log = stub.log_text();
        let log = log.lines().next().unwrap_or_default().to_string();
        let status = stub.finish(Duration::ZERO);
        let ended = match status {
            Some(st) => format!("{ended} ({st}: {log})"),
            None => ended,
        };
        let _ = std::fs::remove_file(&serial);
        let version = lines
            .seen
            .iter()
            .find(|(_, l)| l.contains(VERSION_LINE))
            .map(|(t, _)| *t);
        Ok((
            version,
            Reach {
                kind: spec.kind,
                image,
                last: lines.seen.last().cloned(),
                ended,
            },
        ))
    }

    /// Launch → gdb reports the stop at `start_kernel` (an `hbreak` set while the guest
    /// waits at its first instruction). Checks that the stop is at `start_kernel`.
    ///
    /// gdb starts first and has read the 587 MB symbol file before the stub is launched
    /// (it waits for a go file, then connects, retrying until the stub listens): reading
    /// symbols is gdb's cost, the same for both stubs, not the VMM's.
    fn start_kernel(
        &self,
        spec: &StubSpec,
        image: Image,
        gdb: &Path,
    ) -> Result<Result<Duration, String>, BenchError> {
        let port = stub::free_port()?;
        let serial = scratch(spec.kind, "gdb-serial.txt");
        let out_path = scratch(spec.kind, "gdb.out");
        let go = scratch(spec.kind, "gdb.go");
        let _ = std::fs::remove_file(&go);
        let out =
            std::fs::File::create(&out_path).map_err(|e| BenchError::Write(out_path.clone(), e))?;
        let err = out
            .try_clone()
            .map_err(|e| BenchError::Write(out_path.clone(), e))?;
        // Waits for the go file (1 ms polls), then connects, retrying for 30 s.
        let connect = format!(
            "python\nimport os, time\nprint('{MARK} READY', flush=True)\n\
             while not os.path.exists('{go}'): time.sleep(0.001)\n\
             for _ in range(30000):\n    \
             try:\n        gdb.execute('target remote 127.0.0.1:{port}'); break\n    \
             except gdb.error: time.sleep(0.001)\nend\n",
            go = go.display()
        );
        let script = scratch(spec.kind, "connect.gdb");
        std::fs::write(&script, connect).map_err(|e| BenchError::Write(script.clone(), e))?;
        let mut child = Command::new(gdb)
            .args(["-nx", "-batch"])
            .args(["-ex", "set pagination off", "-ex", "set confirm off"])
            .arg("-x")
            .arg(&script)
            .args(["-ex", "hbreak start_kernel", "-ex", "continue"])
            .arg("-ex")
            .arg(format!(
                "printf \"{MARK} %#lx %#lx\\n\", $pc, (unsigned long) &start_kernel"
            ))
            .args(["-ex", "kill"])
            .arg(&self.kernel.vmlinux)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| BenchError::Gdb(format!("cannot run {}: {e}", gdb.display())))?;
        let ready_by = Instant::now() + START_KERNEL_TIMEOUT;
        while !std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .contains(&format!("{MARK} READY"))
        {
            if Instant::now() > ready_by || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::Gdb(format!(
                    "gdb did not get ready: {}",
                    std::fs::read_to_string(&out_path).unwrap_or_default()
                )));
            }
            std::thread::sleep(POLL);
        }
        let stub = Stub::launch(
            spec.kind,
            self.command(spec, image, &serial, Some(port)),
            port,
        )?;
        std::fs::write(&go, b"").map_err(|e| BenchError::Write(go.clone(), e))?;
        let result = loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            let stop = text
                .lines()
                .filter_map(|l| l.strip_prefix(MARK))
                .find(|l| !l.contains("READY"));
            if let Some(line) = stop {
                let at = stub.spawned_at.elapsed();
                let v: Vec<&str> = line.split_whitespace().collect();
                break match v.as_slice() {
                    [pc, want] if pc == want => Ok(at),
                    _ => Err(format!("gdb stopped elsewhere: {line}")),
                };
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                break Err(format!(
                    "gdb ended without the stop: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
            if stub.spawned_at.elapsed() > START_KERNEL_TIMEOUT {
                break Err(format!(
                    "no stop at start_kernel within {START_KERNEL_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(POLL);
        };
        // gdb's kill ends the stub; give both a moment, then make sure.
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        stub.finish(Duration::from_secs(2));
        for p in [&serial, &out_path, &go, &script] {
            let _ = std::fs::remove_file(p);
        }
        Ok(result)
    }
}

/// A scratch file of this benchmark process.
fn scratch(kind: Kind, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "kvmgdb-bench-linux-{}-{}-{name}",
        std::process::id(),
        kind.name()
    ))
}

/// The complete serial lines seen so far, each with when it was first seen.
#[derive(Default)]
struct SerialLines {
    /// Bytes of the file already split into lines.
    consumed: usize,
    seen: Vec<(Duration, String)>,
}

impl SerialLines {
    fn poll(&mut self, path: &Path, since: Instant) {
        let Ok(data) = std::fs::read(path) else {
            return;
        };
        let at = since.elapsed();
        let fresh = &data[self.consumed.min(data.len())..];
        let Some(end) = fresh.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in fresh[..end].split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line).trim().to_string();
            if !line.is_empty() {
                self.seen.push((at, line));
            }
        }
        self.consumed += end + 1;
    }
}

/// The "how far each gets" section of the report.
pub fn reach_table(reaches: &[Reach], limit: Duration) -> String {
    let mut t = format!(
        "How far each gets (last serial line within {:?}, launch → that line):\n\n\
         | stub | image | at (s) | last serial line | run ended by |\n|---|---|---:|---|---|\n",
        limit
    );
    for r in reaches {
        let (at, line) = match &r.last {
            Some((at, line)) => (format!("{:.1}", at.as_secs_f64()), line.replace('|', "\\|")),
            None => ("—".into(), "(nothing)".into()),
        };
        t.push_str(&format!(
            "| {} | {} | {at} | `{line}` | {} |\n",
            r.kind.name(),
            r.image.name(),
            r.ended.replace('|', "\\|")
        ));
    }
    t
}
