//! `info version`: kvmgdb's name and version, one line.
//!
//! QEMU answers this command with its version ("7.2.0 …"), and gdb scripts use the answer
//! to tell a QEMU-like stub from others: Linux's `scripts/gdb/linux/utils.py`
//! (`probe_qemu`) treats any non-empty reply as "QEMU", and then maps gdb's threads to
//! CPUs one to one (thread N is CPU N-1), which holds for kvmgdb's threads too.

use super::{CmdResult, Console};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;

impl<A: Layout> KvmTarget<'_, A> {
    pub(super) fn info_version(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        c.line(format!("kvmgdb {}", env!("CARGO_PKG_VERSION")));
        Ok(())
    }
}
