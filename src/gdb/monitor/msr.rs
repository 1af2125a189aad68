//! `msr N [VALUE]`: read or write one MSR of the selected vCPU.

use super::{CmdResult, Console, MonitorError, parse_num};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;
use crate::vmm::Vm;
use crate::x86::msr;

/// An MSR by number or name.
pub(super) fn parse_msr(s: &str) -> Result<u32, MonitorError> {
    if let Some(i) = msr::by_name(s) {
        return Ok(i);
    }
    let n = parse_num(s).map_err(|_| MonitorError::BadMsr(s.to_string()))?;
    u32::try_from(n).map_err(|_| MonitorError::TooLarge(n, "an MSR number"))
}

impl<A: Layout> KvmTarget<'_, A> {
    pub(super) fn msr(
        &mut self,
        c: &mut Console<'_, '_>,
        index: &str,
        value: Option<&str>,
    ) -> CmdResult {
        let index = parse_msr(index)?;
        let value = value.map(parse_num).transpose()?;
        let name = msr::name(index)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let id = self.selection.vcpu();
        let read = |vm: &mut Vm| -> Result<u64, MonitorError> {
            vm.read_msrs(id, &[index])?
                .first()
                .map(|m| m.1)
                .ok_or(MonitorError::MsrUnreadable(index))
        };
        match value {
            None => {
                let v = read(self.vm)?;
                c.line(format!("MSR {index:#x}{name} = {v:#018x}"));
            }
            Some(v) => {
                let old = read(self.vm).ok();
                self.vm.write_msr(id, index, v)?;
                let new = read(self.vm)?;
                let was = old.map(|o| format!(" (was {o:#x})")).unwrap_or_default();
                c.line(format!("MSR {index:#x}{name} = {new:#018x}{was}"));
            }
        }
        Ok(())
    }
}
