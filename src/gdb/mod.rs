//! The gdb remote stub: listens for clients and serves one connection at a time
//! ([`event_loop`]); between sessions the machine runs unattended ([`crate::runner`]).
//! It waits on the socket and the vCPU event fd with poll(2), so it uses no CPU while the
//! guest runs.

pub mod breakpoints;
pub mod conn;
pub mod event_loop;
pub mod front;
pub mod monitor;
pub mod nonstop;
pub mod qemu;
pub mod regs;
pub mod resume;
pub mod stop;
pub mod target;
pub mod threads;

use crate::runner::{Outcome, poll_readable, resume_all, run_unattended};
use crate::vmm::Vm;
use conn::Listener;
use event_loop::SessionEnd;
pub use regs::GdbArch;

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

/// How long to wait before accepting again when the process is out of file descriptors or
/// kernel memory: the pending connection keeps the listener readable, and retrying at once
/// would spin a core.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether a failed accept(2) leaves the listener usable: a connection that died in the
/// queue, the pending network errors Linux passes on from the new socket (accept(2), "Error
/// handling": retry as for EAGAIN), or an exhausted fd table or kernel memory, which must
/// not cost the user a guest they may still attach to.
fn accept_failure_is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EAGAIN
                | libc::EINTR
                | libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
        )
    )
}

/// Serves gdb clients on `listener` until the machine ends, each with the register layout
/// `arch`. The vCPUs stay stopped at the entry point until the first client resumes them,
/// unless `run_now`.
///
/// One client at a time: a client that connects while another is attached waits in the
/// listen backlog (its connect succeeds, nothing it sends is read or answered) until the
/// attached session ends, and never disturbs it. Any end of a session other than a kill or
/// the guest's exit (a detach, the client closing or dying, a protocol or socket error, a
/// client that stops reading its replies) is a detach: the breakpoints and watchpoints go,
/// and the guest runs on unattended until the next client stops it.
pub fn serve(
    vm: &mut Vm,
    listener: &Listener,
    run_now: bool,
    arch: GdbArch,
) -> Result<Outcome, GdbError> {
    // This thread reads the client and stops the vCPUs: it must not queue for a core
    // behind busy vCPU threads (vmm::sched).
    crate::vmm::sched::prefer_controller_wakeups();
    if run_now {
        resume_all(vm);
    }
    loop {
        let ready = poll_readable(&[listener.raw_fd(), vm.event_fd()]).map_err(GdbError::Poll)?;
        if ready[1] {
            if let Some(outcome) = run_unattended(vm) {
                return Ok(outcome);
            }
        }
        if ready[0] {
            let stream = match listener.accept() {
                Ok(stream) => stream,
                Err(GdbError::Accept(e)) if accept_failure_is_transient(&e) => {
                    log::warn!("cannot accept a gdb connection now: {e}");
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        std::thread::sleep(ACCEPT_BACKOFF);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            log::info!("gdb connected");
            let reason = event_loop::session(vm, stream, arch);
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
