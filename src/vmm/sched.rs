//! Host scheduling of the controller thread: the thread that serves gdb and kicks the vCPUs
//! must get a core as soon as it wakes, even when every host core is busy with vCPU
//! threads running guest code.
//!
//! Measured here (64 vCPUs on 2 host cores, every vCPU busy; docs/kvm-quirks.md, "Stop
//! latency"): from a Ctrl-C on the socket to the stop reply took 50–65 ms, of which the
//! stop-all itself (kick every vCPU, collect 64 stops) took 2–4 ms. The rest was the
//! controller waiting for a core after poll(2) returned: Linux's EEVDF scheduler (6.6 and
//! later) runs the woken thread only when its virtual deadline is the earliest of the
//! eligible threads', and with the default slice (1.4 ms on that host) many busy vCPU
//! threads per core come first, each for its whole slice. A thread may ask for a shorter
//! slice (`sched_runtime` of a SCHED_OTHER thread, Linux 6.12 and later, no privilege
//! needed): its deadline is then near, and a wake-up preempts a thread with a longer one
//! (the scheduler's PREEMPT_SHORT). The controller sleeps nearly all the time, so the
//! short slice costs the guest nothing.
//!
//! The same holds on hardware KVM whenever vCPUs outnumber free host cores. On kernels
//! before 6.12 (CFS, or EEVDF without custom slices) the field is ignored for SCHED_OTHER
//! and nothing changes; on those a woken sleeper was already favoured by CFS's wake-up
//! preemption.

use std::io;

/// The slice the controller thread asks for: the scheduler's minimum (0.1 ms, Linux's
/// `sched_setattr` clamps custom slices to 0.1–100 ms).
pub const CONTROLLER_SLICE_NS: u64 = 100_000;

/// `SCHED_FLAG_RESET_ON_FORK` (include/uapi/linux/sched.h): kept as it was.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// The calling thread's scheduling attributes (sched_getattr(2)).
fn get_attr() -> io::Result<libc::sched_attr> {
    // SAFETY: sched_attr is plain data; all-zero bytes are a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
    // SAFETY: `attr` is a valid, exclusively borrowed sched_attr of `size` bytes; pid 0 is
    // the calling thread; flags must be 0.
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Asks the scheduler to run the calling thread promptly when it wakes: a short slice
/// ([`CONTROLLER_SLICE_NS`]) with its policy and nice value unchanged. Only for a
/// SCHED_OTHER or SCHED_BATCH thread (a real-time or deadline thread is left as it is:
/// someone chose that). Returns the slice set, or None when left alone.
pub fn prefer_wakeups() -> io::Result<Option<u64>> {
    let mut attr = get_attr()?;
    let policy = attr.sched_policy as libc::c_int;
    if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
        return Ok(None);
    }
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.sched_runtime = CONTROLLER_SLICE_NS;
    attr.sched_deadline = 0;
    attr.sched_period = 0;
    // SAFETY: `attr` is a valid sched_attr of `attr.size` bytes, read by the kernel only;
    // pid 0 is the calling thread; flags must be 0.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(CONTROLLER_SLICE_NS))
}

/// [`prefer_wakeups`] for the controller thread, logging the outcome: a failure costs
/// latency, never correctness.
pub fn prefer_controller_wakeups() {
    match prefer_wakeups() {
        Ok(Some(ns)) => log::debug!("controller thread: {} µs scheduler slice", ns / 1000),
        Ok(None) => log::debug!("controller thread: real-time policy kept"),
        Err(e) => log::debug!("controller thread: cannot shorten its scheduler slice: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_short_slice_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let before = get_attr().expect("sched_getattr");
            let set = prefer_wakeups().expect("sched_setattr");
            assert_eq!(set, Some(CONTROLLER_SLICE_NS));
            let after = get_attr().expect("sched_getattr");
            assert_eq!(after.sched_policy, before.sched_policy);
            assert_eq!(after.sched_nice, before.sched_nice);
            // Kernels with custom slices (6.12+) report it back; older ones report 0.
            assert!(
                after.sched_runtime == CONTROLLER_SLICE_NS || after.sched_runtime == 0,
                "sched_runtime {}",
                after.sched_runtime
            );
        })
        .join()
        .unwrap();
    }
}
