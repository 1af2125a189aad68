//! The port-I/O and MMIO devices: a 16550 UART on COM1 (vm-superio) and QEMU's
//! isa-debug-exit. Every other access reads as all-ones and is ignored on write.

use std::collections::HashSet;
use std::io::Write;
use vm_superio::{Serial, Trigger};

/// COM1 base port and its eight registers.
pub const COM1_BASE: u16 = 0x3f8;
const COM1_LEN: u16 = 8;
/// QEMU's isa-debug-exit port (`-device isa-debug-exit,iobase=0xf4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The UART's interrupt line goes nowhere: kvmgdb has no interrupt controller yet, and guests
/// that poll the line status register work without one.
pub struct NoIrq;

impl Trigger for NoIrq {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// What a guest I/O access asks the VMM to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAction {
    /// Nothing: carry on.
    Continue,
    /// The guest wrote to isa-debug-exit: end with this process exit status.
    Exit(u32),
}

/// All devices of the machine.
pub struct Devices {
    serial: Serial<NoIrq, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
    logged_ports: HashSet<u16>,
    logged_mmio: HashSet<u64>,
}

impl Devices {
    /// Creates the devices; COM1 output goes to `serial_out`.
    pub fn new(serial_out: Box<dyn Write + Send>) -> Devices {
        Devices {
            serial: Serial::new(NoIrq, serial_out),
            logged_ports: HashSet::new(),
            logged_mmio: HashSet::new(),
        }
    }

    /// Handles an `in` from `port`, filling `data`.
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) {
        if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&port) && data.len() == 1 {
            data[0] = self.serial.read((port - COM1_BASE) as u8);
            return;
        }
        self.log_port(port, "read");
        data.fill(0xff);
    }

    /// Handles an `out` of `data` to `port`.
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> IoAction {
        if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&port) && data.len() == 1 {
            if let Err(e) = self.serial.write((port - COM1_BASE) as u8, data[0]) {
                log::warn!("serial output failed: {e}");
            }
            // Flush at line ends so a guest's output shows up interleaved with ours.
            if port == COM1_BASE && data[0] == b'\n' {
                let _ = self.serial.writer_mut().flush();
            }
            return IoAction::Continue;
        }
        if port == DEBUG_EXIT_PORT {
            let mut value = [0u8; 4];
            let n = data.len().min(4);
            value[..n].copy_from_slice(&data[..n]);
            let _ = self.serial.writer_mut().flush();
            return IoAction::Exit((u32::from_le_bytes(value) << 1) | 1);
        }
        self.log_port(port, "write");
        IoAction::Continue
    }

    /// Handles an MMIO read of unbacked guest-physical memory: all-ones.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        if self.logged_mmio.insert(addr & !0xfff) {
            log::debug!("MMIO read at {addr:#x}: no device there, reads as all-ones");
        }
        data.fill(0xff);
    }

    /// Handles an MMIO write to unbacked guest-physical memory: ignored.
    pub fn mmio_write(&mut self, addr: u64, _data: &[u8]) {
        if self.logged_mmio.insert(addr & !0xfff) {
            log::debug!("MMIO write at {addr:#x}: no device there, ignored");
        }
    }

    /// Flushes the serial output.
    pub fn flush(&mut self) {
        let _ = self.serial.writer_mut().flush();
    }

    fn log_port(&mut self, port: u16, what: &str) {
        if self.logged_ports.insert(port) {
            log::debug!(
                "port {port:#x} {what}: no device there (reads give all-ones, writes are ignored)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exit_and_unknown_ports() {
        let mut d = Devices::new(Box::new(std::io::sink()));
        assert_eq!(
            d.io_out(DEBUG_EXIT_PORT, &[0x10, 0, 0, 0]),
            IoAction::Exit(0x21)
        );
        assert_eq!(d.io_out(DEBUG_EXIT_PORT, &[0]), IoAction::Exit(1));
        assert_eq!(d.io_out(0x80, &[1]), IoAction::Continue);
        let mut b = [0u8; 2];
        d.io_in(0x1234, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        // The line status register says the transmitter is empty.
        let mut lsr = [0u8];
        d.io_in(COM1_BASE + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
