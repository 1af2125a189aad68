//! The gdb remote stub: listens for clients, runs the gdbstub state machine over one
//! connection at a time, and waits on the socket and the vCPU event fd with poll(2), so it
//! uses no CPU while the guest runs.

pub mod arch;
pub mod breakpoints;
pub mod conn;
pub mod monitor;
pub mod qemu;
pub mod reg_access;
pub mod regs;
pub mod resume;
pub mod stop;
pub mod target;
pub mod target_xml;

use crate::config::GdbAddr;
use crate::vmm::Vm;
use crate::vmm::stop::VcpuStop;
use arch::{I386Full, X86_64Full};
use conn::{BufferedConn, Stream};
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use regs::GuestArch;
use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;
use target::{KvmTarget, PACKET_BUFFER};

/// Errors of the stub itself (not of one session).
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    /// The listening socket could not be created.
    #[error("cannot listen for gdb on {0}")]
    Bind(String, #[source] std::io::Error),
    /// poll(2) failed.
    #[error("poll failed")]
    Poll(#[source] std::io::Error),
    /// accept(2) failed.
    #[error("cannot accept a gdb connection")]
    Accept(#[source] std::io::Error),
}

/// A listening socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix domain socket (removed again on drop).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr` (not `GdbAddr::None`).
    pub fn bind(addr: &GdbAddr) -> Result<Listener, GdbError> {
        let err = |e| GdbError::Bind(addr.to_string(), e);
        match addr {
            GdbAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).map_err(err)?)),
            GdbAddr::Unix(p) => {
                // A stale socket file from an earlier run would make bind fail.
                if std::fs::metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(p);
                }
                Ok(Listener::Unix(
                    UnixListener::bind(p).map_err(err)?,
                    p.clone(),
                ))
            }
            GdbAddr::None => Err(err(std::io::Error::other("no address"))),
        }
    }

    /// The bound address, e.g. with the port the OS chose for port 0.
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> Result<Stream, GdbError> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
        .map_err(GdbError::Accept)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How the machine ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest exited through isa-debug-exit with this status.
    GuestExit(u32),
    /// gdb killed the machine.
    Killed,
    /// The guest stopped for good (halt, triple fault, KVM error) with no debugger attached,
    /// or the debugger detached from a machine frozen by such a stop.
    Fatal(VcpuStop),
}

