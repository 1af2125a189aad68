//! Kicking a vCPU thread out of KVM_RUN: the kick flag, the signal that interrupts KVM_RUN,
//! and its handler, which sets the thread's `kvm_run.immediate_exit`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::thread::JoinHandle;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

/// State shared between a vCPU thread and whoever kicks it.
#[derive(Default)]
pub struct KickState {
    kicked: AtomicBool,
    /// A halt probe ([`super::halt_watch`]) asks the thread to check whether its vCPU is
    /// halted for good; no stop unless it is.
    probe: AtomicBool,
    /// The thread is in a guest run (between taking a run request and reporting its stop).
    in_run: AtomicBool,
    idle: Mutex<()>,
    wake: Condvar,
}

impl KickState {
    /// Marks a kick and wakes an idle vCPU; [`kick`] also signals the thread.
    pub fn request(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        let _guard = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Takes a pending kick: true if there was one.
    pub fn take(&self) -> bool {
        self.kicked.swap(false, Ordering::SeqCst)
    }

    /// Asks for a halt probe; [`kick`] the thread after.
    pub fn request_probe(&self) {
        self.probe.store(true, Ordering::SeqCst);
    }

    /// Takes a pending halt probe: true if there was one.
    pub fn take_probe(&self) -> bool {
        self.probe.swap(false, Ordering::SeqCst)
    }

    /// Marks whether the thread is in a guest run.
    pub fn set_in_run(&self, on: bool) {
        self.in_run.store(on, Ordering::SeqCst);
    }

    /// Whether the thread is in a guest run.
    pub fn in_run(&self) -> bool {
        self.in_run.load(Ordering::SeqCst)
    }

    /// Blocks the calling (vCPU) thread until a kick arrives, then takes it.
    pub fn wait(&self) {
        let mut guard = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while !self.kicked.load(Ordering::SeqCst) {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        drop(guard);
        self.take();
    }
}

static SIGNAL_HANDLER: Once = Once::new();

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

/// Installs the kick signal's handler, once per process.
pub fn install_handler() {
    SIGNAL_HANDLER.call_once(|| {
        if let Err(e) = register_signal_handler(kick_signal(), kick_signal_handler) {
            log::error!("cannot install the vCPU kick signal handler: {e}");
        }
    });
}

/// Kicks the vCPU thread `thread`: marks the kick in `state`, then signals the thread so a
/// KVM_RUN in progress returns.
pub fn kick(state: &KickState, thread: Option<&JoinHandle<()>>) {
    state.request();
    if let Some(t) = thread {
        let _ = t.kill(kick_signal());
    }
}

/// Runs `f` with the kick signal blocked in this thread (pthread_sigmask(3)): a kick sent
/// meanwhile is delivered, and sets immediate_exit, once `f` returns. For a KVM_RUN that
/// must not be interrupted and is bounded by other means.
pub fn with_kick_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t is plain data for which all-zero bytes are a valid value;
    // sigemptyset initialises it properly below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pthread_sigmask writes the old mask into it.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above: `set` and `old` are valid, exclusively borrowed sigset_t values.
    let blocked = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) == 0
    };
    let r = f();
    if blocked {
        // SAFETY: restores the mask saved above; `old` is a valid sigset_t.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    r
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, for the kick signal handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// Tells the kick signal handler where this thread's `kvm_run.immediate_exit` is; null
/// when the thread stops running its vCPU. The pointer must stay valid until it is reset
/// to null.
pub fn set_immediate_exit(ptr: *mut u8) {
    IMMEDIATE_EXIT.with(|p| p.set(ptr));
}

/// The kick signal's handler: make the current or next KVM_RUN return EINTR at once
/// (KVM API 5. "immediate_exit"), closing the race where the signal lands just before
/// the thread enters KVM_RUN.
extern "C" fn kick_signal_handler(
    _num: libc::c_int,
    _info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // `try_with` and a const-initialised Cell: no allocation and no lock, async-signal-safe.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let ptr = p.get();
        if !ptr.is_null() {
            // SAFETY: a non-null pointer was stored by this thread's `VcpuThread::run_loop`
            // through `set_immediate_exit` and points into its kvm_run mapping, which
            // outlives the pointer: it is reset to null before the `VcpuFd` (and the
            // mapping) is dropped.
            unsafe { std::ptr::write_volatile(ptr, 1) };
        }
    });
}
