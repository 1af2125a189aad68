//! The integration-test harness: starts `kvmgdb` and the real `gdb` as child processes, each
//! bounded by a timeout and killed on drop, so a failing test leaves nothing behind.
//!
//! Every test gets its own directory, its own gdb port (port 0: the OS picks one) or Unix
//! socket, and its own serial file, so the tests can run in parallel.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one gdb run may take before the test fails.
pub const GDB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long kvmgdb may take to print its first line or to exit once told to.
pub const KVMGDB_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the harness looks at a child that has not finished yet.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The kvmgdb binary under test.
pub fn kvmgdb_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kvmgdb"))
}

/// A guest image built by `build.rs`, e.g. `guest("demo.elf")`.
pub fn guest(name: &str) -> PathBuf {
    let path = kvmgdb::guests::guest_dir().join(name);
    assert!(path.is_file(), "guest image {} is missing", path.display());
    path
}

/// A gdb command file from `gdb-scripts/`.
pub fn script(name: &str) -> PathBuf {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/gdb-scripts")).join(name);
    assert!(path.is_file(), "gdb script {} is missing", path.display());
    path
}

/// Fails the test unless /dev/kvm can be opened.
pub fn require_kvm() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("KVM not available: cannot open /dev/kvm: {e}");
    }
}

/// Fails the test unless `gdb` is on PATH.
pub fn require_gdb() {
    match Command::new("gdb")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "gdb not installed: apt-get install -y gdb (`gdb --version` failed: {})",
            out.status
        ),
        Err(e) => panic!("gdb not installed: apt-get install -y gdb ({e})"),
    }
}

/// Both preconditions of a gdb test.
pub fn require_kvm_and_gdb() {
    require_kvm();
    require_gdb();
}

/// A per-test scratch directory, removed when the test passes and kept (for the logs) when
/// it fails.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates an empty directory named after the test.
    pub fn new(name: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!("kvmgdb-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Where the stub listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// TCP on 127.0.0.1, port chosen by the OS.
    Tcp,
    /// A Unix socket in the test directory.
    Unix,
}

/// What to boot and how.
pub struct Boot<'a> {
    /// The kernel; `None` boots the embedded demo.
    pub kernel: Option<PathBuf>,
    /// The stub's socket.
    pub listen: Listen,
    /// `--no-wait`: run at once instead of waiting for gdb at the entry point.
    pub no_wait: bool,
    /// Further arguments, e.g. `["--memory", "64M"]`.
    pub extra: &'a [&'a str],
}

impl Boot<'_> {
    /// Boots `guest(name)` over TCP, waiting for gdb at the entry point.
    pub fn guest(name: &str) -> Boot<'static> {
        Boot {
            kernel: Some(guest(name)),
            listen: Listen::Tcp,
            no_wait: false,
            extra: &[],
        }
    }
}