/// Waits until one of `fds` is readable; returns which are.
fn poll_readable(fds: &[RawFd]) -> Result<Vec<bool>, GdbError> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()` pollfds.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if r >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(GdbError::Poll(e));
        }
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Serves gdb clients on `listener` until the machine ends. The vCPUs stay stopped at the
/// entry point until the first client resumes them, unless `run_now`.
pub fn serve(vm: &mut Vm, listener: &Listener, run_now: bool) -> Result<Outcome, GdbError> {
    if run_now {
        resume_all(vm);
    }
    loop {
        let ready = poll_readable(&[listener.raw_fd(), vm.event_fd()])?;
        if ready[1] {
            if let Some(outcome) = run_unattended(vm) {
                return Ok(outcome);
            }
        }
        if ready[0] {
            let stream = listener.accept()?;
            log::info!("gdb connected");
            let reason = session(vm, stream);
            log::info!("gdb session ended: {reason:?}");
            match reason {
                SessionEnd::Kill => return Ok(Outcome::Killed),
                SessionEnd::Exited(code) => return Ok(Outcome::GuestExit(code)),
                SessionEnd::Detach => {
                    vm.clear_breakpoints();
                    // A machine frozen by a fatal stop was kept only for inspection.
                    if let Some(stop) = (0..vm.vcpu_count()).find_map(|id| vm.frozen(id)) {
                        return Ok(Outcome::Fatal(stop));
                    }
                    resume_all(vm);
                }
            }
        }
    }
}

/// Runs the guest with no debugger until it ends.
pub fn run_without_gdb(vm: &mut Vm) -> Result<Outcome, GdbError> {
    resume_all(vm);
    loop {
        poll_readable(&[vm.event_fd()])?;
        if let Some(outcome) = run_unattended(vm) {
            return Ok(outcome);
        }
    }
}

/// Handles the vCPU stops that arrived while no debugger is attached: the run ends at an
/// exit or a fatal stop (with its exit status); anything else (breakpoints are gone once gdb
/// is) just carries on.
fn run_unattended(vm: &mut Vm) -> Option<Outcome> {
    while let Some(ev) = vm.poll_event() {
        match ev.stop {
            VcpuStop::Exit(code) => return Some(Outcome::GuestExit(code)),
            stop if stop.is_fatal() => return Some(Outcome::Fatal(stop)),
            _ => {
                if let Err(e) = vm.resume(&[(ev.id, false)]) {
                    log::error!("cannot resume vCPU {}: {e}", ev.id);
                }
            }
        }
    }
    None
}

fn resume_all(vm: &mut Vm) {
    let all: Vec<(usize, bool)> = (0..vm.vcpu_count())
        .filter(|&id| vm.frozen(id).is_none())
        .map(|id| (id, false))
        .collect();
    if let Err(e) = vm.resume(&all) {
        log::error!("cannot resume the guest: {e}");
    }
}

/// How one gdb session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionEnd {
    /// gdb detached, disconnected or died: the guest runs on.
    Detach,
    /// gdb asked to kill the machine.
    Kill,
    /// The guest exited during the session.
    Exited(u32),
}

/// One gdb connection. The VM is stopped first; the register layout follows the image.
fn session(vm: &mut Vm, stream: Stream) -> SessionEnd {
    let events = vm.stop_all();
    let exited = events.iter().find_map(|e| match e.stop {
        VcpuStop::Exit(c) => Some(c),
        _ => None,
    });
    if let Some(code) = exited {
        return SessionEnd::Exited(code);
    }
    let conn = BufferedConn::new(stream);
    let result = if vm.boot_info().image_is_32bit {
        run_session::<I386Full>(vm, conn)
    } else {
        run_session::<X86_64Full>(vm, conn)
    };
    match result {
        Ok(end) => end,
        Err(e) => {
            log::warn!("gdb session failed: {e}; treating it as a detach");
            if vm.any_running() {
                vm.stop_all();
            }
            SessionEnd::Detach
        }
    }
}

/// How long the stub spins for a vCPU stop after resuming before it sleeps in poll(2):
/// long enough for a single step (one exit, ~7 µs on PVM) and its thread hand-offs.
const STOP_SPIN: Duration = Duration::from_micros(100);

/// How long the stub polls the socket without sleeping for the client's next packet.
const PACKET_SPIN: Duration = Duration::from_micros(100);

type SessionResult = Result<SessionEnd, Box<dyn std::error::Error>>;

/// Input waiting for the state machine: plain bytes, or a QEMU packet we answer ourselves.
enum Input {
    Byte(u8),
    Qemu(String),
}

fn queue_input(splitter: &mut qemu::PacketSplitter, bytes: &[u8], inbuf: &mut VecDeque<Input>) {
    let mut parts = Vec::new();
    splitter.push(bytes, &mut parts);
    for part in parts {
        match part {
            qemu::Split::Forward(b) => inbuf.extend(b.into_iter().map(Input::Byte)),
            qemu::Split::Packet(p) => inbuf.push_back(Input::Qemu(p)),
        }
    }
}

fn answer_qemu(
    conn: &mut BufferedConn,
    vm: &mut Vm,
    splitter: &qemu::PacketSplitter,
    packet: &str,
) -> std::io::Result<()> {
    use gdbstub::conn::Connection;
    let reply = qemu::answer(vm, packet);
    conn.write_all(&qemu::frame(&reply, splitter.acks()))?;
    conn.flush()
}

fn run_session<A: GuestArch>(vm: &mut Vm, conn: BufferedConn) -> SessionResult {
    let mut target = KvmTarget::<A>::new(vm);
    let gdb = GdbStub::<KvmTarget<A>, BufferedConn>::builder(conn)
        .packet_buffer_size(PACKET_BUFFER)
        .build()?;
    let mut sm = gdb.run_state_machine(&mut target)?;
    let mut inbuf: VecDeque<Input> = VecDeque::new();
    let mut splitter = qemu::PacketSplitter::default();
    let mut readbuf = vec![0u8; 64 * 1024];
    let mut exit_code = None;
    // Whether this run of the guest has had its short spin for a quick stop already.
    let mut spun = false;
    loop {
        sm = match sm {
            GdbStubStateMachine::Idle(mut g) => {
                spun = false;
                if inbuf.is_empty() {
                    let n = g
                        .borrow_conn()
                        .stream()
                        .read_some_spinning(&mut readbuf, PACKET_SPIN)?;
                    if n == 0 {
                        return Ok(SessionEnd::Detach);
                    }
                    queue_input(&mut splitter, &readbuf[..n], &mut inbuf);
                }
                match inbuf.pop_front() {
                    Some(Input::Byte(byte)) => g.incoming_data(&mut target, byte)?,
                    Some(Input::Qemu(packet)) => {
                        answer_qemu(g.borrow_conn(), target.vm, &splitter, &packet)?;
                        g.into()
                    }
                    None => g.into(),
                }
            }
            GdbStubStateMachine::Running(mut g) => {
                if let Some(input) = inbuf.pop_front() {
                    match input {
                        Input::Byte(byte) => g.incoming_data(&mut target, byte)?,
                        Input::Qemu(packet) => {
                            answer_qemu(g.borrow_conn(), target.vm, &splitter, &packet)?;
                            g.into()
                        }
                    }
                } else {
                    let sock = g.borrow_conn().stream().raw_fd();
                    let ready = if !spun && target.vm.spin_for_event(STOP_SPIN) {
                        vec![false, true]
                    } else {
                        poll_readable(&[sock, target.vm.event_fd()])?
                    };
                    spun = true;
                    if ready[1] {
                        if let Some(ev) = target.vm.poll_event() {
                            let mut events = vec![ev];
                            events.extend(target.vm.stop_all());
                            if let Some(VcpuStop::Exit(code)) = events
                                .iter()
                                .map(|e| e.stop)
                                .find(|s| matches!(s, VcpuStop::Exit(_)))
                            {
                                exit_code = Some(code);
                            }
                            match stop::choose::<A>(&events, false) {
                                Some(reason) => {
                                    let state = stop::reporting_state(&events);
                                    let regs = stop::expedited::<A>(&state);
                                    let mut iter = regs
                                        .iter()
                                        .map(|(id, bytes)| (id.clone(), bytes.as_slice()));
                                    g.report_stop_with_regs(&mut target, reason, &mut iter)?
                                }
                                None => {
                                    // Only kicks: nothing to report; carry on running.
                                    let all: Vec<(usize, bool)> =
                                        events.iter().map(|e| (e.id, false)).collect();
                                    target.vm.resume(&all)?;
                                    g.into()
                                }
                            }
                        } else {
                            g.into()
                        }
                    } else if ready[0] {
                        let n = g.borrow_conn().stream().read_some(&mut readbuf)?;
                        if n == 0 {
                            target.vm.stop_all();
                            return Ok(SessionEnd::Detach);
                        }
                        queue_input(&mut splitter, &readbuf[..n], &mut inbuf);
                        g.into()
                    } else {
                        g.into()
                    }
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                let events = target.vm.stop_all();
                let reason = stop::choose::<A>(&events, true).unwrap_or(
                    MultiThreadStopReason::SignalWithThread {
                        tid: target::tid_of(0),
                        signal: Signal::SIGINT,
                    },
                );
                g.interrupt_handled(&mut target, Some(reason))?
            }
            GdbStubStateMachine::Disconnected(mut g) => {
                return Ok(match g.get_reason() {
                    DisconnectReason::Kill => {
                        // gdb sends `vKill;pid` and waits for OK; gdbstub answers only in
                        // extended mode. A stray OK after a plain `k` is harmless: the
                        // connection closes next.
                        use gdbstub::conn::Connection;
                        let conn = g.borrow_conn();
                        let _ = conn.write_all(b"$OK#9a");
                        let _ = conn.flush();
                        SessionEnd::Kill
                    }
                    DisconnectReason::TargetExited(code) => {
                        SessionEnd::Exited(exit_code.unwrap_or(code.into()))
                    }
                    DisconnectReason::TargetTerminated(_) => SessionEnd::Kill,
                    DisconnectReason::Disconnect => SessionEnd::Detach,
                });
            }
        };
    }
}
