//! The integration-test harness: starts `kvmgdb` and the real debuggers (`gdb`, `lldb`) as
//! child processes, each bounded by a timeout and killed on drop, so a failing test leaves
//! nothing behind.
//!
//! Every test gets its own directory (the children's working directory, where `monitor dump`
//! writes relative paths), its own gdb port (port 0: the OS picks one) or Unix socket, and
//! its own serial file, so the tests can run in parallel.

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

/// How long one gdb or lldb run may take before the test fails.
pub const DEBUGGER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long kvmgdb may take to print its first line or to exit once told to.
pub const KVMGDB_TIMEOUT: Duration = Duration::from_secs(20);
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
#[track_caller]
pub fn require_kvm() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("KVM not available: cannot open /dev/kvm: {e}");
    }
}

/// Fails the test unless `tool --version` runs (`package` is the Debian package to install;
/// .ci/run installs it).
#[track_caller]
fn require_tool(tool: &str, package: &str) {
    match Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "{tool} not installed: apt-get install -y {package} (`{tool} --version` failed: {status})"
        ),
        Err(e) => panic!("{tool} not installed: apt-get install -y {package} ({e})"),
    }
}

/// Fails the test unless `gdb` is on PATH.
#[track_caller]
pub fn require_gdb() {
    require_tool("gdb", "gdb");
}

/// Fails the test unless `lldb` is on PATH.
#[track_caller]
pub fn require_lldb() {
    require_tool("lldb", "lldb");
}

/// Both preconditions of a gdb test.
#[track_caller]
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
    /// Creates an empty directory named after the test (and numbered, so two tests may
    /// share a name).
    pub fn new(name: &str) -> TestDir {
        static DIRS: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "kvmgdb-test-{}-{}-{name}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
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
            .current_dir(dir.path())
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

    /// Starts gdb connected to this kvmgdb, running `script_name` from gdb-scripts/ with
    /// `elf` as its symbol file.
    pub fn spawn_gdb(&self, dir: &TestDir, script_name: &str, elf: &Path) -> Debugger {
        let cmd = gdb_command(Some(&self.target), &[script_name], &[], &[elf]);
        Debugger::spawn(dir, script_name, cmd)
    }

    /// Runs `script_name` from gdb-scripts/ in gdb against this kvmgdb, with `elf` as
    /// gdb's symbol file, and returns gdb's output. Fails on a timeout or a script error.
    pub fn gdb(&self, dir: &TestDir, script_name: &str, elf: &Path) -> String {
        let out = self
            .spawn_gdb(dir, script_name, elf)
            .finish(DEBUGGER_TIMEOUT, self);
        assert_script_ran(&out, script_name, self);
        out
    }

    /// Runs the command files `scripts` from gdb-scripts/, in order, in one gdb against this
    /// kvmgdb and returns gdb's output. Fails only on a timeout: for scripts that end on an
    /// error by design, and for tests that judge gdb's output by themselves.
    pub fn gdb_unchecked(&self, dir: &TestDir, scripts: &[&str], elf: &Path) -> String {
        let cmd = gdb_command(Some(&self.target), scripts, &[], &[elf]);
        Debugger::spawn(dir, &scripts.join("+"), cmd).finish(DEBUGGER_TIMEOUT, self)
    }

    /// Runs gdb against this kvmgdb with `commands` as `-ex` options and returns its output.
    /// Fails only on a timeout.
    pub fn gdb_ex(&self, dir: &TestDir, elf: &Path, commands: &[&str]) -> String {
        let cmd = gdb_command(Some(&self.target), &[], commands, &[elf]);
        Debugger::spawn(dir, "gdb-ex", cmd).finish(DEBUGGER_TIMEOUT, self)
    }

    /// Runs LLDB in batch mode against this kvmgdb: `gdb-remote`, then `commands`; returns
    /// its output. Fails only on a timeout.
    pub fn lldb(&self, dir: &TestDir, elf: &Path, commands: &[&str]) -> String {
        let mut cmd = Command::new("lldb");
        cmd.args(["--batch", "--no-lldbinit"])
            .arg(elf)
            .arg("-o")
            .arg(format!("gdb-remote {}", self.target));
        for c in commands {
            cmd.arg("-o").arg(c);
        }
        Debugger::spawn(dir, "lldb", cmd).finish(DEBUGGER_TIMEOUT, self)
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

/// `gdb -nx -batch` with paging, confirmations and line wrapping off; connected to `target`
/// if there is one, then the command files `scripts` (from gdb-scripts/) and the `-ex`
/// `commands` in order, on `files` (the symbol file, and a core file if any).
fn gdb_command(
    target: Option<&str>,
    scripts: &[&str],
    commands: &[&str],
    files: &[&Path],
) -> Command {
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-batch"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", "set confirm off"])
        .args(["-ex", "set width 0"]);
    if let Some(target) = target {
        cmd.arg("-ex").arg(format!("target remote {target}"));
    }
    for s in scripts {
        cmd.arg("-x").arg(script(s));
    }
    for c in commands {
        cmd.arg("-ex").arg(c);
    }
    cmd.args(files);
    cmd
}

/// Runs gdb without a live target: `script_name` from gdb-scripts/ on `elf` and the core
/// file `core`. Returns gdb's output; fails only on a timeout.
pub fn gdb_on_core(dir: &TestDir, script_name: &str, elf: &Path, core: &Path) -> String {
    let cmd = gdb_command(None, &[script_name], &[], &[elf, core]);
    Debugger::spawn(dir, script_name, cmd).finish_alone(DEBUGGER_TIMEOUT)
}

