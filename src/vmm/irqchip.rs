//! The in-kernel interrupt controllers and timer: KVM's PIC pair, IOAPIC and per-vCPU local
//! APICs (KVM_CREATE_IRQCHIP) and its i8254 PIT (KVM_CREATE_PIT2), created before the
//! vCPUs as the KVM API requires, and their power-on state, which a machine reset restores.

use crate::platform::IOAPIC_PINS;
use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_PIT_SPEAKER_DUMMY, KvmIrqRouting, kvm_irq_routing_entry,
    kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip, kvm_irqchip, kvm_pit_config,
    kvm_pit_state2,
};
use kvm_ioctls::VmFd;

/// Where KVM may put the three pages of the TSS it needs to run real-mode code on Intel
/// CPUs without unrestricted guest (KVM API 4.41, KVM_SET_TSS_ADDR: "required on
/// Intel-based hosts"). Below the BIOS ROM's last 64 KiB, above the LAPIC and IOAPIC, in the
/// MMIO hole where there is no RAM, as other VMMs place it.
const TSS_ADDR: usize = 0xfffb_d000;

/// The PIC pin the slave PIC cascades into: no device's GSI goes there.
const CASCADE: u32 = 2;
/// The IOAPIC pin ISA IRQ 0 (the PIT) is wired to, as on PCs; the MADT says so with an
/// interrupt source override (IRQ 0 → GSI 2) and operating systems program that pin.
const ISA_IRQ0_IOAPIC_PIN: u32 = crate::platform::PIT_GSI;

/// The PC's interrupt wiring (KVM API 4.52 KVM_SET_GSI_ROUTING): ISA IRQs 0–15 to the PIC
/// pair (none to the cascade pin), and GSIs 0–23 to the IOAPIC's pins of the same number,
/// except that the PIT's GSI 0 goes to pin 2 and nothing else does, which is what the MADT's
/// override describes. (KVM's default routing sends GSI 0 to IOAPIC pin 0, where a kernel
/// that reads the MADT never looks for its timer.)
fn pc_routing() -> Vec<kvm_irq_routing_entry> {
    let route = |gsi: u32, irqchip: u32, pin: u32| kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    };
    let mut entries = Vec::new();
    for irq in (0..8).filter(|&i| i != CASCADE) {
        entries.push(route(irq, KVM_IRQCHIP_PIC_MASTER, irq));
    }
    for irq in 8..16 {
        entries.push(route(irq, KVM_IRQCHIP_PIC_SLAVE, irq - 8));
    }
    for gsi in (0..IOAPIC_PINS).filter(|&g| g != ISA_IRQ0_IOAPIC_PIN) {
        let pin = if gsi == 0 { ISA_IRQ0_IOAPIC_PIN } else { gsi };
        entries.push(route(gsi, KVM_IRQCHIP_IOAPIC, pin));
    }
    entries
}

/// Errors creating the interrupt controllers.
#[derive(Debug, thiserror::Error)]
pub enum IrqchipError {
    /// One of the creation ioctls failed.
    #[error("{0} failed")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
}

/// The in-kernel irqchip and PIT of a VM, with their state at creation.
pub struct Irqchip {
    chips: Vec<kvm_irqchip>,
    pit: kvm_pit_state2,
}

impl Irqchip {
    /// Creates the PICs, IOAPIC, local APICs and PIT in `vm`. Must run before any vCPU is
    /// created (KVM API 4.24 KVM_CREATE_IRQCHIP). The PIT gets KVM's dummy speaker port
    /// 0x61 (KVM_PIT_SPEAKER_DUMMY), as QEMU and Firecracker give it: Linux calibrates the
    /// TSC with PIT channel 2, whose gate and output live there.
    pub fn create(vm: &VmFd) -> Result<Irqchip, IrqchipError> {
        let ioctl = |what| move |e| IrqchipError::Ioctl(what, e);
        if let Err(e) = vm.set_tss_address(TSS_ADDR) {
            // Only Intel's real-mode emulation needs it; other KVMs (PVM) may refuse.
            log::debug!("KVM_SET_TSS_ADDR failed: {e}");
        }
        vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let config = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(config).map_err(ioctl("KVM_CREATE_PIT2"))?;
        let routing = KvmIrqRouting::from_entries(&pc_routing()).map_err(|_| {
            IrqchipError::Ioctl("KVM_SET_GSI_ROUTING", kvm_ioctls::Error::new(libc::E2BIG))
        })?;
        vm.set_gsi_routing(&routing)
            .map_err(ioctl("KVM_SET_GSI_ROUTING"))?;
        let mut chips = Vec::new();
        for chip_id in [
            KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE,
            KVM_IRQCHIP_IOAPIC,
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            vm.get_irqchip(&mut chip)
                .map_err(ioctl("KVM_GET_IRQCHIP"))?;
            chips.push(chip);
        }
        let pit = vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?;
        Ok(Irqchip { chips, pit })
    }

    /// Puts the PICs, IOAPIC and PIT back in their power-on state (a machine reset; the
    /// local APICs belong to the vCPUs and are reset by them).
    pub fn reset(&self, vm: &VmFd) -> Result<(), IrqchipError> {
        for chip in &self.chips {
            vm.set_irqchip(chip)
                .map_err(|e| IrqchipError::Ioctl("KVM_SET_IRQCHIP", e))?;
        }
        vm.set_pit2(&self.pit)
            .map_err(|e| IrqchipError::Ioctl("KVM_SET_PIT2", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pit_reaches_pic_pin_0_and_ioapic_pin_2() {
        let r = pc_routing();
        let pins = |gsi| -> Vec<(u32, u32)> {
            r.iter()
                .filter(|e| e.gsi == gsi)
                .map(|e| {
                    assert_eq!(e.type_, KVM_IRQ_ROUTING_IRQCHIP);
                    // SAFETY: an entry of type KVM_IRQ_ROUTING_IRQCHIP holds `irqchip`.
                    unsafe { (e.u.irqchip.irqchip, e.u.irqchip.pin) }
                })
                .collect()
        };
        assert_eq!(
            pins(0),
            [(KVM_IRQCHIP_PIC_MASTER, 0), (KVM_IRQCHIP_IOAPIC, 2)]
        );
        assert_eq!(pins(2), []);
        assert_eq!(
            pins(4),
            [(KVM_IRQCHIP_PIC_MASTER, 4), (KVM_IRQCHIP_IOAPIC, 4)]
        );
        assert_eq!(
            pins(9),
            [(KVM_IRQCHIP_PIC_SLAVE, 1), (KVM_IRQCHIP_IOAPIC, 9)]
        );
        assert_eq!(pins(23), [(KVM_IRQCHIP_IOAPIC, 23)]);
    }
}
