//! COM1's interrupt line: the 16550 (vm-superio) raises ISA IRQ 4 by writing to an eventfd
//! that KVM turns into an edge on GSI 4 of the in-kernel PIC and IOAPIC (KVM_IRQFD), so
//! the line never takes the VMM's lock or an ioctl on the vCPU's path. Input (from stdin,
//! say) reaches the guest through [`spawn_input`].

use super::Devices;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// The UART's interrupt line: an irqfd, or nothing on a machine without an in-kernel
/// irqchip (guests that poll the line status register work without one).
pub struct IrqLine(pub Option<EventFd>);

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        match &self.0 {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }
}

/// How long the input thread waits, at most, before offering bytes again to a receive FIFO
/// the guest has not drained (a guest without a serial driver never does).
const FULL_FIFO_MAX_WAIT: Duration = Duration::from_millis(100);

/// Starts a thread that feeds what `input` yields into COM1's receive FIFO, raising the
/// receive interrupt; it ends at end of input or a read error. It only ever takes the
/// devices' lock for an instant, and never waits on a vCPU, so a guest that does not read
/// its serial port loses no time (its FIFO stays full and the thread waits).
pub fn spawn_input(
    devices: Arc<Mutex<Devices>>,
    mut input: Box<dyn Read + Send>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("serial-input".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("serial input ended: {e}");
                        return;
                    }
                };
                let mut rest = &buf[..n];
                let mut wait = Duration::from_millis(1);
                while !rest.is_empty() {
                    let taken = devices
                        .lock()
                        .map(|mut d| d.enqueue_serial_input(rest))
                        .unwrap_or(0);
                    rest = &rest[taken..];
                    if taken == 0 {
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(FULL_FIFO_MAX_WAIT);
                    } else {
                        wait = Duration::from_millis(1);
                    }
                }
            }
        })
        .map(drop)
}

/// Whether standard input can feed the serial port: a terminal or a pipe (not a file a
/// test harness or a service manager left there, nor /dev/null).
pub fn stdin_is_interactive() -> bool {
    // SAFETY: fstat(2) on fd 0 writes only into `st`, a valid, exclusively borrowed stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(0, &mut st) } != 0 {
        return false;
    }
    let kind = st.st_mode & libc::S_IFMT;
    // SAFETY: isatty(3) only inspects the descriptor.
    kind == libc::S_IFIFO || (kind == libc::S_IFCHR && unsafe { libc::isatty(0) } == 1)
}
