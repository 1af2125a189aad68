//! One gdb session: the gdbstub state machine driven over one connection behind the
//! packet front ([`super::front`]), which frames, checks and answers what gdbstub would
//! choke on; a fresh gdbstub when one fails a packet all the same; and the spin/poll
//! policy that keeps quick stops quick without spinning a core while the guest runs.

use super::conn::{BufferedConn, SharedConn, Stream};
use super::front::{self, Ctx, E_FAILED, Front, INTERRUPT, Unit, Verdict};
use super::nonstop::{self, Handled, NonStop, Waited};
use super::qemu;
use super::regs::GdbArch;
use super::regs::layout::Layout;
use super::regs::layout::{I386Full, X86_64Full};
use super::stop::{self, StopQueue};
use super::target::{KvmTarget, PACKET_BUFFER};
use super::threads;
use crate::runner::poll_readable;
use crate::vmm::stop::{VcpuEvent, VcpuStop};
use crate::vmm::{Vm, VmError};
use gdbstub::arch::{Arch, Registers};
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, GdbStubError, MultiThreadStopReason};
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

/// One gdb connection, served the register layout `arch`. The VM is stopped first.
pub fn session(vm: &mut Vm, stream: Stream, arch: GdbArch) -> SessionEnd {
    let events = vm.stop_all();
    let exited = events.iter().find_map(|e| match e.stop {
        VcpuStop::Exit(c) => Some(c),
        _ => None,
    });
    if let Some(code) = exited {
        return SessionEnd::Exited(code);
    }
    let mut queue = StopQueue::default();
    let attach = attach_stop(vm, &mut queue, events);
    warn_narrow_layout(vm, attach.vcpu, arch);
    let conn = BufferedConn::new(stream);
    let result = match arch {
        GdbArch::I386 => run_session::<I386Full>(vm, conn, attach, queue),
        GdbArch::X86_64 => run_session::<X86_64Full>(vm, conn, attach, queue),
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

/// Says on stderr when the i386 layout serves a vCPU in 64-bit mode (a 32-bit image that
/// switched to long mode, as Xen does): gdb then sees the low halves of the registers, and
/// only the x86-64 layout shows them whole.
fn warn_narrow_layout(vm: &Vm, vcpu: usize, arch: GdbArch) {
    use crate::x86::Efer;
    let long_mode = vm
        .state(vcpu)
        .is_ok_and(|s| Efer::from_bits_retain(s.sregs.efer).contains(Efer::LMA));
    if arch == GdbArch::I386 && long_mode {
        eprintln!(
            "kvmgdb: note: the guest runs in long mode but gdb gets the i386 register layout (the image is 32-bit), so registers show their low 32 bits; --gdb-arch x86-64 with gdb's `set architecture i386:x86-64` shows them whole"
        );
    }
}

/// The machine's current stop, as the last stop reply told gdb (or would have): what `?`
/// answers ("Packets", `?`). The registers are not kept: `?` reads them when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LastStop {
    /// The vCPU the stop reply names.
    pub(super) vcpu: usize,
    /// Its stop; None for the stop the attach itself made.
    pub(super) stop: Option<VcpuStop>,
}

/// The stop a new session starts in. A vCPU's own stop that raced the attach, or the one
/// that froze a vCPU, is reported as itself; else the attach stopped the machine, which
/// QEMU's gdbstub reports as SIGTRAP for the first CPU, and so do we. Other vCPUs' own
/// stops among `events` go to `queue`.
fn attach_stop(vm: &Vm, queue: &mut StopQueue, events: Vec<VcpuEvent>) -> LastStop {
    if let Some(ev) = queue.report(events, false) {
        return LastStop {
            vcpu: ev.id,
            stop: Some(ev.stop),
        };
    }
    match (0..vm.vcpu_count()).find_map(|id| Some((id, vm.frozen(id)?))) {
        Some((vcpu, stop)) => LastStop {
            vcpu,
            stop: Some(stop),
        },
        None => LastStop {
            vcpu: 0,
            stop: None,
        },
    }
}

/// Appends `n` as gdbstub writes numbers in stop replies: hex, whole bytes, leading zero
/// bytes dropped (so thread 1 is `01`).
fn push_num(out: &mut Vec<u8>, n: u64) {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take(7).take_while(|&&b| b == 0).count();
    push_hex(out, &bytes[skip..]);
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
}

/// The stop reply for `last`, worded as gdbstub words the live one ("Stop Reply Packets":
/// `T` signal, `thread:`, the reason's own field), with the expedited registers read now
/// from the vCPU's state (so a register written since shows its new value).
pub(super) fn status_reply<A: Layout>(
    vm: &Vm,
    last: LastStop,
    multiprocess: bool,
) -> Result<Vec<u8>, VmError> {
    use crate::vmm::debug::watch::WatchKind;
    use gdbstub::arch::RegId;
    let state = vm.state(last.vcpu)?;
    let signal = last.stop.as_ref().map_or(Signal::SIGTRAP, stop::signal);
    let mut out = Vec::with_capacity(96);
    out.push(b'T');
    push_num(&mut out, signal.0.into());
    out.extend_from_slice(b"thread:");
    if multiprocess {
        out.extend_from_slice(b"p01.");
    }
    push_num(&mut out, threads::tid_of(last.vcpu).get() as u64);
    out.push(b';');
    match last.stop {
        Some(VcpuStop::SwBreakpoint(_)) => out.extend_from_slice(b"swbreak:;"),
        Some(VcpuStop::HwBreakpoint { .. }) => out.extend_from_slice(b"hwbreak:;"),
        Some(VcpuStop::Watch { kind, addr }) => {
            out.extend_from_slice(match kind {
                WatchKind::Write => b"watch:",
                WatchKind::Read => b"rwatch:",
                WatchKind::Access => b"awatch:",
            });
            push_num(&mut out, addr);
            out.push(b';');
        }
        _ => {}
    }
    for (id, value) in stop::expedited::<A>(&state) {
        if let Some(n) = id.to_raw_id() {
            push_num(&mut out, n as u64);
            out.push(b':');
            push_hex(&mut out, &value);
            out.push(b';');
        }
    }
    Ok(out)
}

/// How long the stub spins for a vCPU stop after resuming before it sleeps in poll(2):
/// long enough for a single step (one exit, ~7 µs on PVM) and its thread hand-offs.
const STOP_SPIN: Duration = Duration::from_micros(100);

/// How long the stub polls the socket without sleeping for the client's next packet.
const PACKET_SPIN: Duration = Duration::from_micros(100);

/// [`PACKET_SPIN`] while a host core is free beside the running vCPUs (in non-stop mode
/// some run while the client is served), none otherwise.
fn packet_spin(vm: &Vm) -> Duration {
    if vm.spare_core() {
        PACKET_SPIN
    } else {
        Duration::ZERO
    }
}

type SessionResult = Result<SessionEnd, Box<dyn std::error::Error>>;

/// gdbstub's state machine over our target and the shared connection.
type Machine<'v, A> = GdbStubStateMachine<'static, KvmTarget<'v, A>, SharedConn>;

/// gdbstub's error for a packet it failed.
type StubError = GdbStubError<VmError, std::io::Error>;

/// Bytes read from the client and not yet through the front.
struct Input {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Input {
    fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    fn filled(&mut self, n: usize) {
        self.pos = 0;
        self.end = n;
    }

    /// The next unit the front finds in the input.
    fn next(&mut self, front: &mut Front) -> Unit {
        let (n, unit) = front.next(&self.buf[self.pos..self.end]);
        self.pos += n;
        unit
    }
}

/// A fresh gdbstub on the session's connection.
fn new_machine<'v, A: Layout>(
    conn: &SharedConn,
    target: &mut KvmTarget<'v, A>,
) -> Result<Machine<'v, A>, Box<dyn std::error::Error>> {
    let gdb = GdbStub::<KvmTarget<A>, SharedConn>::builder(conn.clone())
        .packet_buffer_size(PACKET_BUFFER)
        .build()?;
    Ok(gdb.run_state_machine(target)?)
}

