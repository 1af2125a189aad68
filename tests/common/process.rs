//! The kvmgdb child process: started with a stub, its first line parsed, its stderr
//! collected, killed on drop; and kvmgdb run to completion without a debugger.

use super::{KVMGDB_TIMEOUT, POLL_INTERVAL, TestDir, guest, kvmgdb_bin};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
        let mut args: Vec<String> = vec!["--gdb".into(), gdb_arg, "--serial".into()];
        args.push(serial.display().to_string());
        if boot.no_wait {
            args.push("--no-wait".into());
        }
        args.extend(boot.extra.iter().map(|a| a.to_string()));
        if let Some(k) = &boot.kernel {
            args.push(k.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let this = Kvmgdb::start_args(dir, &args, serial);
        let expected_word = if boot.no_wait {
            "running; attach gdb on "
        } else {
            "waiting at the entry point for gdb on "
        };
        assert!(
            this.first_line
                .starts_with(&format!("kvmgdb: {expected_word}")),
            "unexpected first line: {:?}",
            this.first_line
        );
        this
    }

    /// Starts kvmgdb with exactly `args` (either command-line form), its COM1 going to
    /// `serial` (which `args` must say), and waits for the line that says where the stub
    /// listens; the lines before it (notes) stay in [`Kvmgdb::stderr`].
    pub fn start_args(dir: &TestDir, args: &[&str], serial: PathBuf) -> Kvmgdb {
        let mut child = Command::new(kvmgdb_bin())
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kvmgdb_bin().display()));

        // A thread collects stderr for the whole run and hands over the stub's line.
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let collected = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut first = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push_str(&format!("{line}\n"));
                let is_stub_line = line.contains(" gdb on ") && line.contains("; connect with: ");
                if is_stub_line && let Some(tx) = first.take() {
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
                    "kvmgdb {args:?} printed no stub line within {KVMGDB_TIMEOUT:?} (exit status: {status:?}); stderr:\n{}",
                    this.stderr()
                );
            }
        };
        // "kvmgdb: waiting at the entry point for gdb on ADDR; connect with: gdb ELF
        // [-ex 'set architecture ARCH'] -ex 'target remote TARGET'"
        let parsed = (|| {
            let listen_addr = first_line.split(" on ").nth(1)?.split(';').next()?;
            let rest = first_line.split("; connect with: gdb ").nth(1)?;
            let (elf, _) = rest.split_once(" -ex '")?;
            let target = rest
                .rsplit_once("-ex 'target remote ")?
                .1
                .strip_suffix('\'')?;
            Some((
                listen_addr.to_string(),
                PathBuf::from(elf),
                target.to_string(),
            ))
        })();
        let Some((listen_addr, symbol_file, target)) = parsed else {
            panic!("cannot parse kvmgdb's stub line: {first_line:?}");
        };
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

    /// kvmgdb's process id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
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
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            _ => return None,
        }
    }
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

/// Runs kvmgdb and checks that it failed with exit status `status` and exactly one
/// `kvmgdb: error:` line on stderr that contains each of `words`, and nothing on stdout.
#[track_caller]
pub fn assert_one_error(args: &[&str], status: u8, words: &[&str]) {
    let (code, stdout, stderr) = run_kvmgdb(args, KVMGDB_TIMEOUT);
    let what = format!("kvmgdb {args:?}: status {code}, stdout {stdout:?}, stderr {stderr:?}");
    assert!(!stderr.contains("panicked"), "{what}");
    assert_eq!(code, i32::from(status), "{what}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line; {what}");
    assert!(lines[0].starts_with("kvmgdb: error: "), "{what}");
    for w in words {
        assert!(lines[0].contains(w), "expected {w:?} in the error; {what}");
    }
    assert!(stdout.is_empty(), "{what}");
}
