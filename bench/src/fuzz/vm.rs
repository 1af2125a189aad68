//! The VM under test: kvmgdb on its embedded demo guest with the stub on
//! `--gdb 127.0.0.1:0`, the port the OS chose read back from kvmgdb's first stderr line, and
//! its stderr kept for the panic check.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Errors starting or reaching the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The process could not be started.
    #[error("cannot start {0}")]
    Spawn(String, #[source] std::io::Error),
    /// kvmgdb did not say where it listens.
    #[error("kvmgdb printed no listening address within {0:?}; stderr: {1}")]
    NoAddress(Duration, String),
    /// The stub refused a connection.
    #[error("cannot connect to the stub on port {0}")]
    Connect(u16, #[source] std::io::Error),
}

/// How to run kvmgdb: a program and the arguments that come before kvmgdb's own.
#[derive(Clone, Debug)]
pub struct Program {
    /// The executable.
    pub path: PathBuf,
    /// Leading arguments (`--exec-kvmgdb` when the fuzzer runs kvmgdb itself).
    pub prefix: Vec<String>,
}

/// A running kvmgdb, killed on drop.
pub struct Vm {
    child: Child,
    /// The stub's port on 127.0.0.1.
    pub port: u16,
    stderr: Arc<Mutex<String>>,
    /// Set once the process has been seen to exit.
    status: Option<ExitStatus>,
}

/// How long kvmgdb may take to boot and print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl Vm {
    /// Boots the embedded demo (guest RAM `memory`), waiting at the entry point for gdb.
    pub fn start(program: &Program, memory: &str) -> Result<Vm, VmError> {
        let mut child = Command::new(&program.path)
            .args(&program.prefix)
            .args(["--gdb", "127.0.0.1:0", "--serial", "none", "-m", memory])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| VmError::Spawn(program.path.display().to_string(), e))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let collected = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut first = Some(tx);
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut s) = collected.lock() {
                        // Keep the head (the first error) and bound the rest.
                        if s.len() < 64 * 1024 {
                            s.push_str(&line);
                            s.push('\n');
                        }
                    }
                    if let Some(tx) = first.take() {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let mut vm = Vm {
            child,
            port: 0,
            stderr,
            status: None,
        };
        // "kvmgdb: waiting at the entry point for gdb on 127.0.0.1:PORT; connect with: …"
        let port = rx
            .recv_timeout(START_TIMEOUT)
            .ok()
            .and_then(|line| {
                let addr = line.split(" on ").nth(1)?.split(';').next()?;
                addr.strip_prefix("127.0.0.1:")?.parse::<u16>().ok()
            })
            .filter(|&p| p != 0);
        match port {
            Some(p) => vm.port = p,
            None => return Err(VmError::NoAddress(START_TIMEOUT, vm.stderr())),
        }
        Ok(vm)
    }

    /// Connects a new client.
    pub fn connect(&self) -> Result<TcpStream, VmError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| VmError::Connect(self.port, e))
    }

    /// Everything kvmgdb wrote on stderr so far (bounded).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// True when stderr shows a Rust panic.
    pub fn panicked(&self) -> bool {
        self.stderr().contains("panicked")
    }

    /// The exit status once the process has ended; None while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Resident memory of the process in KiB (VmRSS), 0 if unreadable.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
