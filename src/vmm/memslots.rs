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
use std::collections::{BTreeMap, BTreeSet};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// The page size memory slots are carved at.
pub const PAGE: u64 = crate::x86::PAGE_SIZE;

/// Errors changing the memory slots.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemSlotError {
    /// KVM refused KVM_SET_USER_MEMORY_REGION.
    #[error("KVM refused a memory slot change (KVM_SET_USER_MEMORY_REGION)")]
    SetRegion(#[source] kvm_ioctls::Error),
    /// The layout needs more slots than KVM offers.
    #[error("the watchpoints need {want} memory slots; KVM offers {limit} (KVM_CAP_NR_MEMSLOTS)")]
    TooMany {
        /// Slots the layout needs.
        want: usize,
        /// Slots KVM offers.
        limit: usize,
    },
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

/// What turns the registered slots into a wanted layout: the slots to delete and the ones
/// to create (their ids not yet chosen). A slot in both layouts is left alone.
#[derive(Debug, Default)]
pub struct SlotChange {
    /// Registered slots the new layout does not have.
    pub delete: Vec<kvm_userspace_memory_region>,
    /// Slots of the new layout not registered yet.
    pub create: Vec<kvm_userspace_memory_region>,
}

/// The change from the `registered` slots (by guest-physical start) to the `want` layout
/// (sorted by start, as [`slot_layout`] makes it; ids ignored), in one walk over both.
/// KVM changes a slot's size, host address or read-only flag only by deleting it and
/// creating it anew (KVM API, KVM_SET_USER_MEMORY_REGION: only KVM_MEM_LOG_DIRTY_PAGES may
/// change on a live slot), so a slot that differs in anything is a delete and a create.
pub fn slot_change(
    registered: &BTreeMap<u64, kvm_userspace_memory_region>,
    want: &[kvm_userspace_memory_region],
) -> SlotChange {
    let same = |a: &kvm_userspace_memory_region, b: &kvm_userspace_memory_region| {
        (a.memory_size, a.userspace_addr, a.flags) == (b.memory_size, b.userspace_addr, b.flags)
    };
    let mut change = SlotChange::default();
    let mut old = registered.values().peekable();
    let mut new = want.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(o), Some(n)) if o.guest_phys_addr == n.guest_phys_addr => {
                if !same(o, n) {
                    change.delete.push(**o);
                    change.create.push(**n);
                }
                old.next();
                new.next();
            }
            (Some(o), Some(n)) if o.guest_phys_addr > n.guest_phys_addr => {
                change.create.push(**n);
                new.next();
            }
            (Some(o), _) => {
                change.delete.push(**o);
                old.next();
            }
            (None, Some(n)) => {
                change.create.push(**n);
                new.next();
            }
        }
    }
    change
}

/// The memory slots registered with KVM, and what they are made from.
pub struct MemSlots {
    regions: Vec<RamRegion>,
    /// The memory slots registered with KVM now, by guest-physical start. A slot keeps its
    /// id for as long as it exists.
    slots: BTreeMap<u64, kvm_userspace_memory_region>,
    /// Ids below `next_id` no registered slot uses, reused lowest first: so ids stay below
    /// the largest number of slots ever registered at once.
    free_ids: BTreeSet<u32>,
    /// One past the highest id ever used.
    next_id: u32,
    /// How many slots KVM offers (KVM_CAP_NR_MEMSLOTS); ids run below it.
    limit: usize,
    /// Whether KVM offers read-only slots (KVM_CAP_READONLY_MEM).
    readonly_mem: bool,
    /// True while an instruction runs with every watched page mapped again.
    all_ram_mapped: bool,
}

