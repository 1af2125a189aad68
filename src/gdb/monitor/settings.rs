//! `info kvm`, `sstep irq` and `phys`: the host KVM and the debugger's settings.

use super::{CmdResult, Console, MonitorError};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;

fn parse_on_off(s: &str, usage: &'static str) -> Result<bool, MonitorError> {
    match s {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        _ => Err(MonitorError::Usage(usage)),
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

impl<A: Layout> KvmTarget<'_, A> {
    pub(super) fn info_kvm(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        let caps = self.vm.caps();
        c.lines(caps.table().lines());
        let block_irq = caps.supports_debug_flag(kvm_bindings::KVM_GUESTDBG_BLOCKIRQ);
        c.line(format!(
            "{:<18} {}{}",
            "sstep irq",
            on_off(self.vm.step_masks_irq()),
            if block_irq {
                ""
            } else {
                " (no effect: this KVM lacks KVM_GUESTDBG_BLOCKIRQ)"
            }
        ));
        c.line(format!(
            "{:<18} {}",
            "phys",
            if self.vm.phys_mode() {
                "on: addresses are guest-physical"
            } else {
                "off: addresses are virtual"
            }
        ));
        // Instructions this KVM could not run and kvmgdb completed (never on hardware KVM).
        let done: Vec<String> = crate::vmm::complete::TABLE
            .iter()
            .filter(|e| e.count() > 0)
            .map(|e| format!("{} {}", e.name, e.count()))
            .collect();
        c.line(format!(
            "{:<18} {}",
            "completed",
            if done.is_empty() {
                "none (every instruction ran in KVM)".to_string()
            } else {
                done.join(", ")
            }
        ));
        Ok(())
    }

    pub(super) fn sstep(&mut self, c: &mut Console<'_, '_>, arg: Option<&str>) -> CmdResult {
        const USAGE: &str = "sstep irq [on|off]";
        if let Some(a) = arg {
            self.vm.set_step_masks_irq(parse_on_off(a, USAGE)?);
        }
        let on = self.vm.step_masks_irq();
        c.line(if on {
            "sstep irq on: interrupts stay masked while single-stepping"
        } else {
            "sstep irq off: interrupts may be delivered during a single step"
        });
        if !self
            .vm
            .caps()
            .supports_debug_flag(kvm_bindings::KVM_GUESTDBG_BLOCKIRQ)
        {
            c.line("(this KVM lacks KVM_GUESTDBG_BLOCKIRQ, so steps never mask interrupts)");
        }
        Ok(())
    }

    pub(super) fn phys(&mut self, c: &mut Console<'_, '_>, arg: Option<&str>) -> CmdResult {
        if let Some(a) = arg {
            self.vm.set_phys_mode(parse_on_off(a, "phys [on|off]")?);
        }
        c.line(if self.vm.phys_mode() {
            "phys on: gdb's addresses are guest-physical"
        } else {
            "phys off: gdb's addresses are virtual, translated by vCPU page tables"
        });
        Ok(())
    }
}
