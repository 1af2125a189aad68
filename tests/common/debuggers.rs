//! The real debuggers as child processes: gdb and LLDB in batch mode against a running
//! kvmgdb or alone, their output in one file per run, and the check that a gdb script ran.

use super::process::{Kvmgdb, wait_child};
use super::{DEBUGGER_TIMEOUT, POLL_INTERVAL, TestDir, script};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The debugger runs of a running kvmgdb.
impl Kvmgdb {
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

    /// [`Kvmgdb::gdb`] with `pre` commands (such as `set architecture i386:x86-64`) run
    /// before gdb connects.
    pub fn gdb_pre(&self, dir: &TestDir, pre: &[&str], script_name: &str, elf: &Path) -> String {
        let mut cmd = gdb_command(None, &[], pre, &[elf]);
        cmd.arg("-ex").arg(format!("target remote {}", self.target));
        cmd.arg("-x").arg(script(script_name));
        let out = Debugger::spawn(dir, script_name, cmd).finish(DEBUGGER_TIMEOUT, self);
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

    /// Kills the debugger with SIGKILL, as a crash or the OOM killer would (it gets no
    /// chance to detach), waits for it and returns its output.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
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
