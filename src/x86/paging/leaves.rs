//! The guest's page-table mappings as a whole: every leaf entry, found by walking the tree
//! once from CR3 and skipping subtrees that are not present (Intel SDM Vol. 3A, chapter 4).
//! `info mem` merges them into ranges, `info tlb` lists them page by page and `dump` turns
//! them into core-file segments.
//!
//! [`super::translate`] answers "where does this one address go"; this module answers
//! "what is mapped at all". Both walk the same level table with the same entry rules
//! ([`super::Rules::check`]); the tests check that they agree.

pub use super::Perms;
use super::{EntryKind, Level, PagingRegs, Rules, sign_extend};
use crate::x86::{PAGE_SIZE, PTE_ACCESSED, PTE_DIRTY, PTE_GLOBAL, PTE_PCD, PTE_PWT};
use std::ops::ControlFlow;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion};

/// How many page-table entries one enumeration reads at most. A guest can make its tables
/// point at themselves and so describe billions of mappings; this bounds the time a monitor
/// command takes (about 0.1 s) while covering any sane set of tables many times over.
pub const DEFAULT_ENTRY_BUDGET: u64 = 1 << 24;

/// One page the guest maps: a leaf entry of its page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First virtual address of the page (canonical, sign-extended).
    pub va: u64,
    /// Guest-physical address of the page.
    pub pa: u64,
    /// Page size: 4 KiB, 2 MiB, 4 MiB or 1 GiB.
    pub size: u64,
    /// Effective access rights.
    pub perms: Perms,
    /// The raw leaf entry.
    pub entry: u64,
}

impl Leaf {
    /// QEMU's `info tlb` flag letters: X(D) G(lobal) P(S) D(irty) A(ccessed) C(PCD) T(PWT)
    /// U(ser) W(ritable); U, W and X are the effective rights over all levels.
    pub fn flag_letters(&self) -> String {
        let f = |set: bool, c: char| if set { c } else { '-' };
        let e = self.entry;
        [
            f(!self.perms.executable, 'X'),
            f(e & PTE_GLOBAL != 0 && self.size >= PAGE_SIZE, 'G'),
            f(self.size > PAGE_SIZE, 'P'),
            f(e & PTE_DIRTY != 0, 'D'),
            f(e & PTE_ACCESSED != 0, 'A'),
            f(e & PTE_PCD != 0, 'C'),
            f(e & PTE_PWT != 0, 'T'),
            f(self.perms.user, 'U'),
            f(self.perms.writable, 'W'),
        ]
        .iter()
        .collect()
    }
}

/// What an enumeration met besides mappings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkSummary {
    /// Entries read.
    pub entries_read: u64,
    /// The entry budget ran out, so later mappings were not visited.
    pub budget_exhausted: bool,
    /// The visitor stopped the walk.
    pub stopped: bool,
    /// Present entries skipped because they set reserved bits (the guest would fault).
    pub reserved: u64,
    /// Tables that lie outside guest RAM, so could not be read.
    pub tables_outside_ram: u64,
}

struct Walker<'a, M: ?Sized, F> {
    mem: &'a M,
    rules: Rules,
    /// Linear-address width for sign extension (None: 32-bit linear addresses).
    va_bits: Option<u32>,
    from: u64,
    budget: u64,
    visit: F,
    summary: WalkSummary,
}

