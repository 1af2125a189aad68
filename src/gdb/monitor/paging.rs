//! `info mem`, `info tlb` and `translate`: the guest's page tables as the selected vCPU
//! sees them.

use super::{CmdResult, Console, MonitorError, parse_num};
use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;
use crate::x86::paging::leaves::{
    self as mappings, DEFAULT_ENTRY_BUDGET, Leaf, RangeMerger, WalkSummary,
};
use crate::x86::paging::{self, GuestVirtAddr, LevelEntry, PagingMode, PagingRegs};
use crate::x86::{
    PAGE_SIZE, PTE_ACCESSED, PTE_DIRTY, PTE_GLOBAL, PTE_PCD, PTE_PRESENT, PTE_PWT, PTE_USER,
    PTE_WRITABLE, PTE_XD,
};
use std::ops::ControlFlow;
use vm_memory::{GuestAddress, GuestMemoryBackend};

/// How many lines `info tlb` prints before it only counts.
const TLB_LINES: usize = 256;
/// How many ranges `info mem` prints before it only counts.
const MEM_LINES: usize = 512;

/// The address width to print for a paging mode: 32-bit modes have 32-bit linear addresses.
fn hex_width(mode: PagingMode) -> usize {
    match mode {
        PagingMode::Disabled | PagingMode::Bits32 | PagingMode::Pae => 8,
        PagingMode::Level4 | PagingMode::Level5 => 16,
    }
}

/// Names of the set bits of a paging-structure entry (SDM Tables 4-14 to 4-20).
fn entry_flags(entry: u64, mode: PagingMode, is_leaf: bool, large: bool) -> String {
    let mut f = Vec::new();
    for (bit, name) in [
        (PTE_PRESENT, "P"),
        (PTE_WRITABLE, "W"),
        (PTE_USER, "U"),
        (PTE_PWT, "PWT"),
        (PTE_PCD, "PCD"),
        (PTE_ACCESSED, "A"),
    ] {
        if entry & bit != 0 {
            f.push(name);
        }
    }
    if is_leaf && entry & PTE_DIRTY != 0 {
        f.push("D");
    }
    if large {
        f.push("PS");
    }
    if is_leaf && entry & PTE_GLOBAL != 0 {
        f.push("G");
    }
    if mode != PagingMode::Bits32 && entry & PTE_XD != 0 {
        f.push("XD");
    }
    f.join(" ")
}

