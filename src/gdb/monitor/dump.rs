//! `dump FILE`: an ELF core of guest memory and every vCPU's registers.

use super::{CmdResult, Console, MonitorError};
use crate::gdb::regs::layout::Layout;
use crate::gdb::stop;
use crate::gdb::target::KvmTarget;
use crate::inspect::coredump::{self, CoreClass, CoreCpu};
use crate::x86::paging::PagingMode;
use crate::x86::paging::leaves::{self as mappings, DEFAULT_ENTRY_BUDGET, WalkSummary};
use crate::x86::xsave::fx_bytes;
use std::ops::ControlFlow;
use std::path::PathBuf;

impl<A: Layout> KvmTarget<'_, A> {
    pub(super) fn dump(&mut self, c: &mut Console<'_, '_>, file: &str) -> CmdResult {
        let path = PathBuf::from(file);
        let mut cpus = Vec::new();
        for id in 0..self.vm.vcpu_count() {
            let s = self.vm.state(id)?;
            let fx = self.vm.xsave(id).ok().map(|x| fx_bytes(&x));
            cpus.push(CoreCpu {
                regs: s.regs,
                sregs: s.sregs,
                fx,
                signal: stop::core_signal(self.vm.frozen(id).or(self.vm.last_stop(id))),
            });
        }
        let regs = self.vm.paging_regs(self.selection.vcpu())?;
        let mem = self.vm.memory();
        let ram = mappings::ram_regions(mem);
        // The core's class follows the layout gdb is served, so the gdb that wrote it
        // (same architecture) opens it.
        let class = if A::WORD == 4 {
            CoreClass::Elf32
        } else {
            CoreClass::Elf64
        };
        let (mut segments, how, summary) =
            if self.vm.phys_mode() || regs.mode() == PagingMode::Disabled {
                let how = if self.vm.phys_mode() {
                    "phys mode: RAM at its physical addresses".to_string()
                } else {
                    "paging off: RAM identity mapped".to_string()
                };
                (mappings::identity_ram(&ram), how, WalkSummary::default())
            } else {
                let mut leaves = Vec::new();
                let summary = mappings::for_each_leaf(mem, &regs, 0, DEFAULT_ENTRY_BUDGET, |l| {
                    leaves.push(*l);
                    ControlFlow::Continue(())
                });
                let segs = mappings::clip_to_ram(&mappings::merge_segments(leaves), &ram);
                (segs, format!("{} paging mappings", regs.mode()), summary)
            };
        let mut dropped = 0;
        if class == CoreClass::Elf32 {
            // An ELF32 core cannot name virtual addresses above 4 GiB.
            let before = segments.len();
            segments.retain(|s| s.va.checked_add(s.len).is_some_and(|e| e <= 1 << 32));
            dropped = before - segments.len();
        }
        let err = |e| MonitorError::Dump(path.clone(), e);
        let file =
            std::fs::File::create(&path).map_err(|e| MonitorError::Create(path.clone(), e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let size = coredump::write_core(&mut out, class, &cpus, &segments, mem).map_err(err)?;
        let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        c.line(format!(
            "wrote {}: {size} bytes, ELF{} core, {} PT_LOAD segments ({how}), {} vCPU(s)",
            shown.display(),
            if class == CoreClass::Elf32 { 32 } else { 64 },
            segments.len(),
            cpus.len()
        ));
        if dropped > 0 {
            c.line(format!(
                "({dropped} mappings above 4 GiB do not fit an ELF32 core and were left out)"
            ));
        }
        Self::walk_notes(c, &summary);
        Ok(())
    }
}