/// Runs gdb without a target or a file, with `commands` as `-ex` options. Returns gdb's
/// output; fails only on a timeout.
pub fn gdb_ex_alone(dir: &TestDir, commands: &[&str]) -> String {
    let cmd = gdb_command(None, &[], commands, &[]);
    Debugger::spawn(dir, "gdb-ex", cmd).finish_alone(DEBUGGER_TIMEOUT)
}

/// Numbers debugger output files, so a test can run more than one debugger.
static DEBUGGER_RUNS: AtomicUsize = AtomicUsize::new(0);

/// A running debugger (gdb or lldb) in batch mode, killed on drop. Its stdout and stderr
/// go, interleaved as they happen, to one file in the test directory, which is also its
/// working directory.
pub struct Debugger {
    child: Child,
    // Kept open: gdb busy-polls a stdin that is at end of file (/dev/null) while it waits
    // for the target, which would steal CPU from the guest. (LLDB in batch mode does not
    // read it.)
    _stdin: ChildStdin,
    out_path: PathBuf,
    label: String,
}

impl Debugger {
    /// Starts `cmd`; `label` names it in file names and messages (e.g. the script's name).
    pub fn spawn(dir: &TestDir, label: &str, mut cmd: Command) -> Debugger {
        let n = DEBUGGER_RUNS.fetch_add(1, Ordering::Relaxed);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let out_path = dir.join(&format!("{program}-{n}-{label}.out"));
        let out = File::create(&out_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_path.display()));
        let err = out.try_clone().expect("cannot duplicate a file handle");
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} not installed: apt-get install -y {program} ({e})")
            });
        let stdin = child.stdin.take().expect("stdin is piped");
        Debugger {
            child,
            _stdin: stdin,
            out_path,
            label: format!("{program} {label}"),
        }
    }

    /// The debugger's output so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.out_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the output contains `needle`; fails after `timeout`.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration, k: &Kvmgdb) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                panic!(
                    "{} did not print {needle:?}; output:\n{}\nkvmgdb stderr:\n{}",
                    self.label,
                    self.output(),
                    k.stderr()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGINT to the debugger, as a terminal's Ctrl-C does.
    pub fn interrupt(&self) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -INT {}", self.child.id()))
            .status()
            .expect("cannot run sh");
        assert!(status.success(), "kill -INT failed: {status}");
    }

    /// Waits for the debugger to finish and returns its output. On a timeout, kills it and
    /// fails with the output so far and kvmgdb's stderr.
    pub fn finish(self, timeout: Duration, k: &Kvmgdb) -> String {
        self.wait(timeout, || format!("\nkvmgdb stderr:\n{}", k.stderr()))
    }

    /// [`Debugger::finish`] for a debugger that runs without kvmgdb.
    pub fn finish_alone(self, timeout: Duration) -> String {
        self.wait(timeout, String::new)
    }

    fn wait(mut self, timeout: Duration, more: impl FnOnce() -> String) -> String {
        if wait_child(&mut self.child, timeout).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "{} did not finish within {timeout:?}; output so far:\n{}{}",
                self.label,
                self.output(),
                more()
            );
        }
        self.output()
    }
}

impl Drop for Debugger {
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
        "expected {needle:?} in output:\n{out}"
    );
}

/// Fails if `out` contains `needle`, showing the whole output.
#[track_caller]
pub fn assert_not_contains(out: &str, needle: &str) {
    assert!(
        !out.contains(needle),
        "did not expect {needle:?} in output:\n{out}"
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

/// The text after `marker` (for scripts that `echo` a marker between phases).
#[track_caller]
pub fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    match text.find(marker) {
        Some(at) => &text[at + marker.len()..],
        None => panic!("marker {marker:?} not in output:\n{text}"),
    }
}

/// The text after `start` up to the next `end` (or the end of `text`).
#[track_caller]
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let rest = after(text, start);
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Register values by name, from gdb `info registers` lines ("cr0   0x80010033   [ PE ... ]",
/// the first value column) or LLDB `register read` lines ("cr0 = 0x0000000080010033").
/// Later lines win.
pub fn registers(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let mut value = words.next()?;
            if value == "=" {
                value = words.next()?;
            }
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            Some((name.to_string(), parse_num(value)?))
        })
        .collect()
}

/// Fails unless register `name` was shown with `value` (in `regs`, parsed from `text`).
#[track_caller]
pub fn assert_reg(regs: &BTreeMap<String, u64>, name: &str, value: u64, text: &str) {
    assert_eq!(
        regs.get(name).copied(),
        Some(value),
        "{name} should be {value:#x}; output:\n{text}"
    );
}

/// Boots `guest_name`, runs `script` in gdb on it, checks that the script's `kill` ended
/// kvmgdb with status 0, and returns gdb's output.
pub fn guest_session(test: &str, guest_name: &str, script: &str) -> String {
    require_kvm_and_gdb();
    let dir = TestDir::new(test);
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest(guest_name));
    let out = k.gdb(&dir, script, &guest(guest_name));
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
    out
}

/// [`guest_session`] on demo.elf.
pub fn demo_session(test: &str, script: &str) -> String {
    guest_session(test, "demo.elf", script)
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