/// Passes one packet to gdbstub, framed, byte by byte as it takes input.
fn feed<'v, A: Layout>(
    mut sm: Machine<'v, A>,
    target: &mut KvmTarget<'v, A>,
    body: &[u8],
) -> Result<Machine<'v, A>, StubError> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let sum = front::checksum(body);
    let tail = [b'#', HEX[usize::from(sum >> 4)], HEX[usize::from(sum & 15)]];
    for &b in std::iter::once(&b'$').chain(body).chain(&tail) {
        sm = match sm {
            GdbStubStateMachine::Idle(g) => g.incoming_data(target, b)?,
            GdbStubStateMachine::Running(g) => g.incoming_data(target, b)?,
            other => return Ok(other),
        };
    }
    Ok(sm)
}

/// Replaces a gdbstub that failed a packet: a fresh one, told (muted) what the old one
/// had learnt from the client, so the session goes on where it was.
fn restart<'v, A: Layout>(
    conn: &SharedConn,
    target: &mut KvmTarget<'v, A>,
    front: &Front,
) -> Result<Machine<'v, A>, Box<dyn std::error::Error>> {
    let mut sm = new_machine(conn, target)?;
    conn.get().set_muted(true);
    for p in front.replay() {
        sm = feed(sm, target, p.as_bytes())?;
    }
    conn.get().set_muted(false);
    Ok(sm)
}

