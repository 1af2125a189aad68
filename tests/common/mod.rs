//! The integration-test harness: starts `kvmgdb` and the real debuggers (`gdb`, `lldb`) as
//! child processes, each bounded by a timeout and killed on drop, so a failing test leaves
//! nothing behind.
//!
//! Every test gets its own directory (the children's working directory, where `monitor dump`
//! writes relative paths), its own gdb port (port 0: the OS picks one) or Unix socket, and
//! its own serial file, so the tests can run in parallel.
//!
//! This file holds what every test needs (timeouts, paths, preconditions, the scratch
//! directory, whole sessions); `process.rs` the kvmgdb child process, `debuggers.rs` the
//! gdb and LLDB runs, `parse.rs` the readers of their output.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

mod debian;
mod debuggers;
mod parse;
mod process;

// The tests see one flat harness (`use common::*`); not every binary uses every part.
#[allow(unused_imports)]
pub use debian::*;
#[allow(unused_imports)]
pub use debuggers::*;
pub use parse::*;
pub use process::*;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
    require_tool_with(tool, package, "--version");
}

/// Fails the test unless `tool version_flag` runs (for tools without `--version`).
#[track_caller]
fn require_tool_with(tool: &str, package: &str, version_flag: &str) {
    match Command::new(tool)
        .arg(version_flag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "{tool} not installed: apt-get install -y {package} (`{tool} {version_flag}` failed: {status})"
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

/// Fails the test unless ACPICA's `iasl` is on PATH.
#[track_caller]
pub fn require_iasl() {
    require_tool_with("iasl", "acpica-tools", "-v");
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