impl<A: Layout> KvmTarget<'_, A> {
    /// The selected vCPU and its paging registers.
    fn paging(&self) -> Result<(usize, PagingRegs), MonitorError> {
        let id = self.selection.vcpu();
        // state() fails while the vCPU runs; paging_regs() alone would be stale then.
        self.vm.state(id)?;
        Ok((id, self.vm.paging_regs(id)?))
    }

    pub(super) fn walk_notes(c: &mut Console<'_, '_>, s: &WalkSummary) {
        if s.reserved > 0 {
            c.line(format!(
                "({} present entries set reserved bits and map nothing: the guest would fault)",
                s.reserved
            ));
        }
        if s.tables_outside_ram > 0 {
            c.line(format!(
                "({} page tables lie outside guest RAM and were skipped)",
                s.tables_outside_ram
            ));
        }
        if s.budget_exhausted {
            c.line(format!(
                "(stopped after reading {} entries: the tables map more than kvmgdb lists)",
                s.entries_read
            ));
        }
    }

    fn header(c: &mut Console<'_, '_>, regs: &PagingRegs, id: usize) -> bool {
        if regs.mode() == PagingMode::Disabled {
            c.line("paging is disabled (CR0.PG=0): virtual addresses are physical");
            return false;
        }
        c.line(format!(
            "{} paging, CR3={:#x} (vCPU {id})",
            regs.mode(),
            regs.cr3
        ));
        true
    }

    pub(super) fn info_mem(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        let (id, regs) = self.paging()?;
        if !Self::header(c, &regs, id) {
            for (start, len) in mappings::ram_regions(self.vm.memory()) {
                c.line(format!(
                    "{start:016x}-{:016x} {len:016x} urwx (guest RAM)",
                    start + len
                ));
            }
            return Ok(());
        }
        let w = hex_width(regs.mode());
        let mut merger = RangeMerger::default();
        let (mut shown, mut more) = (0usize, 0usize);
        let mut print = |c: &mut Console<'_, '_>, r: mappings::Range| {
            if shown < MEM_LINES {
                c.line(format!(
                    "{:0w$x}-{:0w$x} {:0w$x} {}",
                    r.start,
                    r.end,
                    r.end - u128::from(r.start),
                    r.perms.letters()
                ));
                shown += 1;
            } else {
                more += 1;
            }
        };
        let summary =
            mappings::for_each_leaf(self.vm.memory(), &regs, 0, DEFAULT_ENTRY_BUDGET, |leaf| {
                if let Some(r) = merger.push(leaf) {
                    print(c, r);
                }
                ControlFlow::Continue(())
            });
        if let Some(r) = merger.finish() {
            print(c, r);
        }
        if shown == 0 {
            c.line("nothing is mapped");
        }
        if more > 0 {
            c.line(format!("… ({more} more ranges)"));
        }
        Self::walk_notes(c, &summary);
        Ok(())
    }

    pub(super) fn info_tlb(&mut self, c: &mut Console<'_, '_>, from: Option<&str>) -> CmdResult {
        let from = from.map(parse_num).transpose()?.unwrap_or(0);
        let (id, regs) = self.paging()?;
        if !Self::header(c, &regs, id) {
            return Ok(());
        }
        let w = hex_width(regs.mode());
        let (mut shown, mut more) = (0usize, 0u64);
        let mut next: Option<u64> = None;
        let summary = mappings::for_each_leaf(
            self.vm.memory(),
            &regs,
            from,
            DEFAULT_ENTRY_BUDGET,
            |l: &Leaf| {
                // A large page that starts below `from` still covers it: list it.
                if shown < TLB_LINES {
                    c.line(format!(
                        "{:0w$x}: {:0w$x} {} {}",
                        l.va,
                        l.pa,
                        l.flag_letters(),
                        mappings::size_name(l.size.into())
                    ));
                    shown += 1;
                } else {
                    next.get_or_insert(l.va);
                    more += 1;
                }
                ControlFlow::Continue(())
            },
        );
        if shown == 0 {
            c.line(format!("nothing is mapped at or above {from:#x}"));
        }
        if let Some(next) = next {
            c.line(format!(
                "… ({more} more pages; 'monitor info tlb {next:#x}' lists from there)"
            ));
        }
        Self::walk_notes(c, &summary);
        Ok(())
    }

    pub(super) fn translate(&mut self, c: &mut Console<'_, '_>, addr: &str) -> CmdResult {
        let va = parse_num(addr)?;
        let (id, regs) = self.paging()?;
        let mode = regs.mode();
        let mem = self.vm.memory();
        let (levels, result) = paging::translate_explained(mem, &regs, GuestVirtAddr(va));
        if mode == PagingMode::Disabled {
            let gpa = result.map(|t| t.gpa.0).unwrap_or(va);
            c.line(format!(
                "paging is disabled (CR0.PG=0): {va:#x} is guest-physical {gpa:#x}{}",
                if mem.address_in_range(GuestAddress(gpa)) {
                    ""
                } else {
                    " (not guest RAM)"
                }
            ));
            return Ok(());
        }
        c.line(format!(
            "{va:#x}: {mode} paging, CR3={:#x} (vCPU {id})",
            regs.cr3
        ));
        let w = if mode == PagingMode::Bits32 { 8 } else { 16 };
        let n = levels.len();
        for (i, l) in levels.iter().enumerate() {
            let LevelEntry {
                level,
                index,
                entry_gpa,
                entry,
                ..
            } = *l;
            let is_last = i + 1 == n;
            let large = is_last && result.as_ref().is_ok_and(|t| t.page_size > PAGE_SIZE);
            let is_leaf = is_last && result.is_ok();
            c.line(format!(
                "  {:<10} at {:#x} = {entry:#0width$x} {}",
                format!("{level}[{index}]"),
                entry_gpa.0,
                entry_flags(entry, mode, is_leaf, large),
                width = w + 2
            ));
        }
        match result {
            Ok(t) => {
                let ram = if mem.address_in_range(t.gpa) {
                    ""
                } else {
                    ", not guest RAM"
                };
                c.line(format!(
                    "  => guest-physical {:#x} ({} page at {:#x}{ram}; {}, {}, {})",
                    t.gpa.0,
                    mappings::size_name(t.page_size.into()),
                    t.gpa.0 & !(t.page_size - 1),
                    if t.user { "user" } else { "supervisor" },
                    if t.writable { "writable" } else { "read-only" },
                    if t.executable {
                        "executable"
                    } else {
                        "no-execute"
                    },
                ));
            }
            Err(e) => c.line(format!("  => not mapped: {e}")),
        }
        Ok(())
    }
}