/// Whether `G` data fits the register layout `A`.
fn regs_fit<A: Layout>(bytes: &[u8]) -> bool {
    let mut regs = <A as Arch>::Registers::default();
    regs.gdb_deserialize(bytes).is_ok()
}

/// Handles one complete packet: non-stop mode's ([`super::nonstop`]) first, then as the
/// front decides; gdbstub's qSupported reply gets `QNonStop+` added.
fn packet<'v, A: Layout>(
    sm: Machine<'v, A>,
    target: &mut KvmTarget<'v, A>,
    front: &mut Front,
    conn: &SharedConn,
    last: &mut LastStop,
    ns: &mut NonStop,
) -> Result<Machine<'v, A>, Box<dyn std::error::Error>> {
    let now = (last.vcpu, last.stop);
    let forward = match ns.packet::<A>(target.vm, front.body(), front.multiprocess(), now) {
        Handled::No => false,
        Handled::Forward => true,
        Handled::Reply(r) => {
            conn.get().reply(&r, front.acks())?;
            return Ok(sm);
        }
        Handled::AllStop(vcpu, stop) => {
            *last = LastStop { vcpu, stop };
            conn.get().reply(b"OK", front.acks())?;
            return Ok(sm);
        }
    };
    let supported = front.body().starts_with(b"qSupported");
    if supported {
        conn.get().hold();
    }
    let running = ns.running(target.vm);
    let result = front_packet(sm, target, front, conn, *last);
    if supported {
        let held = conn.get().take_held();
        match nonstop::advertise(&held) {
            Some((body, ack)) => conn.get().reply(&body, ack)?,
            None => conn.get().send_control(&held)?,
        }
    }
    if forward || ns.on() {
        ns.after::<A>(target.vm, conn, front.multiprocess(), &running)?;
    }
    result
}