impl<M: GuestMemory + ?Sized, F: FnMut(&Leaf) -> ControlFlow<()>> Walker<'_, M, F> {
    fn canonical(&self, va: u64) -> u64 {
        self.va_bits.map_or(va, |bits| sign_extend(va, bits))
    }

    /// Reads one whole table: `entries` entries at `gpa`.
    fn read_table(&self, gpa: u64, entries: u64) -> Option<Vec<u64>> {
        let size = self.rules.entry_size();
        let mut raw = vec![0u8; (entries * size) as usize];
        self.mem.read_slice(&mut raw, GuestAddress(gpa)).ok()?;
        Some(if self.rules.wide {
            raw.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        } else {
            raw.chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
                .collect()
        })
    }

    fn table(&mut self, levels: &[Level], gpa: u64, va_base: u64, perms: Perms) -> ControlFlow<()> {
        let Some((lvl, below)) = levels.split_first() else {
            return ControlFlow::Continue(());
        };
        let Some(entries) = self.read_table(gpa, lvl.entries) else {
            self.summary.tables_outside_ram += 1;
            return ControlFlow::Continue(());
        };
        let span = 1u64 << lvl.shift;
        for (i, &entry) in entries.iter().enumerate() {
            let va = self.canonical(va_base | ((i as u64) << lvl.shift));
            // The whole subtree lies below the starting address.
            if va.saturating_add(span - 1) < self.from {
                continue;
            }
            if self.summary.entries_read >= self.budget {
                self.summary.budget_exhausted = true;
                return ControlFlow::Break(());
            }
            self.summary.entries_read += 1;
            let mut p = perms;
            match self.rules.check(lvl, entry, &mut p) {
                EntryKind::NotPresent => {}
                EntryKind::Reserved(_) => self.summary.reserved += 1,
                EntryKind::Table(next) => self.table(below, next, va, p)?,
                EntryKind::Page { base, size } => {
                    let leaf = Leaf {
                        va,
                        pa: base,
                        size,
                        perms: p,
                        entry,
                    };
                    if (self.visit)(&leaf).is_break() {
                        self.summary.stopped = true;
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Visits every page the guest maps at or above `from`, in ascending virtual-address order,
/// until `visit` breaks or `budget` entries have been read. Paging disabled maps nothing
/// here (virtual is physical; see [`identity_ram`]).
pub fn for_each_leaf<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    from: u64,
    budget: u64,
    visit: impl FnMut(&Leaf) -> ControlFlow<()>,
) -> WalkSummary {
    let Some(h) = regs.hierarchy() else {
        return WalkSummary::default();
    };
    let mut w = Walker {
        mem,
        rules: h.rules,
        va_bits: h.va_bits,
        from,
        budget,
        visit,
        summary: WalkSummary::default(),
    };
    let _ = w.table(h.levels, h.root, 0, Perms::ALL);
    w.summary
}

/// A run of virtual addresses with the same access rights (`info mem`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First virtual address.
    pub start: u64,
    /// One past the last virtual address (2^64 when the range reaches the top).
    pub end: u128,
    /// Access rights.
    pub perms: Perms,
}

/// Merges leaves, in ascending order, into ranges of contiguous virtual addresses with
/// identical rights, as QEMU's `info mem` does.
#[derive(Default)]
pub struct RangeMerger {
    cur: Option<Range>,
}

impl RangeMerger {
    /// Adds a leaf; returns the range it closed, if it did not extend the current one.
    pub fn push(&mut self, leaf: &Leaf) -> Option<Range> {
        let end = u128::from(leaf.va) + u128::from(leaf.size);
        // No `if let … &&` chains: they need Rust 1.88 and the crate supports 1.85.
        if let Some(cur) = &mut self.cur {
            if cur.end == u128::from(leaf.va) && cur.perms == leaf.perms {
                cur.end = end;
                return None;
            }
        }
        self.cur.replace(Range {
            start: leaf.va,
            end,
            perms: leaf.perms,
        })
    }

    /// The last open range.
    pub fn finish(self) -> Option<Range> {
        self.cur
    }
}

/// Merges ranges of leaves (e.g. collected in a Vec) in one go.
pub fn merge_ranges(leaves: &[Leaf]) -> Vec<Range> {
    let mut m = RangeMerger::default();
    let mut out: Vec<Range> = leaves.iter().filter_map(|l| m.push(l)).collect();
    out.extend(m.finish());
    out
}

/// A run of virtual addresses backed by one run of guest RAM: a core-file segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First virtual address.
    pub va: u64,
    /// Guest-physical address behind it.
    pub pa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Access rights.
    pub perms: Perms,
}

/// Merges leaves, in ascending order, into segments contiguous in both virtual and
/// physical addresses with identical rights.
pub fn merge_segments(leaves: impl IntoIterator<Item = Leaf>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for l in leaves {
        if let Some(s) = out.last_mut() {
            if s.va.checked_add(s.len) == Some(l.va)
                && s.pa.checked_add(s.len) == Some(l.pa)
                && s.perms == l.perms
            {
                s.len += l.size;
                continue;
            }
        }
        out.push(Segment {
            va: l.va,
            pa: l.pa,
            len: l.size,
            perms: l.perms,
        });
    }
    out
}

/// The guest RAM regions as (start, length).
pub fn ram_regions<M: GuestMemoryBackend + ?Sized>(mem: &M) -> Vec<(u64, u64)> {
    mem.iter().map(|r| (r.start_addr().0, r.len())).collect()
}

/// Cuts segments down to the parts whose physical side lies in `ram` (start, length),
/// splitting at region edges: a core file can only hold bytes that exist.
pub fn clip_to_ram(segments: &[Segment], ram: &[(u64, u64)]) -> Vec<Segment> {
    let mut out = Vec::new();
    for s in segments {
        let (s_lo, s_hi) = (u128::from(s.pa), u128::from(s.pa) + u128::from(s.len));
        for &(start, len) in ram {
            let (r_lo, r_hi) = (u128::from(start), u128::from(start) + u128::from(len));
            let lo = s_lo.max(r_lo);
            let hi = s_hi.min(r_hi);
            if lo < hi {
                let skip = (lo - s_lo) as u64;
                out.push(Segment {
                    va: s.va.wrapping_add(skip),
                    pa: lo as u64,
                    len: (hi - lo) as u64,
                    perms: s.perms,
                });
            }
        }
    }
    out.sort_by_key(|s| s.va);
    out
}

/// With paging disabled (or in phys mode), virtual is physical: one segment per RAM region.
pub fn identity_ram(ram: &[(u64, u64)]) -> Vec<Segment> {
    ram.iter()
        .map(|&(start, len)| Segment {
            va: start,
            pa: start,
            len,
            perms: Perms::ALL,
        })
        .collect()
}

/// Human-readable size: 4K, 2M, 1G, 1.5G …
pub fn size_name(bytes: u128) -> String {
    const UNITS: [(u128, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes % unit == 0 {
                format!("{}{name}", bytes / unit)
            } else {
                format!("{:.1}{name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::paging::{GuestVirtAddr, translate};
    use crate::x86::{Cr0, Cr4, Efer, PTE_PRESENT, PTE_PS, PTE_USER, PTE_WRITABLE, PTE_XD};
    use vm_memory::GuestMemoryMmap;

    const MEM_SIZE: usize = 32 << 20;
    const PRW: u64 = PTE_PRESENT | PTE_WRITABLE;
    const PRW_US: u64 = PRW | PTE_USER;
    /// CR0.PG with CR0.PE, as a real guest sets them.
    const CR0_PG_PE: u64 = Cr0::PG.bits() | Cr0::PE.bits();
    const EFER_LME_LMA: u64 = Efer::LME.bits() | Efer::LMA.bits();

    fn ram() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest RAM")
    }

    fn put64(mem: &GuestMemoryMmap<()>, gpa: u64, val: u64) {
        mem.write_obj(val, GuestAddress(gpa)).expect("write");
    }

    fn put32(mem: &GuestMemoryMmap<()>, gpa: u64, val: u32) {
        mem.write_obj(val, GuestAddress(gpa)).expect("write");
    }

    fn long_regs(cr3: u64, nxe: bool) -> PagingRegs {
        PagingRegs {
            cr0: CR0_PG_PE,
            cr3,
            cr4: Cr4::PAE.bits(),
            efer: EFER_LME_LMA | if nxe { Efer::NXE.bits() } else { 0 },
        }
    }

    fn leaves(mem: &GuestMemoryMmap<()>, regs: &PagingRegs) -> (Vec<Leaf>, WalkSummary) {
        let mut v = Vec::new();
        let s = for_each_leaf(mem, regs, 0, DEFAULT_ENTRY_BUDGET, |l| {
            v.push(*l);
            ControlFlow::Continue(())
        });
        (v, s)
    }

    /// Every leaf agrees with the single-address walker, at its first and last byte.
    fn agrees_with_translate(mem: &GuestMemoryMmap<()>, regs: &PagingRegs, leaves: &[Leaf]) {
        for l in leaves {
            for off in [0, l.size - 1] {
                let t = translate(mem, regs, GuestVirtAddr(l.va + off)).expect("translates");
                assert_eq!(t.gpa.0, l.pa + off, "{l:x?}");
                assert_eq!(t.page_size, l.size);
                assert_eq!(
                    (t.writable, t.user, t.executable),
                    (l.perms.writable, l.perms.user, l.perms.executable)
                );
            }
        }
    }

    /// A 4-level layout like the higher-half guest: 0..8 MiB identity in 2 MiB pages, the
    /// same PD again at 0xffffffff80000000, and one 4 KiB page at 0xffffffffc0000000.
    fn higher_half(mem: &GuestMemoryMmap<()>) -> PagingRegs {
        let (pml4, pdpt_lo, pdpt_hi, pd, pd4k, pt) =
            (0x10000, 0x11000, 0x12000, 0x13000, 0x14000, 0x15000);
        put64(mem, pml4, pdpt_lo | PRW);
        put64(mem, pml4 + 511 * 8, pdpt_hi | PRW);
        put64(mem, pdpt_lo, pd | PRW);
        put64(mem, pdpt_hi + 510 * 8, pd | PRW);
        put64(mem, pdpt_hi + 511 * 8, pd4k | PRW);
        for i in 0..4 {
            put64(mem, pd + i * 8, (i << 21) | PRW | PTE_PS);
        }
        put64(mem, pd4k, pt | PRW);
        put64(mem, pt, 0x0050_a000 | PRW | PTE_ACCESSED | PTE_XD);
        long_regs(pml4, true)
    }

    #[test]
    fn higher_half_leaves_ranges_and_segments() {
        let mem = ram();
        let regs = higher_half(&mem);
        let (l, summary) = leaves(&mem, &regs);
        assert_eq!(summary.reserved, 0);
        assert!(!summary.budget_exhausted);
        assert_eq!(l.len(), 9);
        assert_eq!((l[0].va, l[0].pa, l[0].size), (0, 0, 2 << 20));
        assert_eq!(l[4].va, 0xffff_ffff_8000_0000);
        let last = l[8];
        assert_eq!(
            (last.va, last.pa, last.size),
            (0xffff_ffff_c000_0000, 0x50_a000, 4096)
        );
        assert!(!last.perms.executable && last.perms.writable && !last.perms.user);
        assert_eq!(last.flag_letters(), "X---A---W");
        assert_eq!(l[0].flag_letters(), "--P-----W");
        agrees_with_translate(&mem, &regs, &l);

        let ranges = merge_ranges(&l);
        assert_eq!(
            ranges
                .iter()
                .map(|r| (r.start, r.end, r.perms.letters()))
                .collect::<Vec<_>>(),
            [
                (0, 8 << 20, "-rwx".to_string()),
                (0xffff_ffff_8000_0000, 0xffff_ffff_8080_0000, "-rwx".into()),
                (0xffff_ffff_c000_0000, 0xffff_ffff_c000_1000, "-rw-".into()),
            ]
        );

        let segs = merge_segments(l.iter().copied());
        assert_eq!(segs.len(), 3);
        // 8 MiB of mappings, 6 MiB of RAM: the tail of each 8 MiB run goes.
        let clipped = clip_to_ram(&segs, &[(0, 6 << 20)]);
        assert_eq!(
            clipped
                .iter()
                .map(|s| (s.va, s.pa, s.len))
                .collect::<Vec<_>>(),
            [
                (0, 0, 6 << 20),
                (0xffff_ffff_8000_0000, 0, 6 << 20),
                (0xffff_ffff_c000_0000, 0x50_a000, 4096)
            ]
        );
    }

    #[test]
    fn starting_address_skips_lower_subtrees() {
        let mem = ram();
        let regs = higher_half(&mem);
        let mut v = Vec::new();
        let s = for_each_leaf(
            &mem,
            &regs,
            0xffff_ffff_8020_0000,
            DEFAULT_ENTRY_BUDGET,
            |l| {
                v.push(l.va);
                ControlFlow::Continue(())
            },
        );
        assert_eq!(
            v,
            [
                0xffff_ffff_8020_0000,
                0xffff_ffff_8040_0000,
                0xffff_ffff_8060_0000,
                0xffff_ffff_c000_0000
            ]
        );
        // The low half and the PD's first entry are skipped unread (a full walk reads 3584).
        assert!(s.entries_read < 4 * 512, "{s:?}");
    }

    #[test]
    fn visitor_can_stop_and_budget_bounds_self_referencing_tables() {
        let mem = ram();
        let regs = higher_half(&mem);
        let mut n = 0;
        let s = for_each_leaf(&mem, &regs, 0, DEFAULT_ENTRY_BUDGET, |_| {
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(s.stopped && n == 2);

        // Every entry points back at the one table, at every level: 512^4 4 KiB pages.
        let mem = ram();
        for i in 0..512 {
            put64(&mem, 0x10000 + i * 8, 0x10000 | PRW);
        }
        let regs = long_regs(0x10000, false);
        let mut count = 0u64;
        let s = for_each_leaf(&mem, &regs, 0, 100_000, |_| {
            count += 1;
            ControlFlow::Continue(())
        });
        assert!(s.budget_exhausted);
        assert_eq!(s.entries_read, 100_000);
        assert!(count > 90_000, "{count}");
    }

    #[test]
    fn reserved_bits_and_missing_tables_are_skipped_like_translate() {
        let mem = ram();
        let regs = higher_half(&mem);
        // PS in a PML4E is reserved; XD without NXE is reserved.
        put64(&mem, 0x10000, 0x11000 | PRW | PTE_PS);
        let regs_no_nxe = PagingRegs {
            efer: EFER_LME_LMA,
            ..regs
        };
        let (l, s) = leaves(&mem, &regs_no_nxe);
        assert_eq!(s.reserved, 2, "{s:?}");
        assert_eq!(l.len(), 4, "only the 0xffffffff80000000 run is left");
        assert!(translate(&mem, &regs_no_nxe, GuestVirtAddr(0)).is_err());
        assert!(translate(&mem, &regs_no_nxe, GuestVirtAddr(0xffff_ffff_c000_0000)).is_err());
        // A PD beyond the end of RAM.
        put64(&mem, 0x12000 + 510 * 8, 0x8000_0000 | PRW);
        let (l, s) = leaves(&mem, &regs);
        assert_eq!(s.tables_outside_ram, 1);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn bits32_with_4m_and_4k_pages() {
        let mem = ram();
        let regs = PagingRegs {
            cr0: CR0_PG_PE,
            cr3: 0x1000,
            cr4: Cr4::PSE.bits(),
            efer: 0,
        };
        // PD[0] → PT with pages 0 and 1; PD[0x300] = 4 MiB page at 0xc0000000 → 0x800000.
        put32(&mem, 0x1000, 0x2000 | PRW_US as u32);
        put32(&mem, 0x2000, 0x0030_0000 | PRW_US as u32 | PTE_DIRTY as u32);
        put32(&mem, 0x2004, 0x0030_1000 | PTE_PRESENT as u32);
        put32(
            &mem,
            0x1000 + 0x300 * 4,
            0x0080_0000 | (PRW | PTE_PS) as u32,
        );
        let (l, _) = leaves(&mem, &regs);
        assert_eq!(
            l.iter().map(|l| (l.va, l.pa, l.size)).collect::<Vec<_>>(),
            [
                (0, 0x30_0000, 4096),
                (0x1000, 0x30_1000, 4096),
                (0xc000_0000, 0x80_0000, 4 << 20)
            ]
        );
        agrees_with_translate(&mem, &regs, &l);
        let ranges = merge_ranges(&l);
        assert_eq!(ranges.len(), 3, "rights differ between the two 4 KiB pages");
        assert_eq!(ranges[0].perms.letters(), "urwx");
        assert_eq!(ranges[1].perms.letters(), "-r-x");
    }

    #[test]
    fn pae_tables() {
        let mem = ram();
        let regs = PagingRegs {
            cr0: CR0_PG_PE,
            cr3: 0x1020,
            cr4: Cr4::PAE.bits(),
            efer: Efer::NXE.bits(),
        };
        put64(&mem, 0x1020 + 3 * 8, 0x3000 | PTE_PRESENT);
        put64(&mem, 0x3000, 0x0060_0000 | PRW | PTE_PS);
        put64(&mem, 0x3008, 0x4000 | PRW);
        put64(&mem, 0x4000 + 8 * 5, 0x0070_5000 | PRW | PTE_XD);
        let (l, _) = leaves(&mem, &regs);
        assert_eq!(
            l.iter().map(|l| (l.va, l.pa, l.size)).collect::<Vec<_>>(),
            [
                (0xc000_0000, 0x60_0000, 2 << 20),
                (0xc020_5000, 0x70_5000, 4096)
            ]
        );
        agrees_with_translate(&mem, &regs, &l);
    }

    #[test]
    fn merging_needs_contiguity() {
        let p = Perms::ALL;
        let leaf = |va, pa| Leaf {
            va,
            pa,
            size: 4096,
            perms: p,
            entry: 0,
        };
        // Virtually contiguous, physically reversed: one range, two segments.
        let l = [
            leaf(0x1000, 0x9000),
            leaf(0x2000, 0x8000),
            leaf(0x4000, 0x7000),
        ];
        assert_eq!(merge_ranges(&l).len(), 2);
        assert_eq!(merge_segments(l).len(), 3);
        let l = [leaf(0x1000, 0x8000), leaf(0x2000, 0x9000)];
        assert_eq!(
            merge_segments(l),
            [Segment {
                va: 0x1000,
                pa: 0x8000,
                len: 0x2000,
                perms: p
            }]
        );
        // The top page of the address space.
        let top = [leaf(0xffff_ffff_ffff_f000, 0)];
        assert_eq!(merge_ranges(&top)[0].end, 1u128 << 64);
    }

    #[test]
    fn clipping_splits_at_ram_holes() {
        let s = [Segment {
            va: 0x1_0000_0000,
            pa: 0xbff0_0000,
            len: 0x4020_0000,
            perms: Perms::ALL,
        }];
        let ram = [(0, 3 << 30), (4 << 30, 1 << 30)];
        let c = clip_to_ram(&s, &ram);
        assert_eq!(
            c.iter().map(|s| (s.va, s.pa, s.len)).collect::<Vec<_>>(),
            [
                (0x1_0000_0000, 0xbff0_0000, 0x10_0000),
                (0x1_4010_0000, 0x1_0000_0000, 0x10_0000)
            ]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size_name(4096), "4K");
        assert_eq!(size_name(2 << 20), "2M");
        assert_eq!(size_name(3 << 29), "1.5G");
        assert_eq!(size_name(100), "100");
    }
}
