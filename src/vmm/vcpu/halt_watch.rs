//! Noticing a vCPU halted for good under an in-kernel irqchip. With KVM's local APIC, `hlt`
//! does not exit to the VMM (KVM gives KVM_EXIT_HLT only when the local APIC is in user
//! space; measured on PVM: docs/kvm-quirks.md, "hlt"): the vCPU blocks inside KVM_RUN until
//! an interrupt.
//! A `cli; hlt` then never wakes, and kvmgdb would neither end nor tell the debugger.
//!
//! So a watcher thread samples each running vCPU thread's CPU time (its thread CPU clock,
//! pthread_getcpuclockid(3)); a thread that used next to none over a period is blocked in
//! KVM, and gets a *probe*: a kick with the probe flag instead of the kick flag. The vCPU
//! thread then reads KVM_GET_MP_STATE itself (no ioctl on a vCPU from a foreign thread):
//! HALTED with RFLAGS.IF clear is reported as [`crate::vmm::stop::VcpuStop::Halted`], as
//! a KVM_EXIT_HLT with IF clear is without an irqchip; anything else runs on unseen. A busy
//! guest is never probed; an idle one (IF set, waiting for its timer) costs one kick per
//! period.

use super::kick::{KickState, kick_signal};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often vCPU threads are sampled. A `cli; hlt` is reported within about two periods.
const PERIOD: Duration = Duration::from_millis(100);
/// A thread that used less CPU than this in a period is taken to be blocked in KVM (a
/// running guest uses the whole period; KVM's halt polling a few hundred microseconds).
const IDLE_CPU: Duration = Duration::from_millis(10);

/// One vCPU thread to watch.
pub struct Watched {
    /// The thread (for its CPU clock and to signal it).
    pub thread: libc::pthread_t,
    /// Its kick state.
    pub kick: Arc<KickState>,
}

/// The watcher thread; it ends when this is dropped.
pub struct HaltWatch {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HaltWatch {
    /// Starts watching `vcpus`. The threads must outlive the watcher: drop it before
    /// joining them.
    pub fn start(vcpus: Vec<Watched>) -> std::io::Result<HaltWatch> {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("halt-watch".into())
            .spawn(move || {
                let mut last: Vec<Option<Duration>> = vec![None; vcpus.len()];
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(PERIOD) {
                    for (v, last) in vcpus.iter().zip(&mut last) {
                        let now = thread_cpu_time(v.thread);
                        let idle = matches!((now, *last), (Some(n), Some(l)) if n.saturating_sub(l) < IDLE_CPU);
                        *last = now;
                        if idle && v.kick.in_run() {
                            v.kick.request_probe();
                            // SAFETY: the thread is alive: the watcher is stopped before the
                            // vCPU threads are joined (`start`'s contract).
                            unsafe { libc::pthread_kill(v.thread, kick_signal()) };
                        }
                    }
                }
            })?;
        Ok(HaltWatch {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for HaltWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The CPU time `thread` has used, from its thread CPU clock.
fn thread_cpu_time(thread: libc::pthread_t) -> Option<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `thread` is a live thread (see `HaltWatch::start`); `clock` is a valid out
    // pointer.
    if unsafe { libc::pthread_getcpuclockid(thread, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}