/// Handles one complete packet: answered here, or passed to gdbstub as the front decides.
fn front_packet<'v, A: Layout>(
    sm: Machine<'v, A>,
    target: &mut KvmTarget<'v, A>,
    front: &mut Front,
    conn: &SharedConn,
    last: LastStop,
) -> Result<Machine<'v, A>, Box<dyn std::error::Error>> {
    let running = matches!(sm, GdbStubStateMachine::Running(_));
    let ctx = Ctx {
        vcpus: target.vm.vcpu_count(),
        addr_max: if std::mem::size_of::<A::Usize>() == 4 {
            u32::MAX.into()
        } else {
            u64::MAX
        },
        running,
        regs_fit: regs_fit::<A>,
    };
    let verdict = front.classify(&ctx);
    let body = match verdict {
        Verdict::Reply(r) => {
            log::debug!(
                "answering {:?} with {r:?}",
                String::from_utf8_lossy(front.body())
            );
            conn.get().reply(r.as_bytes(), front.acks())?;
            return Ok(sm);
        }
        Verdict::Qemu => {
            let reply = qemu::answer(target.vm, &String::from_utf8_lossy(front.body()));
            conn.get().reply(reply.as_bytes(), front.acks())?;
            return Ok(sm);
        }
        // gdbstub's own answer to `?` changes none of its state (unlike a stop it reports,
        // which selects the thread): answering here leaves it as it was.
        Verdict::Status => {
            let reply = status_reply::<A>(target.vm, last, front.multiprocess());
            match reply {
                Ok(r) => conn.get().reply(&r, front.acks())?,
                Err(e) => {
                    log::warn!("cannot read the stopped vCPU for `?`: {e}");
                    conn.get().reply(E_FAILED.as_bytes(), front.acks())?;
                }
            }
            return Ok(sm);
        }
        Verdict::Forward => front.body(),
        Verdict::Rewrite => front.rewritten(),
    };
    match feed(sm, target, body) {
        Ok(sm) => {
            front.commit();
            Ok(sm)
        }
        // While the guest runs the client waits for a stop reply, which a fresh gdbstub
        // could not send; a broken connection ends the session anyway.
        Err(e) if running || e.is_connection_error() => Err(e.into()),
        Err(e) => {
            // RSP manual, "Standard Replies": a packet the stub fails gets an error
            // reply; the session, the breakpoints and the stopped guest stay.
            log::warn!(
                "gdbstub failed {:?}: {e}; answering {E_FAILED}",
                String::from_utf8_lossy(body)
            );
            if target.vm.any_running() {
                target.vm.stop_all();
            }
            conn.get().discard();
            conn.get().reply(E_FAILED.as_bytes(), front.acks())?;
            restart(conn, target, front)
        }
    }
}

/// Handles what the front found outside packets.
fn control(unit: Unit, front: &Front, conn: &SharedConn) -> std::io::Result<()> {
    match unit {
        // "Packet Acknowledgment": in ack mode a `-` asks for our last packet again and
        // a packet we could not take gets one; without acks both sides stay silent.
        Unit::Nack if front.acks() => conn.get().retransmit(),
        Unit::Bad if front.acks() => conn.get().send_control(b"-"),
        Unit::Bad => {
            log::debug!("dropped a packet with a bad checksum or over PacketSize");
            Ok(())
        }
        // A Ctrl-C that raced a stop: the target is stopped already, so there is nothing
        // to interrupt (passing it on would make gdbstub report a stop on the next resume
        // at once, while the guest really runs).
        Unit::Interrupt => {
            log::debug!("Ctrl-C while stopped: ignored");
            Ok(())
        }
        _ => Ok(()),
    }
}