/// The slot count assumed when KVM_CAP_NR_MEMSLOTS answers 0 (the oldest kernels' 32, as
/// kvm-ioctls' `Kvm::get_nr_memslots` assumes too).
const DEFAULT_NR_MEMSLOTS: usize = 32;

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
        let nr = vm.check_extension_int(kvm_ioctls::Cap::NrMemslots);
        let mut slots = MemSlots {
            regions,
            slots: BTreeMap::new(),
            free_ids: BTreeSet::new(),
            next_id: 0,
            limit: usize::try_from(nr)
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_NR_MEMSLOTS),
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
    /// absent: only the slots that differ from the registered ones are deleted and created,
    /// so a change costs ioctls in proportion to what it changes, and the others keep their
    /// ids. Only while every vCPU is stopped.
    ///
    /// A layout needing more slots than KVM offers is refused before anything changes. If
    /// KVM refuses a change midway, what is registered is still known exactly, and a later
    /// call (say, for the watchpoints as they were) repairs it.
    pub fn relayout(&mut self, vm: &VmFd, watches: &[Watchpoint]) -> Result<(), MemSlotError> {
        let modes = if self.all_ram_mapped {
            BTreeMap::new()
        } else {
            page_modes(watches, self.readonly_mem)
        };
        let want = slot_layout(&self.regions, &modes);
        if want.len() > self.limit {
            return Err(MemSlotError::TooMany {
                want: want.len(),
                limit: self.limit,
            });
        }
        let change = slot_change(&self.slots, &want);
        // Slots may not overlap, so every deletion goes before any creation.
        for s in change.delete {
            let gone = kvm_userspace_memory_region {
                memory_size: 0,
                ..s
            };
            // SAFETY: deleting a slot never makes KVM access host memory.
            unsafe { vm.set_user_memory_region(gone) }.map_err(MemSlotError::SetRegion)?;
            self.slots.remove(&s.guest_phys_addr);
            self.free_ids.insert(s.slot);
        }
        for mut s in change.create {
            s.slot = self.free_ids.first().copied().unwrap_or(self.next_id);
            // SAFETY: every slot lies inside guest RAM's live mmap (`regions` was taken from
            // it), which outlives the VmFd: see `MemSlots::new`.
            unsafe { vm.set_user_memory_region(s) }.map_err(MemSlotError::SetRegion)?;
            if !self.free_ids.remove(&s.slot) {
                self.next_id += 1;
            }
            self.slots.insert(s.guest_phys_addr, s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::vmm::debug::watch::test_watchpoint as wp;

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

    /// Registers `layout` as `MemSlots::relayout` would from nothing: ids 0, 1, 2, …
    fn registered(
        layout: &[kvm_userspace_memory_region],
    ) -> BTreeMap<u64, kvm_userspace_memory_region> {
        layout
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = kvm_userspace_memory_region {
                    slot: i as u32,
                    ..*s
                };
                (s.guest_phys_addr, s)
            })
            .collect()
    }

    fn ranges(slots: &[kvm_userspace_memory_region]) -> Vec<(u64, u64, u32)> {
        slots
            .iter()
            .map(|s| (s.guest_phys_addr, s.memory_size, s.flags))
            .collect()
    }

    #[test]
    fn a_change_touches_only_the_slots_it_changes() {
        let regions = [RamRegion {
            gpa: 0,
            len: 0x100_000,
            host: 0x7000_0000,
        }];
        // Many watched pages, every other one, then one more far from the rest.
        let mut watches: Vec<Watchpoint> = (0..50)
            .map(|i| wp(0x10_000 + 0x2000 * i, 4, WatchKind::Write))
            .collect();
        let before = slot_layout(&regions, &page_modes(&watches, true));
        assert_eq!(before.len(), 101);
        let have = registered(&before);
        watches.push(wp(0xf0_010, 4, WatchKind::Write));
        let after = slot_layout(&regions, &page_modes(&watches, true));
        let change = slot_change(&have, &after);
        // The tail slot after the last old watch is split around the new one.
        assert_eq!(ranges(&change.delete), vec![(0x73_000, 0x8d_000, 0)]);
        assert_eq!(change.delete[0].slot, 100, "the deleted slot by its id");
        assert_eq!(
            ranges(&change.create),
            vec![
                (0x73_000, 0x7d_000, 0),
                (0xf0_000, 0x1000, KVM_MEM_READONLY),
                (0xf1_000, 0xf_000, 0),
            ]
        );

        // Taking it away again merges the three back into the one slot.
        let mut now = have.clone();
        now.remove(&0x73_000);
        for (i, s) in change.create.iter().enumerate() {
            let s = kvm_userspace_memory_region {
                slot: 100 + i as u32,
                ..*s
            };
            now.insert(s.guest_phys_addr, s);
        }
        watches.pop();
        let back = slot_change(&now, &before);
        assert_eq!(ranges(&back.delete), ranges(&change.create));
        assert_eq!(ranges(&back.create), ranges(&change.delete));
        // And the same layout is no change at all.
        let none = slot_change(&have, &before);
        assert!(none.delete.is_empty() && none.create.is_empty(), "{none:?}");
    }

    #[test]
    fn a_slot_whose_flags_change_is_deleted_and_created_anew() {
        let regions = [RamRegion {
            gpa: 0,
            len: 0x4000,
            host: 0x1000_0000,
        }];
        let read_only = slot_layout(
            &regions,
            &page_modes(&[wp(0x1000, 4, WatchKind::Write)], true),
        );
        let unmapped = slot_layout(
            &regions,
            &page_modes(&[wp(0x1000, 4, WatchKind::Access)], true),
        );
        let change = slot_change(&registered(&read_only), &unmapped);
        // The read-only page goes; the slots either side stay as they are.
        assert_eq!(
            ranges(&change.delete),
            vec![(0x1000, 0x1000, KVM_MEM_READONLY)]
        );
        assert!(change.create.is_empty(), "{change:?}");
        let change = slot_change(&registered(&unmapped), &read_only);
        assert!(change.delete.is_empty(), "{change:?}");
        assert_eq!(
            ranges(&change.create),
            vec![(0x1000, 0x1000, KVM_MEM_READONLY)]
        );
        // Same start, other flags: KVM cannot change them on a live slot.
        let all = slot_layout(&regions, &BTreeMap::new());
        let whole_ro = vec![kvm_userspace_memory_region {
            flags: KVM_MEM_READONLY,
            ..all[0]
        }];
        let change = slot_change(&registered(&all), &whole_ro);
        assert_eq!(ranges(&change.delete), vec![(0, 0x4000, 0)]);
        assert_eq!(ranges(&change.create), vec![(0, 0x4000, KVM_MEM_READONLY)]);
    }

    #[test]
    fn a_layout_beyond_kvms_slot_limit_is_refused_before_anything_changes() {
        let kvm = kvm_ioctls::Kvm::new().expect("KVM is needed: cannot open /dev/kvm");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let mem = crate::memory::create_guest_memory(1 << 20).unwrap();
        let mut slots = MemSlots::new(&vm, &mem, true).expect("MemSlots::new");
        assert!(slots.limit >= DEFAULT_NR_MEMSLOTS, "{}", slots.limit);
        slots.limit = 4;
        let two = [
            wp(0x2000, 4, WatchKind::Write),
            wp(0x4000, 4, WatchKind::Write),
        ];
        assert_eq!(
            slots.relayout(&vm, &two),
            Err(MemSlotError::TooMany { want: 5, limit: 4 })
        );
        assert_eq!(slots.slots.len(), 1, "the old layout stays");
        slots.relayout(&vm, &two[..1]).expect("three slots fit");
        let ids: Vec<u32> = slots.slots.values().map(|s| s.slot).collect();
        assert_eq!(ids, [0, 1, 2], "the freed id first, then new ones");
        slots.relayout(&vm, &[]).expect("back to one slot");
        assert_eq!(slots.slots.len(), 1);
        assert!(
            slots.slots.values().all(|s| s.slot < 3),
            "ids stay below the peak"
        );
    }
}
