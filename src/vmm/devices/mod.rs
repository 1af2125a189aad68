//! The port-I/O and MMIO devices: a 16550 UART on COM1 (vm-superio) with its IRQ 4
//! ([`serial`]), the RTC/CMOS ([`rtc`]), ACPI power management, 0xcf9 and the i8042 reset
//! ([`pm`]), and QEMU's isa-debug-exit. The PICs, IOAPIC, local APICs, PIT and the speaker
//! port 0x61 are KVM's, in the kernel (`super::irqchip`). Every other access reads as
//! all-ones and is ignored on write.

pub mod pm;
pub mod rtc;
pub mod serial;

use crate::platform::CMOS_PORT;
use pm::{Power, PowerAction};
use rtc::Cmos;
use serial::IrqLine;
use std::collections::HashSet;
use std::io::Write;
use vm_superio::Serial;

/// COM1 base port and its eight registers.
pub const COM1_BASE: u16 = 0x3f8;
const COM1_LEN: u16 = 8;
/// QEMU's isa-debug-exit port (`-device isa-debug-exit,iobase=0xf4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The CMOS index and data ports.
const CMOS_LEN: u16 = 2;

/// What a guest I/O access asks the VMM to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAction {
    /// Nothing: carry on.
    Continue,
    /// The guest wrote to isa-debug-exit, or powered off: end with this process exit
    /// status.
    Exit(u32),
    /// The guest reset the machine (this says how).
    Reset(&'static str),
}

/// The exit status of a guest that powered off (ACPI S5), or that reset with
/// [`DeviceConfig::no_reboot`]: success, as QEMU ends then.
pub const POWER_OFF_STATUS: u32 = 0;

/// What the devices are built for.
pub struct DeviceConfig {
    /// Bytes of RAM below the MMIO hole and above 4 GiB (the CMOS memory-size bytes).
    pub ram_below_4g: u64,
    /// Bytes of RAM above 4 GiB.
    pub ram_above_4g: u64,
    /// Number of vCPUs (the CMOS CPU count byte).
    pub vcpus: usize,
    /// A reset ends the machine (status 0) instead of restarting it, as QEMU's
    /// `-no-reboot`.
    pub no_reboot: bool,
    /// COM1's interrupt line (an irqfd on GSI 4), if the machine has an irqchip.
    pub com1_irq: Option<vmm_sys_util::eventfd::EventFd>,
}

/// All devices of the machine.
pub struct Devices {
    serial: Serial<IrqLine, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
    cmos: Cmos,
    power: Power,
    no_reboot: bool,
    logged_ports: HashSet<u16>,
    logged_mmio: HashSet<u64>,
}

impl Devices {
    /// Creates the devices as `config` says; COM1 output goes to `serial_out`.
    pub fn new(config: DeviceConfig, serial_out: Box<dyn Write + Send>) -> Devices {
        Devices {
            serial: Serial::new(IrqLine(config.com1_irq), serial_out),
            cmos: Cmos::new(config.ram_below_4g, config.ram_above_4g, config.vcpus),
            power: Power::default(),
            no_reboot: config.no_reboot,
            logged_ports: HashSet::new(),
            logged_mmio: HashSet::new(),
        }
    }

    /// Puts the power-management registers back in their power-on state (a machine
    /// reset). The RTC keeps its time and CMOS memory, as a battery-backed one does; the
    /// UART keeps its registers (every guest programs them before use).
    pub fn reset(&mut self) {
        self.power = Power::default();
    }

    /// Puts `bytes` into COM1's receive FIFO (raising its receive interrupt); returns how
    /// many it took: 0 while the FIFO is full.
    pub fn enqueue_serial_input(&mut self, bytes: &[u8]) -> usize {
        match self.serial.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(vm_superio::serial::Error::FullFifo) => 0,
            Err(e) => {
                log::warn!("serial input: {e}");
                bytes.len()
            }
        }
    }

    /// Handles an `in` from `port`, filling `data`.
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) {
        if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&port) && data.len() == 1 {
            data[0] = self.serial.read((port - COM1_BASE) as u8);
            return;
        }
        if (CMOS_PORT..CMOS_PORT + CMOS_LEN).contains(&port) {
            data.fill(self.cmos.read(port - CMOS_PORT));
            return;
        }
        if Power::claims(port) {
            self.power.read(port, data);
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
        if (CMOS_PORT..CMOS_PORT + CMOS_LEN).contains(&port) {
            if let Some(&v) = data.first() {
                self.cmos.write(port - CMOS_PORT, v);
            }
            return IoAction::Continue;
        }
        if Power::claims(port) {
            return match self.power.write(port, data) {
                PowerAction::None => IoAction::Continue,
                PowerAction::PowerOff => {
                    log::info!("the guest powered the machine off (ACPI S5)");
                    self.flush();
                    IoAction::Exit(POWER_OFF_STATUS)
                }
                PowerAction::Reset(how) if self.no_reboot => {
                    log::info!("the guest reset the machine ({how}): ending, as -no-reboot asks");
                    self.flush();
                    IoAction::Exit(POWER_OFF_STATUS)
                }
                PowerAction::Reset(how) => IoAction::Reset(how),
            };
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

    fn test_config(no_reboot: bool) -> DeviceConfig {
        DeviceConfig {
            ram_below_4g: 16 << 20,
            ram_above_4g: 0,
            vcpus: 1,
            no_reboot,
            com1_irq: None,
        }
    }

    #[test]
    fn power_off_and_reset_become_machine_actions() {
        use crate::platform::{PM1_SLP_EN, PM1A_CNT_PORT, RESET_PORT, SLP_TYP_S5};
        let s5 = (SLP_TYP_S5 << 10 | PM1_SLP_EN).to_le_bytes();
        let mut d = Devices::new(test_config(false), Box::new(std::io::sink()));
        assert_eq!(
            d.io_out(PM1A_CNT_PORT, &s5),
            IoAction::Exit(POWER_OFF_STATUS)
        );
        assert!(matches!(d.io_out(RESET_PORT, &[6]), IoAction::Reset(_)));
        let mut d = Devices::new(test_config(true), Box::new(std::io::sink()));
        assert_eq!(d.io_out(RESET_PORT, &[6]), IoAction::Exit(POWER_OFF_STATUS));
    }

    #[test]
    fn debug_exit_and_unknown_ports() {
        let mut d = Devices::new(test_config(false), Box::new(std::io::sink()));
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
