//! One gdb session: the gdbstub state machine driven over one connection, the QEMU
//! packets taken out of the byte stream and answered here, and the spin/poll policy that
//! keeps quick stops quick without spinning a core while the guest runs.

use super::conn::{BufferedConn, Stream};
use super::qemu;
use super::regs::layout::Layout;
use super::regs::layout::{I386Full, X86_64Full};
use super::stop;
use super::target::{KvmTarget, PACKET_BUFFER};
use super::threads;
use crate::runner::poll_readable;
use crate::vmm::Vm;
use crate::vmm::stop::VcpuStop;
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use std::collections::VecDeque;
use std::time::Duration;

/// How one gdb session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// gdb detached, disconnected or died: the guest runs on.
    Detach,
    /// gdb asked to kill the machine.
    Kill,
    /// The guest exited during the session.
    Exited(u32),
}

/// One gdb connection. The VM is stopped first; the register layout follows the image.
pub fn session(vm: &mut Vm, stream: Stream) -> SessionEnd {
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

fn run_session<A: Layout>(vm: &mut Vm, conn: BufferedConn) -> SessionResult {
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
                            match stop::reported(&events, false) {
                                Some(ev) => {
                                    target.selection.stopped(ev.id);
                                    let reason = stop::to_gdb::<A>(ev);
                                    let regs = stop::expedited::<A>(&ev.state);
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
                let reason = match stop::reported(&events, true) {
                    Some(ev) => {
                        target.selection.stopped(ev.id);
                        stop::to_gdb::<A>(ev)
                    }
                    None => MultiThreadStopReason::SignalWithThread {
                        tid: threads::tid_of(target.selection.vcpu()),
                        signal: Signal::SIGINT,
                    },
                };
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
