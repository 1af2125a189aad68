//! Guest RAM's memory slots: the layout KVM is given, and changing it. Watchpoints carve
//! their pages out of the slots (see `debug/watch.rs` for why); later, dirty logging and
//! copy-on-write snapshots will own slots here too.
//!
//! A layout change is only made while every vCPU is stopped: a vCPU must never run against
//! a half-changed layout.

use super::debug::watch::{WatchKind, Watchpoint};
use crate::memory::GuestMem;
use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use std::collections::BTreeMap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// The page size memory slots are carved at.
pub const PAGE: u64 = crate::x86::PAGE_SIZE;

/// Errors changing the memory slots.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemSlotError {
    /// KVM refused KVM_SET_USER_MEMORY_REGION.
    #[error("KVM refused a memory slot change (KVM_SET_USER_MEMORY_REGION)")]
    SetRegion(#[source] kvm_ioctls::Error),
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

/// The memory slots registered with KVM, and what they are made from.
pub struct MemSlots {
    regions: Vec<RamRegion>,
    /// The memory slots registered with KVM now.
    slots: Vec<kvm_userspace_memory_region>,
    /// Whether KVM offers read-only slots (KVM_CAP_READONLY_MEM).
    readonly_mem: bool,
    /// True while an instruction runs with every watched page mapped again.
    all_ram_mapped: bool,
}

impl MemSlots {
    /// Registers all of `mem` with `vm`, one slot per RAM region.
    ///
    /// The caller must keep `mem` alive for as long as `vm` exists: `Vm` declares its
    /// `vm_fd` field before `mem`, so the VM (and with it every slot) is dropped first.
    pub fn new(vm: &VmFd, mem: &GuestMem, readonly_mem: bool) -> Result<MemSlots, MemSlotError> {
        let regions: Vec<RamRegion> = mem
            .iter()
            .map(|r| RamRegion {
                gpa: r.start_addr().0,
                len: r.len(),
                host: r.as_ptr() as u64,
            })
            .collect();
        let mut slots = MemSlots {
            regions,
            slots: Vec::new(),
            readonly_mem,
            all_ram_mapped: false,
        };
        slots.relayout(vm, &[])?;
        Ok(slots)
    }

    /// Maps every watched page again (`on`) or goes back to carving them out; takes effect
    /// at the next [`MemSlots::relayout`].
    pub fn set_all_ram_mapped(&mut self, on: bool) {
        self.all_ram_mapped = on;
    }

    /// Re-registers guest RAM with KVM so that the pages `watches` need are read-only or
    /// absent. Only while every vCPU is stopped.
    pub fn relayout(&mut self, vm: &VmFd, watches: &[Watchpoint]) -> Result<(), MemSlotError> {
        let modes = if self.all_ram_mapped {
            BTreeMap::new()
        } else {
            page_modes(watches, self.readonly_mem)
        };
        let want = slot_layout(&self.regions, &modes);
        let key = |s: &kvm_userspace_memory_region| {
            (s.guest_phys_addr, s.memory_size, s.userspace_addr, s.flags)
        };
        if want.iter().map(key).eq(self.slots.iter().map(key)) {
            return Ok(());
        }
        // Slots may not overlap, so remove the old layout before adding the new one.
        for s in &self.slots {
            let gone = kvm_userspace_memory_region {
                memory_size: 0,
                ..*s
            };
            // SAFETY: deleting a slot never makes KVM access host memory.
            unsafe { vm.set_user_memory_region(gone) }.map_err(MemSlotError::SetRegion)?;
        }
        self.slots.clear();
        for s in &want {
            // SAFETY: every slot lies inside guest RAM's live mmap (`regions` was taken from
            // it), which outlives the VmFd: see `MemSlots::new`.
            unsafe { vm.set_user_memory_region(*s) }.map_err(MemSlotError::SetRegion)?;
            self.slots.push(*s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn wp(gpa: u64, len: u64, kind: WatchKind) -> Watchpoint {
        Watchpoint {
            addr: 0xffff_0000 + gpa,
            len,
            kind,
            pieces: vec![(GuestAddress(gpa), len, 0xffff_0000 + gpa)],
        }
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

    #[test]
    fn write_watches_fall_back_to_unmapped_pages_without_readonly_slots() {
        let modes = page_modes(&[wp(0x2000, 4, WatchKind::Write)], false);
        assert_eq!(modes.get(&0x2000), Some(&PageMode::Unmapped));
        let regions = [RamRegion {
            gpa: 0,
            len: 0x4000,
            host: 0x1000_0000,
        }];
        let got: Vec<(u64, u64)> = slot_layout(&regions, &modes)
            .iter()
            .map(|s| (s.guest_phys_addr, s.memory_size))
            .collect();
        assert_eq!(got, vec![(0, 0x2000), (0x3000, 0x1000)]);
    }

    #[test]
    fn each_region_is_carved_on_its_own() {
        // Two regions, as below and above a PCI hole; a watched page in the second.
        let regions = [
            RamRegion {
                gpa: 0,
                len: 0x2000,
                host: 0x1000_0000,
            },
            RamRegion {
                gpa: 0x10_0000,
                len: 0x3000,
                host: 0x2000_0000,
            },
        ];
        let modes = page_modes(&[wp(0x10_1000, 1, WatchKind::Read)], true);
        let slots = slot_layout(&regions, &modes);
        let got: Vec<(u32, u64, u64, u64)> = slots
            .iter()
            .map(|s| (s.slot, s.guest_phys_addr, s.memory_size, s.userspace_addr))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 0x2000, 0x1000_0000),
                (1, 0x10_0000, 0x1000, 0x2000_0000),
                (2, 0x10_2000, 0x1000, 0x2000_2000),
            ]
        );
    }
}
