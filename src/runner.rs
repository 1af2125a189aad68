//! The machine's life with no debugger attached: running the guest until it ends, and the
//! stops that arrive while nobody watches. The gdb stub ([`crate::gdb`]) hands the machine
//! back here between sessions; `--gdb none` runs it here from the start.

use crate::vmm::Vm;
use crate::vmm::stop::VcpuStop;
use std::os::fd::RawFd;

/// Errors of running the machine unattended.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// poll(2) failed.
    #[error("poll failed")]
    Poll(#[source] std::io::Error),
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
pub fn poll_readable(fds: &[RawFd]) -> std::io::Result<Vec<bool>> {
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
            return Err(e);
        }
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Runs the guest with no debugger until it ends.
pub fn run_without_gdb(vm: &mut Vm) -> Result<Outcome, RunError> {
    resume_all(vm);
    loop {
        poll_readable(&[vm.event_fd()]).map_err(RunError::Poll)?;
        if let Some(outcome) = run_unattended(vm) {
            return Ok(outcome);
        }
    }
}

/// Handles the vCPU stops that arrived while no debugger is attached: the run ends at an
/// exit or a fatal stop (with its exit status); anything else (breakpoints are gone once gdb
/// is) just carries on.
pub fn run_unattended(vm: &mut Vm) -> Option<Outcome> {
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

/// Resumes every vCPU that a fatal stop has not frozen.
pub fn resume_all(vm: &mut Vm) {
    let all: Vec<(usize, bool)> = (0..vm.vcpu_count())
        .filter(|&id| vm.frozen(id).is_none())
        .map(|id| (id, false))
        .collect();
    if let Err(e) = vm.resume(&all) {
        log::error!("cannot resume the guest: {e}");
    }
}
