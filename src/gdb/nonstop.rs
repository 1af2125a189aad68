//! gdb's non-stop mode (RSP manual, "Remote Non-Stop"): one vCPU stopped at a breakpoint
//! while the others run on. gdbstub 0.7 has no non-stop mode (its `vCont;t` is
//! "unimplemented", an error that ends the session, and it knows neither `QNonStop`,
//! `vStopped` nor notifications), so it is built here beside the crate, as the QEMU
//! packets are ([`super::qemu`]): the session loop hands every packet to
//! [`NonStop::packet`] first, which answers the run-control ones itself (`QNonStop`,
//! `vCont`, `vStopped`, `?`) and lets gdbstub serve the rest (registers, memory,
//! breakpoints, threads), for gdbstub stays in its Idle state throughout: to it the
//! machine is stopped, and each access it makes is checked against the one vCPU it
//! touches (a running vCPU's registers are an error reply, never stale values; guest
//! memory is shared and readable while vCPUs run).
//!
//! Each stop is sent as a `%Stop` notification when no other is outstanding; gdb
//! acknowledges it with `vStopped`, answered by the next queued stop reply or `OK`
//! ("Notification Packets"). Breakpoint and watchpoint changes pause the running vCPUs
//! while gdbstub makes them (every vCPU applies the debug table before it re-enters the
//! guest), then run them on.

use super::conn::SharedConn;
use super::front::parse::{Id, PID, parse_hex, parse_thread, split_once};
use super::front::{E_INVAL, E_SRCH, checksum};
use super::regs::layout::Layout;
use crate::runner::poll_readable;
use crate::vmm::Vm;
use crate::vmm::stop::{VcpuEvent, VcpuStop};
use std::collections::VecDeque;

/// What the session loop does with a packet after [`NonStop::packet`].
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Not ours: the front and gdbstub take it as in all-stop mode.
    No,
    /// Answered with this reply body.
    Reply(Vec<u8>),
    /// Ours to prepare (the vCPUs are paused or stopped as it needs): now pass it on to
    /// the front and gdbstub, then call [`NonStop::after`].
    Forward,
    /// Non-stop mode ended (`QNonStop:0`): every vCPU is stopped, and this vCPU's stop
    /// (None: only the switch stopped it) is the one `?` reports in all-stop mode. Reply
    /// OK.
    AllStop(usize, Option<VcpuStop>),
}

/// What [`NonStop::wait`] returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// This many bytes from the client (0: it closed the connection; every vCPU is then
    /// stopped, as an all-stop session leaves the machine).
    Input(usize),
    /// The guest exited with this code; gdb has been told, every vCPU is stopped.
    Exited(u32),
}

/// One vCPU's part in a `vCont` packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Continue,
    Step,
    Stop,
}

/// The non-stop state of one session.
#[derive(Debug, Default)]
pub struct NonStop {
    on: bool,
    /// vCPUs whose stop gdb has not acknowledged, oldest first: the head is the stop last
    /// sent while `outstanding`.
    queue: VecDeque<usize>,
    /// A notification (or a `?` reply) was sent and its `vStopped` sequence has not ended
    /// with OK. Invariant: a non-empty queue is outstanding.
    outstanding: bool,
    /// Each vCPU's last stop (None: stopped by the attach or a `vCont;t`, reported as
    /// signal 0).
    stops: Vec<Option<VcpuStop>>,
    /// vCPUs a `vCont;t` kicked whose stop has not arrived.
    asked: Vec<bool>,
    /// vCPUs paused by [`NonStop::packet`] for gdbstub's packet, run on by
    /// [`NonStop::after`].
    paused: Vec<usize>,
}

