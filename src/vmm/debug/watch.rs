//! Watchpoints of any length and number, built on memory slots instead of debug registers.
//!
//! Debug-register data breakpoints are four 1/2/4/8-byte slots, and on PVM they never fire
//! at all (KVM-FACTS.md). Instead, a page holding a write watch is put in a read-only
//! memory slot (KVM_MEM_READONLY: writes exit to us as MMIO, reads run at full speed), and a
//! page holding a read or access watch gets no slot at all (every access exits). The vCPU
//! thread completes each such access on guest RAM itself and reports a hit only when the
//! access overlaps a watched range, so the page granularity never shows.

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use std::collections::BTreeMap;
use vm_memory::GuestAddress;

/// The page size memory slots are carved at.
pub const PAGE: u64 = 4096;

/// What a watchpoint catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// Writes.
    Write,
    /// Reads.
    Read,
    /// Reads and writes.
    Access,
}

impl WatchKind {
    /// Whether an access of this direction triggers the watchpoint.
    pub fn catches(self, write: bool) -> bool {
        match self {
            WatchKind::Write => write,
            WatchKind::Read => !write,
            WatchKind::Access => true,
        }
    }
}

/// One watchpoint: a linear range and the guest-physical pieces it was translated to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchpoint {
    /// First linear address watched.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it catches.
    pub kind: WatchKind,
    /// (guest-physical start, length, linear start) of each piece, one per page run.
    pub pieces: Vec<(GuestAddress, u64, u64)>,
}

impl Watchpoint {
    /// The linear address of the first watched byte in the physical range `[gpa, gpa+len)`.
    pub fn hit(&self, gpa: u64, len: u64, write: bool) -> Option<u64> {
        if !self.kind.catches(write) {
            return None;
        }
        self.pieces.iter().find_map(|&(start, plen, linear)| {
            let lo = start.0.max(gpa);
            let hi = (start.0 + plen).min(gpa + len);
            (lo < hi).then(|| linear + (lo - start.0))
        })
    }
}

/// How a guest page must be mapped for the watchpoints on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageMode {
    /// Read-only slot: writes exit.
    ReadOnly,
    /// No slot: every access exits.
    Unmapped,
}

/// The page modes the watchpoints need. Without KVM_CAP_READONLY_MEM, write watches fall
/// back to unmapped pages.
pub fn page_modes(watches: &[Watchpoint], readonly_mem: bool) -> BTreeMap<u64, PageMode> {
    let mut modes = BTreeMap::new();
    for w in watches {
        let mode = if w.kind == WatchKind::Write && readonly_mem {
            PageMode::ReadOnly
        } else {
            PageMode::Unmapped
        };
        for &(gpa, len, _) in &w.pieces {
            let mut page = gpa.0 & !(PAGE - 1);
            while page < gpa.0 + len {
                let m = modes.entry(page).or_insert(mode);
                *m = (*m).max(mode);
                page += PAGE;
            }
        }
    }
    modes
}

/// One RAM region: guest-physical start, length, host address.
#[derive(Clone, Copy, Debug)]
pub struct RamRegion {
    /// Guest-physical start.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Host virtual address of the start.
    pub host: u64,
}

/// The memory slots for `regions` with `modes` carved out, numbered from 0.
pub fn slot_layout(
    regions: &[RamRegion],
    modes: &BTreeMap<u64, PageMode>,
) -> Vec<kvm_userspace_memory_region> {
    let mut slots = Vec::new();
    let mut push = |gpa: u64, len: u64, region: &RamRegion, flags: u32| {
        if len > 0 {
            slots.push(kvm_userspace_memory_region {
                slot: 0,
                flags,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: region.host + (gpa - region.gpa),
            });
        }
    };
    for r in regions {
        let end = r.gpa + r.len;
        let mut cursor = r.gpa;
        let mut iter = modes.range(r.gpa..end).peekable();
        while let Some((&page, &mode)) = iter.next() {
            push(cursor, page - cursor, r, 0);
            // Merge a run of consecutive pages with the same mode.
            let mut run_end = page + PAGE;
            while let Some(&(&next, &m)) = iter.peek() {
                if next == run_end && m == mode {
                    run_end += PAGE;
                    iter.next();
                } else {
                    break;
                }
            }
            if mode == PageMode::ReadOnly {
                push(page, run_end - page, r, KVM_MEM_READONLY);
            }
            cursor = run_end;
        }
        push(cursor, end - cursor, r, 0);
    }
    for (i, s) in slots.iter_mut().enumerate() {
        s.slot = i as u32;
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wp(gpa: u64, len: u64, kind: WatchKind) -> Watchpoint {
        Watchpoint {
            addr: 0xffff_0000 + gpa,
            len,
            kind,
            pieces: vec![(GuestAddress(gpa), len, 0xffff_0000 + gpa)],
        }
    }

    #[test]
    fn hits_filter_by_range_and_direction() {
        let w = wp(0x1010, 8, WatchKind::Write);
        assert_eq!(w.hit(0x1000, 8, true), None);
        assert_eq!(w.hit(0x100c, 8, true), Some(0xffff_1010));
        assert_eq!(w.hit(0x1017, 1, true), Some(0xffff_1017));
        assert_eq!(w.hit(0x1018, 1, true), None);
        assert_eq!(w.hit(0x1010, 8, false), None);
        let r = wp(0x1010, 8, WatchKind::Read);
        assert_eq!(r.hit(0x1010, 4, false), Some(0xffff_1010));
        assert_eq!(r.hit(0x1010, 4, true), None);
    }

    #[test]
    fn layout_carves_pages() {
        let regions = [RamRegion {
            gpa: 0,
            len: 0x10_000,
            host: 0x7000_0000,
        }];
        let watches = [
            wp(0x3ff0, 0x20, WatchKind::Write), // straddles pages 3 and 4
            wp(0x8000, 4, WatchKind::Access),
            wp(0x8010, 4, WatchKind::Write), // same page: unmapped wins
        ];
        let modes = page_modes(&watches, true);
        assert_eq!(modes.get(&0x3000), Some(&PageMode::ReadOnly));
        assert_eq!(modes.get(&0x4000), Some(&PageMode::ReadOnly));
        assert_eq!(modes.get(&0x8000), Some(&PageMode::Unmapped));
        let slots = slot_layout(&regions, &modes);
        let got: Vec<(u64, u64, u32)> = slots
            .iter()
            .map(|s| (s.guest_phys_addr, s.memory_size, s.flags))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0x3000, 0),
                (0x3000, 0x2000, KVM_MEM_READONLY),
                (0x5000, 0x3000, 0),
                (0x9000, 0x7000, 0),
            ]
        );
        assert_eq!(slots[3].userspace_addr, 0x7000_9000);
        assert_eq!(slots[3].slot, 3);
        let none = slot_layout(&regions, &BTreeMap::new());
        assert_eq!(none.len(), 1);
    }
}