/// A running kvmgdb with a gdb stub, killed on drop.
pub struct Kvmgdb {
    child: Child,
    /// What gdb's `target remote` takes, as printed by kvmgdb.
    pub target: String,
    /// The address after "on" in kvmgdb's first line (`127.0.0.1:PORT` or `unix:PATH`).
    pub listen_addr: String,
    /// The ELF file kvmgdb tells the user to give gdb.
    pub symbol_file: PathBuf,
    /// kvmgdb's first stderr line.
    pub first_line: String,
    /// The file the guest's COM1 output goes to.
    pub serial: PathBuf,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Kvmgdb {
    /// Starts kvmgdb and waits for the line that says where the stub listens.
    pub fn start(dir: &TestDir, boot: Boot<'_>) -> Kvmgdb {
        let serial = dir.join("serial.txt");
        let gdb_arg = match boot.listen {
            Listen::Tcp => "127.0.0.1:0".to_string(),
            Listen::Unix => format!("unix:{}", dir.join("gdb.sock").display()),
        };
        let mut cmd = Command::new(kvmgdb_bin());
        cmd.arg("--gdb").arg(&gdb_arg).arg("--serial").arg(&serial);
        if boot.no_wait {
            cmd.arg("--no-wait");
        }
        cmd.args(boot.extra);
        if let Some(k) = &boot.kernel {
            cmd.arg(k);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kvmgdb_bin().display()));

        // A thread collects stderr for the whole run and hands over the first line.
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let collected = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut first = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(tx) = first.take() {
                    let _ = tx.send(line);
                }
            }
        });

        let mut this = Kvmgdb {
            child,
            target: String::new(),
            listen_addr: String::new(),
            symbol_file: PathBuf::new(),
            first_line: String::new(),
            serial,
            stderr,
            stderr_reader: Some(reader),
        };
        let first_line = match rx.recv_timeout(KVMGDB_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = this.child.try_wait().ok().flatten();
                panic!(
                    "kvmgdb printed no line within {KVMGDB_TIMEOUT:?} (exit status: {status:?}); stderr:\n{}",
                    this.stderr()
                );
            }
        };
        // "kvmgdb: waiting at the entry point for gdb on ADDR; connect with: gdb ELF -ex 'target remote TARGET'"
        let parsed = (|| {
            let listen_addr = first_line.split(" on ").nth(1)?.split(';').next()?;
            let rest = first_line.split("; connect with: gdb ").nth(1)?;
            let (elf, rest) = rest.split_once(" -ex '")?;
            let target = rest.strip_prefix("target remote ")?.strip_suffix('\'')?;
            Some((
                listen_addr.to_string(),
                PathBuf::from(elf),
                target.to_string(),
            ))
        })();
        let Some((listen_addr, symbol_file, target)) = parsed else {
            panic!("cannot parse kvmgdb's first stderr line: {first_line:?}");
        };
        let expected_word = if boot.no_wait {
            "running; attach gdb on "
        } else {
            "waiting at the entry point for gdb on "
        };
        assert!(
            first_line.starts_with(&format!("kvmgdb: {expected_word}")),
            "unexpected first line: {first_line:?}"
        );
        this.first_line = first_line;
        this.listen_addr = listen_addr;
        this.symbol_file = symbol_file;
        this.target = target;
        this
    }

    /// Boots `boot` over TCP and checks that the printed address is a real port.
    pub fn start_tcp(dir: &TestDir, boot: Boot<'_>) -> Kvmgdb {
        let k = Kvmgdb::start(dir, boot);
        let port = k
            .listen_addr
            .strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok());
        assert!(
            matches!(port, Some(p) if p != 0),
            "kvmgdb should print the port it bound, got {:?}",
            k.first_line
        );
        assert_eq!(k.target, k.listen_addr, "line: {:?}", k.first_line);
        k
    }

    /// Everything kvmgdb printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// What the guest printed on COM1 so far.
    pub fn serial_output(&self) -> String {
        fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// True while kvmgdb runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for kvmgdb to exit; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let status = wait_child(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "kvmgdb did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            )
        });
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        status.code().unwrap_or_else(|| {
            panic!(
                "kvmgdb was killed by a signal ({status}); stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// Runs `script_name` from gdb-scripts/ in gdb against this kvmgdb, with `elf` as
    /// gdb's symbol file, and returns gdb's output. Fails on a timeout or a script error.
    pub fn gdb(&self, dir: &TestDir, script_name: &str, elf: &Path) -> String {
        let gdb = Gdb::spawn(dir, &self.target, script_name, elf);
        let out = gdb.finish(GDB_TIMEOUT, self);
        assert_script_ran(&out, script_name, self);
        out
    }
}

impl Drop for Kvmgdb {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` with a timeout, checking it every few milliseconds.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            _ => return None,
        }
    }
}

/// Numbers gdb output files, so a test can run gdb more than once.
static GDB_RUNS: AtomicUsize = AtomicUsize::new(0);

/// A running gdb in batch mode, killed on drop. Its stdout and stderr go, interleaved as
/// they happen, to one file.
pub struct Gdb {
    child: Child,
    // Kept open: gdb busy-polls a stdin that is at end of file (/dev/null) while it waits
    // for the target, which would steal CPU from the (slow, emulated) guest.
    _stdin: ChildStdin,
    out_path: PathBuf,
    script_name: String,
}

impl Gdb {
    /// Starts `gdb -batch` connected to `target`, running `script_name` on `elf`.
    pub fn spawn(dir: &TestDir, target: &str, script_name: &str, elf: &Path) -> Gdb {
        let n = GDB_RUNS.fetch_add(1, Ordering::Relaxed);
        let out_path = dir.join(&format!("gdb-{n}-{script_name}.out"));
        let out = File::create(&out_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_path.display()));
        let err = out.try_clone().expect("cannot duplicate a file handle");
        let mut child = Command::new("gdb")
            .args(["-nx", "-batch"])
            .args(["-ex", "set pagination off"])
            .args(["-ex", "set confirm off"])
            .args(["-ex", "set width 0"])
            .arg("-ex")
            .arg(format!("target remote {target}"))
            .arg("-x")
            .arg(script(script_name))
            .arg(elf)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("gdb not installed: apt-get install -y gdb ({e})"));
        let stdin = child.stdin.take().expect("stdin is piped");
        Gdb {
            child,
            _stdin: stdin,
            out_path,
            script_name: script_name.to_string(),
        }
    }

    /// gdb's output so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.out_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until gdb's output contains `needle`; fails after `timeout`.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration, k: &Kvmgdb) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                panic!(
                    "gdb ({}) did not print {needle:?}; output:\n{}\nkvmgdb stderr:\n{}",
                    self.script_name,
                    self.output(),
                    k.stderr()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGINT to gdb, as a terminal's Ctrl-C does.
    pub fn interrupt(&self) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -INT {}", self.child.id()))
            .status()
            .expect("cannot run sh");
        assert!(status.success(), "kill -INT failed: {status}");
    }

    /// Waits for gdb to finish and returns its output. On a timeout, kills gdb and fails with
    /// the output so far.
    pub fn finish(mut self, timeout: Duration, k: &Kvmgdb) -> String {
        if wait_child(&mut self.child, timeout).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "gdb ({}) did not finish within {timeout:?}; output so far:\n{}\nkvmgdb stderr:\n{}",
                self.script_name,
                self.output(),
                k.stderr()
            );
        }
        self.output()
    }
}

impl Drop for Gdb {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Fails if gdb stopped the script on an error.
pub fn assert_script_ran(out: &str, script_name: &str, k: &Kvmgdb) {
    for bad in [
        "Error in sourced command file",
        "Remote connection closed",
        "Remote communication error",
        "'g' packet reply is too long",
        "Ignoring packet error",
    ] {
        assert!(
            !out.contains(bad),
            "gdb ({script_name}) printed {bad:?}; output:\n{out}\nkvmgdb stderr:\n{}",
            k.stderr()
        );
    }
}

/// Fails unless `out` contains `needle`, showing the whole output.
#[track_caller]
pub fn assert_contains(out: &str, needle: &str) {
    assert!(
        out.contains(needle),
        "expected {needle:?} in gdb output:\n{out}"
    );
}

/// Fails if `out` contains `needle`, showing the whole output.
#[track_caller]
pub fn assert_not_contains(out: &str, needle: &str) {
    assert!(
        !out.contains(needle),
        "did not expect {needle:?} in gdb output:\n{out}"
    );
}

/// Parses a number as gdb prints it: `0x…` hexadecimal, otherwise decimal.
pub fn parse_num(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The `key=value` pairs of every line that starts with `tag` (the scripts print them with
/// `printf "tag key=%#lx ...\n"`), one map per line, in order.
pub fn tagged(out: &str, tag: &str) -> Vec<BTreeMap<String, u64>> {
    out.lines()
        .filter_map(|l| l.strip_prefix(tag))
        .filter(|rest| rest.starts_with(' ') || rest.is_empty())
        .map(|rest| {
            rest.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad key=value {kv:?} in {out}"));
                    let n =
                        parse_num(v).unwrap_or_else(|| panic!("bad number {v:?} in line {rest:?}"));
                    (k.to_string(), n)
                })
                .collect()
        })
        .collect()
}

/// The one line tagged `tag`; fails unless there is exactly one.
#[track_caller]
pub fn tagged_one(out: &str, tag: &str) -> BTreeMap<String, u64> {
    let mut all = tagged(out, tag);
    assert_eq!(
        all.len(),
        1,
        "expected one {tag:?} line in gdb output:\n{out}"
    );
    all.remove(0)
}

/// The lines between the line `==name==` (printed with `echo ==name==\n`) and the next
/// such marker line.
#[track_caller]
pub fn section(out: &str, name: &str) -> String {
    let marker = format!("=={name}==");
    let is_marker = |l: &str| l.len() > 4 && l.starts_with("==") && l.ends_with("==");
    let mut lines = out.lines().skip_while(|l| *l != marker);
    assert!(
        lines.next().is_some(),
        "no {marker:?} line in gdb output:\n{out}"
    );
    lines
        .take_while(|l| !is_marker(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The registers in `info registers` output: name → value (the first, hexadecimal column).
pub fn registers(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let value = words.next()?;
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            Some((name.to_string(), parse_num(value)?))
        })
        .collect()
}

/// Runs kvmgdb without gdb and returns (exit status, stdout, stderr); fails after `timeout`.
pub fn run_kvmgdb(args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut child = Command::new(kvmgdb_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", kvmgdb_bin().display()));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped")));
    let err = read_all(Box::new(child.stderr.take().expect("piped")));
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("kvmgdb {args:?} did not exit within {timeout:?}; stdout:\n{out}\nstderr:\n{err}");
    };
    let code = status.code().unwrap_or_else(|| {
        panic!("kvmgdb {args:?} was killed by a signal ({status}); stderr:\n{err}")
    });
    (code, out, err)
}
