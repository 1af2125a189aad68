//! A small, self-contained harness for the register-layout and LLDB tests: it starts
//! `kvmgdb` and a debugger (the real `gdb` or `lldb`) as child processes, each bounded by a
//! timeout and killed on drop. Each test gets its own stub on a port the OS picks, so tests
//! run in parallel.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long one debugger run may take.
pub const DEBUGGER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long kvmgdb may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A guest image built by `build.rs`.
pub fn guest(name: &str) -> PathBuf {
    let path = kvmgdb::guests::guest_dir().join(name);
    assert!(path.is_file(), "guest image {} is missing", path.display());
    path
}

/// A command file from `gdb-scripts/`.
pub fn script(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("gdb-scripts")
        .join(name);
    assert!(path.is_file(), "gdb script {} is missing", path.display());
    path
}

/// Fails the test unless /dev/kvm can be opened.
pub fn require_kvm() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("KVM not available: cannot open /dev/kvm: {e}");
    }
}

/// Fails the test unless `tool --version` runs (`package` is the Debian package to install).
pub fn require_tool(tool: &str, package: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{tool} is not installed: apt-get install -y {package} (.ci/run installs it)"
    );
}

/// A running kvmgdb waiting for a debugger, killed on drop.
pub struct Stub {
    child: Child,
    /// `HOST:PORT` as kvmgdb printed it.
    pub addr: String,
}

impl Stub {
    /// Boots `kernel` with the stub on a free loopback port.
    pub fn start(kernel: &Path) -> Stub {
        require_kvm();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvmgdb"))
            .args(["--gdb", "127.0.0.1:0", "--serial", "none"])
            .arg(kernel)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start kvmgdb");
        let stderr = child.stderr.take().expect("kvmgdb stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr so kvmgdb never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("kvmgdb printed nothing within {START_TIMEOUT:?}")
        });
        // "kvmgdb: waiting at the entry point for gdb on ADDR; connect with: ..."
        let addr = first
            .split_once("gdb on ")
            .and_then(|(_, rest)| rest.split(';').next())
            .map(str::to_string)
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("unexpected first line from kvmgdb: {first}")
            });
        Stub { child, addr }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a debugger run printed.
pub struct Output {
    /// stdout and stderr, interleaved as far as pipes allow.
    pub text: String,
}

/// Runs `cmd` to completion, killing it after [`DEBUGGER_TIMEOUT`].
pub fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let (tx, rx) = mpsc::channel();
    for mut pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            let _ = tx.send(s);
        });
    }
    drop(tx);
    let deadline = Instant::now() + DEBUGGER_TIMEOUT;
    loop {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text: String = rx.iter().collect();
            panic!("{shown} timed out after {DEBUGGER_TIMEOUT:?}; output:\n{text}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Output {
        text: rx.iter().collect(),
    }
}

/// Runs gdb in batch mode against `stub`, with `elf`'s symbols and the command file `file`.
pub fn gdb(stub: &Stub, elf: &Path, file: &Path) -> Output {
    require_tool("gdb", "gdb");
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-batch", "-ex"])
        .arg(format!("target remote {}", stub.addr))
        .arg("-x")
        .arg(file)
        .arg(elf);
    run(cmd)
}

/// Runs gdb in batch mode against `stub` with `-ex` commands.
pub fn gdb_ex(stub: &Stub, elf: &Path, commands: &[&str]) -> Output {
    require_tool("gdb", "gdb");
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-batch", "-ex"])
        .arg(format!("target remote {}", stub.addr));
    for c in commands {
        cmd.arg("-ex").arg(c);
    }
    cmd.arg(elf);
    run(cmd)
}

/// Runs LLDB in batch mode against `stub`: `gdb-remote`, then `commands`.
pub fn lldb(stub: &Stub, elf: &Path, commands: &[&str]) -> Output {
    require_tool("lldb", "lldb");
    let mut cmd = Command::new("lldb");
    cmd.arg("--batch")
        .arg("--no-lldbinit")
        .arg(elf)
        .arg("-o")
        .arg(format!("gdb-remote {}", stub.addr));
    for c in commands {
        cmd.arg("-o").arg(c);
    }
    run(cmd)
}

/// The text after the line `marker` (for scripts that `echo` a marker between phases).
pub fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    match text.find(marker) {
        Some(at) => &text[at + marker.len()..],
        None => panic!("marker {marker:?} not in output:\n{text}"),
    }
}

/// Register values from gdb `info registers` lines ("cr0   0x80010033   [ PE ... ]") or
/// LLDB `register read` lines ("cr0 = 0x0000000080010033"), by name. Later lines win.
pub fn registers(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(mut value)) = (words.next(), words.next()) else {
            continue;
        };
        if value == "=" {
            match words.next() {
                Some(v) => value = v,
                None => continue,
            }
        }
        let Some(hex) = value.strip_prefix("0x") else {
            continue;
        };
        if let Ok(v) = u64::from_str_radix(hex, 16) {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// Asserts that register `name` was shown with `value`.
pub fn assert_reg(regs: &BTreeMap<String, u64>, name: &str, value: u64, text: &str) {
    assert_eq!(
        regs.get(name).copied(),
        Some(value),
        "{name} should be {value:#x}; output:\n{text}"
    );
}

/// Asserts that `text` contains `needle`.
pub fn assert_has(text: &str, needle: &str) {
    assert!(
        text.contains(needle),
        "expected {needle:?} in output:\n{text}"
    );
}