impl NonStop {
    /// All-stop mode, for a session on `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> NonStop {
        NonStop {
            stops: vec![None; vcpus],
            asked: vec![false; vcpus],
            ..NonStop::default()
        }
    }

    /// Whether gdb switched non-stop mode on (`QNonStop:1`).
    pub fn on(&self) -> bool {
        self.on
    }

    /// Takes the packet `p` if it is non-stop business (see [`Handled`]). `multiprocess`:
    /// thread-ids in stop replies carry the process. `last`: the all-stop session's
    /// current stop (its vCPU and stop), which stays stopped when non-stop mode begins.
    pub fn packet<A: Layout>(
        &mut self,
        vm: &mut Vm,
        p: &[u8],
        multiprocess: bool,
        last: (usize, Option<VcpuStop>),
    ) -> Handled {
        if let Some(arg) = p.strip_prefix(b"QNonStop:") {
            return self.switch(vm, arg, last);
        }
        if p == b"vStopped" {
            return self.vstopped::<A>(vm, multiprocess);
        }
        if !self.on {
            return Handled::No;
        }
        match p.first() {
            Some(b'?') if p.len() == 1 => self.status::<A>(vm, multiprocess),
            Some(b'?') => reply(E_INVAL),
            Some(b'v') if p == b"vCont?" => reply("vCont;c;C;s;S;t"),
            Some(b'v') if p.starts_with(b"vCont") => self.vcont(vm, &p[5..]),
            // The all-stop resumes wait for a stop reply, which non-stop never sends.
            Some(b'c' | b's' | b'C' | b'S') => reply(E_INVAL),
            // Detach and kill leave the machine as in all-stop: every vCPU stopped first
            // (detach then resumes them all, without breakpoints).
            Some(b'D' | b'k') => self.end(vm),
            Some(b'v') if p.starts_with(b"vKill") => self.end(vm),
            Some(b'z' | b'Z') => self.pause(vm),
            _ => Handled::No,
        }
    }

    /// The vCPUs running now, for [`NonStop::after`] (none in all-stop mode).
    pub fn running(&self, vm: &Vm) -> Vec<usize> {
        if !self.on {
            return Vec::new();
        }
        (0..vm.vcpu_count())
            .filter(|&id| vm.is_running(id))
            .collect()
    }

    /// After gdbstub's packet: runs on the vCPUs [`NonStop::packet`] paused, and those of
    /// `was_running` that are stopped now (a packet gdbstub failed stops every vCPU, and
    /// gdb still counts them as running), then notifies gdb of stops that came meanwhile.
    pub fn after<A: Layout>(
        &mut self,
        vm: &mut Vm,
        conn: &SharedConn,
        multiprocess: bool,
        was_running: &[usize],
    ) -> std::io::Result<()> {
        let stopped_since = was_running.iter().filter(|&&id| !vm.is_running(id));
        let rerun: Vec<usize> = std::mem::take(&mut self.paused)
            .into_iter()
            .chain(stopped_since.copied())
            .collect();
        for id in rerun {
            if let Err(e) = vm.resume_unseen(id) {
                log::error!("cannot run vCPU {id} on after a breakpoint change: {e}");
            }
        }
        self.notify::<A>(vm, conn, multiprocess)
    }

    /// Waits for the client's next bytes into `buf` while vCPUs run, turning their stops
    /// into notifications meanwhile.
    pub fn wait<A: Layout>(
        &mut self,
        vm: &mut Vm,
        conn: &SharedConn,
        buf: &mut [u8],
        multiprocess: bool,
    ) -> std::io::Result<Waited> {
        loop {
            let sock = conn.get().stream().raw_fd();
            let ready = poll_readable(&[sock, vm.event_fd()])?;
            if ready[1] {
                while let Some(ev) = vm.poll_event() {
                    if let VcpuStop::Exit(code) = ev.stop {
                        self.stop_all(vm);
                        let body = format!("Stop:W{:02x}", code & 0xff);
                        send_notification(conn, body.as_bytes())?;
                        return Ok(Waited::Exited(code));
                    }
                    self.stopped(&ev);
                }
                self.notify::<A>(vm, conn, multiprocess)?;
            }
            if ready[0] {
                let n = conn.get().stream().read_some(buf)?;
                if n == 0 {
                    self.stop_all(vm);
                }
                return Ok(Waited::Input(n));
            }
        }
    }

    /// Notes a vCPU's stop, to be reported.
    fn stopped(&mut self, ev: &VcpuEvent) {
        let asked = std::mem::replace(&mut self.asked[ev.id], false);
        // A kick is a stop gdb asked for (`vCont;t`, signal 0); any other stop is the
        // vCPU's own, reported as itself even when it raced the kick.
        self.stops[ev.id] = match ev.stop {
            VcpuStop::Kicked => {
                if !asked {
                    log::debug!("vCPU {} stopped by a kick nobody asked for", ev.id);
                }
                None
            }
            stop => Some(stop),
        };
        if !self.unsent(ev.id) {
            self.queue.push_back(ev.id);
        }
    }

    /// Whether vCPU `id` has a stop queued that gdb has not been sent yet (the head was
    /// sent while a sequence is outstanding: gdb knows that stop and may resume it).
    fn unsent(&self, id: usize) -> bool {
        let sent = usize::from(self.outstanding);
        self.queue.iter().skip(sent).any(|&q| q == id)
    }

    /// Sends the queue's head as a notification if none is outstanding.
    fn notify<A: Layout>(
        &mut self,
        vm: &Vm,
        conn: &SharedConn,
        multiprocess: bool,
    ) -> std::io::Result<()> {
        if self.outstanding {
            return Ok(());
        }
        let Some(&id) = self.queue.front() else {
            return Ok(());
        };
        match stop_reply::<A>(vm, id, self.stops[id], multiprocess) {
            Some(r) => {
                let mut body = b"Stop:".to_vec();
                body.extend_from_slice(&r);
                self.outstanding = true;
                send_notification(conn, &body)
            }
            None => {
                self.queue.pop_front();
                Ok(())
            }
        }
    }

    /// `QNonStop:1` / `QNonStop:0` ("General Query Packets").
    fn switch(&mut self, vm: &mut Vm, arg: &[u8], last: (usize, Option<VcpuStop>)) -> Handled {
        match arg {
            b"1" if self.on => reply("OK"),
            b"1" => {
                // Reached from all-stop, where gdbstub is Idle only with every vCPU
                // stopped: no stop is outstanding. The vCPU of the current stop stays
                // stopped and the others run on, so `?` reports one stop: gdb 13 asserts
                // ("remote.c: wait: Assertion `!async_event_handler_marked") when it
                // connects to several stopped threads in non-stop mode, before it turns
                // its target asynchronous.
                let (keep, stop) = last;
                self.stops[keep] = stop.filter(|s| *s != VcpuStop::Kicked);
                let others: Vec<(usize, bool)> = (0..vm.vcpu_count())
                    .filter(|&id| id != keep)
                    .map(|id| (id, false))
                    .collect();
                if let Err(e) = vm.resume(&others) {
                    log::warn!("cannot run the other vCPUs for non-stop mode: {e}");
                    return reply(super::front::E_FAILED);
                }
                self.on = true;
                self.queue.clear();
                self.outstanding = false;
                reply("OK")
            }
            b"0" => {
                let first = self.queue.front().copied();
                let events = self.stop_all(vm);
                self.on = false;
                self.queue.clear();
                self.outstanding = false;
                let own = events.iter().find(|e| e.stop != VcpuStop::Kicked);
                match (own, first) {
                    (Some(ev), _) => Handled::AllStop(ev.id, Some(ev.stop)),
                    (None, Some(id)) => Handled::AllStop(id, self.stops[id]),
                    (None, None) => Handled::AllStop(0, self.stops.first().copied().flatten()),
                }
            }
            _ => reply(E_INVAL),
        }
    }

    /// `vStopped`: gdb took the last stop reply; the next one, or OK when none is left.
    fn vstopped<A: Layout>(&mut self, vm: &Vm, multiprocess: bool) -> Handled {
        if !self.outstanding {
            // Nothing was sent to acknowledge (the queue is empty then): no stop is lost.
            return reply("OK");
        }
        self.queue.pop_front();
        while let Some(&id) = self.queue.front() {
            if let Some(r) = stop_reply::<A>(vm, id, self.stops[id], multiprocess) {
                return Handled::Reply(r);
            }
            self.queue.pop_front();
        }
        self.outstanding = false;
        reply("OK")
    }

    /// `?` in non-stop mode: every stopped vCPU's stop, the first as the reply and the
    /// others through `vStopped`; OK when all run.
    fn status<A: Layout>(&mut self, vm: &Vm, multiprocess: bool) -> Handled {
        self.queue = (0..vm.vcpu_count())
            .filter(|&id| !vm.is_running(id))
            .collect();
        self.outstanding = false;
        while let Some(&id) = self.queue.front() {
            if let Some(r) = stop_reply::<A>(vm, id, self.stops[id], multiprocess) {
                self.outstanding = true;
                return Handled::Reply(r);
            }
            self.queue.pop_front();
        }
        reply("OK")
    }

    /// `vCont[;action[:thread-id]]...` in non-stop mode: OK at once, and the threads run
    /// (or stop, `t`) as asked; each thread takes the leftmost action naming it.
    fn vcont(&mut self, vm: &mut Vm, a: &[u8]) -> Handled {
        let Some(actions) = a.strip_prefix(b";") else {
            return reply(E_INVAL);
        };
        let mut plan: Vec<Option<Action>> = vec![None; vm.vcpu_count()];
        for act in actions.split(|&b| b == b';') {
            let (kind, thread) = match split_once(act, b':') {
                Some((k, t)) => (k, Some(t)),
                None => (act, None),
            };
            let action = match kind {
                [b'c'] => Action::Continue,
                [b's'] => Action::Step,
                [b't'] => Action::Stop,
                // A signal means nothing to a vCPU (gdb passes none it was not given).
                [b'C' | b'S', sig @ ..] if parse_hex(sig).is_some_and(|s| s <= 0xff) => {
                    if kind[0] == b'S' {
                        Action::Step
                    } else {
                        Action::Continue
                    }
                }
                _ => return reply(E_INVAL),
            };
            let tid = match thread {
                None => Id::All,
                Some(t) => match parse_thread(t) {
                    None => return reply(E_INVAL),
                    Some(t) if !matches!(t.pid, None | Some(Id::All | Id::Any | Id::Num(PID))) => {
                        return reply(E_SRCH);
                    }
                    Some(t) => t.tid,
                },
            };
            match tid {
                Id::Num(n) => match plan.get_mut((n as usize).wrapping_sub(1)) {
                    Some(slot) => {
                        slot.get_or_insert(action);
                    }
                    None => return reply(E_SRCH),
                },
                Id::All | Id::Any => {
                    for slot in plan.iter_mut() {
                        slot.get_or_insert(action);
                    }
                }
            }
        }
        for (id, action) in plan.into_iter().enumerate() {
            let Some(action) = action else { continue };
            let result = match action {
                // Already stopped: nothing to report (gdb knows, or will by its queued
                // stop).
                Action::Stop if !vm.is_running(id) => Ok(()),
                Action::Stop => {
                    self.asked[id] = true;
                    vm.kick_vcpu(id)
                }
                // A thread whose stop gdb has not yet been sent stays stopped until it has.
                _ if vm.is_running(id) || self.unsent(id) => Ok(()),
                step => vm.resume(&[(id, step == Action::Step)]),
            };
            if let Err(e) = result {
                log::warn!("vCont in non-stop mode: vCPU {id}: {e}");
                return reply(super::front::E_FAILED);
            }
        }
        reply("OK")
    }

    /// Pauses the running vCPUs for a breakpoint or watchpoint change: each applies the
    /// debug table before it runs again, and memory-slot changes need them out of the
    /// guest. Stops of their own that arrive meanwhile are queued for gdb.
    fn pause(&mut self, vm: &mut Vm) -> Handled {
        if !vm.any_running() {
            return Handled::Forward;
        }
        for ev in vm.stop_all() {
            if ev.stop == VcpuStop::Kicked && !self.asked[ev.id] {
                self.paused.push(ev.id);
            } else {
                self.stopped(&ev);
            }
        }
        Handled::Forward
    }

    /// Detach or kill: every vCPU stopped, non-stop mode over; the packet goes on.
    fn end(&mut self, vm: &mut Vm) -> Handled {
        self.stop_all(vm);
        self.on = false;
        self.queue.clear();
        self.outstanding = false;
        Handled::Forward
    }

    /// Stops every running vCPU; their stops are moot to a client that leaves or
    /// switches modes, but recorded as their last.
    fn stop_all(&mut self, vm: &mut Vm) -> Vec<VcpuEvent> {
        let events = vm.stop_all();
        for ev in &events {
            self.asked[ev.id] = false;
            self.stops[ev.id] = Some(ev.stop).filter(|s| *s != VcpuStop::Kicked);
        }
        events
    }
}

