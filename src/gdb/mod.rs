//! The gdb remote stub: listens for clients and serves one connection at a time
//! ([`event_loop`]); between sessions the machine runs unattended ([`crate::runner`]).
//! It waits on the socket and the vCPU event fd with poll(2), so it uses no CPU while the
//! guest runs.

pub mod breakpoints;
pub mod conn;
pub mod event_loop;
pub mod front;
pub mod monitor;
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

/// Serves gdb clients on `listener` until the machine ends. The vCPUs stay stopped at the
/// entry point until the first client resumes them, unless `run_now`.
pub fn serve(vm: &mut Vm, listener: &Listener, run_now: bool) -> Result<Outcome, GdbError> {
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
            let stream = listener.accept()?;
            log::info!("gdb connected");
            let reason = event_loop::session(vm, stream);
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
