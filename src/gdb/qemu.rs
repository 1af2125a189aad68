//! QEMU's own gdb packets, accepted for compatibility with scripts written for QEMU:
//! `maintenance packet Qqemu.PhyMemMode:1`, `qqemu.sstepbits`, `qqemu.sstep`,
//! `Qqemu.sstep=N`. gdbstub has no hook for packets it does not know, so the packet front
//! ([`super::front`]) takes them out of the stream and the session loop answers them here.

use crate::vmm::Vm;

/// QEMU's single-step flag bits (QEMU `SSTEP_*`).
const SSTEP_ENABLE: u32 = 1;
const SSTEP_NOIRQ: u32 = 2;
const SSTEP_NOTIMER: u32 = 4;

/// Answers a QEMU packet. Unknown ones get the empty reply, as gdb expects for packets a
/// stub does not support.
pub fn answer(vm: &mut Vm, payload: &str) -> String {
    match payload {
        "qqemu.sstepbits" => {
            format!("ENABLE={SSTEP_ENABLE:x},NOIRQ={SSTEP_NOIRQ:x},NOTIMER={SSTEP_NOTIMER:x}")
        }
        "qqemu.sstep" => {
            let flags = if vm.step_masks_irq() {
                SSTEP_ENABLE | SSTEP_NOIRQ | SSTEP_NOTIMER
            } else {
                SSTEP_ENABLE
            };
            format!("0x{flags:x}")
        }
        "qqemu.PhyMemMode" => if vm.phys_mode() { "1" } else { "0" }.to_string(),
        _ => {
            if let Some(v) = payload.strip_prefix("Qqemu.sstep=") {
                let v = v.trim_start_matches("0x");
                return match u32::from_str_radix(v, 16) {
                    Ok(flags) => {
                        vm.set_step_masks_irq(flags & SSTEP_NOIRQ != 0);
                        "OK".into()
                    }
                    Err(_) => "E22".into(),
                };
            }
            if let Some(v) = payload.strip_prefix("Qqemu.PhyMemMode:") {
                return match v {
                    "1" => {
                        vm.set_phys_mode(true);
                        "OK".into()
                    }
                    "0" => {
                        vm.set_phys_mode(false);
                        "OK".into()
                    }
                    _ => "E22".into(),
                };
            }
            String::new()
        }
    }
}
