//! The in-kernel interrupt controllers and timer: KVM's PIC pair, IOAPIC and per-vCPU local
//! APICs (KVM_CREATE_IRQCHIP) and its i8254 PIT (KVM_CREATE_PIT2), created before the
//! vCPUs as the KVM API requires, and their power-on state, which a machine reset restores.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY,
    kvm_irqchip, kvm_pit_config, kvm_pit_state2,
};
use kvm_ioctls::VmFd;

/// Where KVM may put the three pages of the TSS it needs to run real-mode code on Intel
/// CPUs without unrestricted guest (KVM API 4.41, KVM_SET_TSS_ADDR: "required on
/// Intel-based hosts"). Below the BIOS ROM's last 64 KiB, above the LAPIC and IOAPIC, in the
/// MMIO hole where there is no RAM, as other VMMs place it.
const TSS_ADDR: usize = 0xfffb_d000;

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
