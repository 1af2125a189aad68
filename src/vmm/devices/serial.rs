//! COM1's interrupt line: the 16550 (vm-superio) raises ISA IRQ 4 by writing to an eventfd
//! that KVM turns into an edge on GSI 4 of the in-kernel PIC and IOAPIC (KVM_IRQFD), so
//! the line never takes the VMM's lock or an ioctl on the vCPU's path.

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