fn reply(r: &str) -> Handled {
    Handled::Reply(r.as_bytes().to_vec())
}

/// The stop reply for vCPU `id` at `stop` (None: stopped on request, signal 0: "Remote
/// Non-Stop", a thread `vCont;t` stopped reports signal 0); None if its state cannot be
/// read, which leaves it out of the report rather than making one up.
fn stop_reply<A: Layout>(
    vm: &Vm,
    id: usize,
    stop: Option<VcpuStop>,
    multiprocess: bool,
) -> Option<Vec<u8>> {
    let last = super::event_loop::LastStop { vcpu: id, stop };
    match super::event_loop::status_reply::<A>(vm, last, multiprocess) {
        Ok(mut r) => {
            if stop.is_none() {
                // `T` and two signal digits lead the reply.
                r[1..3].copy_from_slice(b"00");
            }
            Some(r)
        }
        Err(e) => {
            log::warn!("cannot read vCPU {id} for its stop reply: {e}");
            None
        }
    }
}

/// Sends a notification ("Notification Packets": `%name:data#cs`, never acknowledged).
fn send_notification(conn: &SharedConn, body: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(b'%');
    out.extend_from_slice(body);
    out.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    conn.get().send_control(&out)
}

/// gdbstub's qSupported reply (`held`, framed, perhaps after the `+` acknowledging the
/// query) with `QNonStop+` added; None if it is not one framed reply.
pub fn advertise(held: &[u8]) -> Option<(Vec<u8>, bool)> {
    let ack = held.first() == Some(&b'+');
    let start = held.iter().position(|&b| b == b'$')? + 1;
    let end = held.iter().rposition(|&b| b == b'#')?;
    let mut body = held.get(start..end)?.to_vec();
    // gdbstub's feature list starts with its PacketSize; anything else (an error reply
    // from the front) goes out as it is.
    if !body.starts_with(b"PacketSize=") {
        return None;
    }
    body.extend_from_slice(b";QNonStop+");
    Some((body, ack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_non_stop_in_gdbstubs_reply() {
        let (body, ack) = advertise(b"+$PacketSize=1000;swbreak+#aa").unwrap();
        assert_eq!(body, b"PacketSize=1000;swbreak+;QNonStop+");
        assert!(ack);
        assert_eq!(advertise(b"nothing"), None);
        assert_eq!(advertise(b"+$E16#aa"), None);
    }
}