fn run_session<A: Layout>(
    vm: &mut Vm,
    conn: BufferedConn,
    attach: LastStop,
    queue: StopQueue,
) -> SessionResult {
    let conn = SharedConn::new(conn);
    let mut ns = NonStop::new(vm.vcpu_count());
    let mut target = KvmTarget::<A>::new(vm);
    target.queue = queue;
    let mut front = Front::new();
    let mut last = attach;
    let mut sm = if attach.vcpu == 0 {
        new_machine(&conn, &mut target)?
    } else {
        // The stop names another thread than the first, where gdbstub starts: select it,
        // as a reported stop would, so that `?` and gdbstub agree.
        target.selection.stopped(attach.vcpu);
        front.stopped(threads::tid_of(attach.vcpu).get());
        restart(&conn, &mut target, &front)?
    };
    let mut input = Input {
        buf: vec![0u8; 64 * 1024],
        pos: 0,
        end: 0,
    };
    let mut exit_code = None;
    // Whether this run of the guest has had its short spin for a quick stop already.
    let mut spun = false;
    loop {
        sm = match sm {
            GdbStubStateMachine::Idle(g) => {
                spun = false;
                if input.is_empty() && ns.on() {
                    let multiprocess = front.multiprocess();
                    match ns.wait::<A>(target.vm, &conn, &mut input.buf, multiprocess)? {
                        Waited::Input(0) => return Ok(SessionEnd::Detach),
                        Waited::Input(n) => input.filled(n),
                        Waited::Exited(code) => return Ok(SessionEnd::Exited(code)),
                    }
                } else if input.is_empty() {
                    let n = conn
                        .get()
                        .stream()
                        .read_some_spinning(&mut input.buf, packet_spin(target.vm))?;
                    if n == 0 {
                        return Ok(SessionEnd::Detach);
                    }
                    input.filled(n);
                }
                match input.next(&mut front) {
                    Unit::Packet => {
                        packet(g.into(), &mut target, &mut front, &conn, &mut last, &mut ns)?
                    }
                    unit => {
                        control(unit, &front, &conn)?;
                        g.into()
                    }
                }
            }
            GdbStubStateMachine::Running(g) => {
                if !input.is_empty() {
                    match input.next(&mut front) {
                        Unit::Interrupt => g.incoming_data(&mut target, INTERRUPT)?,
                        Unit::Packet => {
                            packet(g.into(), &mut target, &mut front, &conn, &mut last, &mut ns)?
                        }
                        unit => {
                            control(unit, &front, &conn)?;
                            g.into()
                        }
                    }
                } else {
                    let sock = conn.get().stream().raw_fd();
                    let ready = if !spun && target.vm.spin_for_event(STOP_SPIN) {
                        vec![false, true]
                    } else {
                        poll_readable(&[sock, target.vm.event_fd()])?
                    };
                    spun = true;
                    if ready[1] {
                        if let Some(ev) = target.vm.poll_event() {
                            let since = std::time::Instant::now();
                            let mut events = vec![ev];
                            events.extend(target.vm.stop_all());
                            log::debug!(
                                "vCPU {}'s stop: every vCPU stopped {:?} later",
                                events[0].id,
                                since.elapsed()
                            );
                            if let Some(VcpuStop::Exit(code)) = events
                                .iter()
                                .map(|e| e.stop)
                                .find(|s| matches!(s, VcpuStop::Exit(_)))
                            {
                                exit_code = Some(code);
                            }
                            let kicked: Vec<usize> = events.iter().map(|e| e.id).collect();
                            match target.queue.report(events, false) {
                                Some(ev) => {
                                    if target.queue.len() > 0 {
                                        log::debug!(
                                            "{} more stops queued behind vCPU {}'s",
                                            target.queue.len(),
                                            ev.id
                                        );
                                    }
                                    last = LastStop {
                                        vcpu: ev.id,
                                        stop: Some(ev.stop),
                                    };
                                    target.selection.stopped(ev.id);
                                    front.stopped(threads::tid_of(ev.id).get());
                                    let reason = stop::to_gdb::<A>(&ev);
                                    let regs = stop::expedited::<A>(&ev.state);
                                    let mut iter = regs
                                        .iter()
                                        .map(|(id, bytes)| (id.clone(), bytes.as_slice()));
                                    g.report_stop_with_regs(&mut target, reason, &mut iter)?
                                }
                                None => {
                                    // Only kicks (one can be left over from a stop-all
                                    // that raced a vCPU's own stop): nothing to report;
                                    // carry on as before, a step still a step.
                                    target.vm.rerun(&kicked);
                                    g.into()
                                }
                            }
                        } else {
                            g.into()
                        }
                    } else if ready[0] {
                        let n = conn.get().stream().read_some(&mut input.buf)?;
                        if n == 0 {
                            target.vm.stop_all();
                            return Ok(SessionEnd::Detach);
                        }
                        input.filled(n);
                        g.into()
                    } else {
                        g.into()
                    }
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                let since = std::time::Instant::now();
                let events = target.vm.stop_all();
                log::debug!("Ctrl-C: every vCPU stopped in {:?}", since.elapsed());
                let reason = match target.queue.report(events, true) {
                    Some(ev) => {
                        target.selection.stopped(ev.id);
                        last = LastStop {
                            vcpu: ev.id,
                            stop: Some(ev.stop),
                        };
                        stop::to_gdb::<A>(&ev)
                    }
                    None => {
                        last = LastStop {
                            vcpu: target.selection.vcpu(),
                            stop: Some(VcpuStop::Kicked),
                        };
                        MultiThreadStopReason::SignalWithThread {
                            tid: threads::tid_of(target.selection.vcpu()),
                            signal: Signal::SIGINT,
                        }
                    }
                };
                front.stopped(threads::tid_of(target.selection.vcpu()).get());
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
