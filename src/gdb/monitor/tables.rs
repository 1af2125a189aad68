//! `info gdt` and `info idt`: the selected vCPU's descriptor tables, decoded.

use super::{CmdResult, Console};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;
use crate::inspect::descriptors::{self, TableMode};
use crate::x86::paging::{self, GuestVirtAddr, PagingRegs};

/// The largest descriptor table: a 16-bit limit (SDM 2.4.1, 2.4.3).
const MAX_TABLE_BYTES: usize = 1 << 16;

impl<A: Layout> KvmTarget<'_, A> {
    /// The bytes of a descriptor table at linear address `base` (as far as they are mapped).
    fn read_table(&self, regs: &PagingRegs, base: u64, limit: u16) -> Vec<u8> {
        let mut buf = vec![0u8; (usize::from(limit) + 1).min(MAX_TABLE_BYTES)];
        let n = paging::read_virt(self.vm.memory(), regs, GuestVirtAddr(base), &mut buf);
        buf.truncate(n);
        buf
    }

    pub(super) fn info_gdt(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        self.info_table(c, |s| s.gdt, descriptors::format_gdt)
    }

    pub(super) fn info_idt(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        self.info_table(c, |s| s.idt, descriptors::format_idt)
    }

    /// Decodes the descriptor table `which` picks out of the selected vCPU's system registers.
    fn info_table<F, L>(
        &mut self,
        c: &mut Console<'_, '_>,
        which: impl Fn(&kvm_bindings::kvm_sregs) -> kvm_bindings::kvm_dtable,
        format: F,
    ) -> CmdResult
    where
        F: Fn(&[u8], u64, u16, TableMode) -> L,
        L: IntoIterator<Item = String>,
    {
        let id = self.selection.vcpu();
        let s = self.vm.state(id)?;
        let regs = self.vm.paging_regs(id)?;
        let mode = TableMode::from_regs(s.sregs.cr0, s.sregs.efer);
        let dt = which(&s.sregs);
        let table = self.read_table(&regs, dt.base, dt.limit);
        c.lines(format(&table, dt.base, dt.limit, mode));
        Ok(())
    }
}
