//! The debug-state table: breakpoints the debugger wants, shared by all vCPU threads. The
//! controller edits it; each vCPU thread applies it to itself (KVM_SET_GUEST_DEBUG) before
//! KVM_RUN when its generation changed, so no vCPU ioctl is ever issued from a foreign thread.

use super::super::quirks::{self, MachineFacts, Quirks};
use crate::x86::Dr7;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vm_memory::GuestAddress;

/// The x86 `int3` instruction (SDM Vol. 2A, INT n/INTO/INT3).
pub const INT3: u8 = 0xCC;
/// The x86 `hlt` instruction (SDM Vol. 2A, HLT).
pub const HLT: u8 = 0xF4;
/// Number of debug-register address slots, DR0–DR3 (SDM Vol. 3, 18.2).
pub const HW_SLOTS: usize = crate::x86::DEBUG_SLOTS;

/// A software breakpoint: `insn` planted over `orig` at `gpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwBreakpoint {
    /// Where the byte was planted.
    pub gpa: GuestAddress,
    /// The byte it replaced.
    pub orig: u8,
    /// The byte planted: [`INT3`], or [`HLT`] where int3 gives no clean exit.
    pub insn: u8,
}

/// The breakpoints in force.
#[derive(Clone, Debug, Default)]
pub struct Breakpoints {
    /// Software breakpoints by linear address.
    pub sw: BTreeMap<u64, SwBreakpoint>,
    /// Execute breakpoints in DR0–DR3, by linear address.
    pub hw: [Option<u64>; HW_SLOTS],
    /// Watchpoints (memory-slot based, see `watch.rs`).
    pub watch: Vec<super::watch::Watchpoint>,
    /// Set once a software breakpoint has been planted in this debug session: gdb removes
    /// and re-inserts them around every stop, and keeping KVM_GUESTDBG_USE_SW_BP on in
    /// between saves a KVM_SET_GUEST_DEBUG per resume.
    pub sw_sticky: bool,
}

impl Breakpoints {
    /// The DR7 value enabling the execute slots in use: local-enable bit 2n per slot, RW and
    /// LEN 00 for execute (SDM Vol. 3, 18.2.4), plus the always-one bit 10.
    pub fn dr7(&self) -> u64 {
        let mut dr7 = Dr7::FIXED1;
        for (n, slot) in self.hw.iter().enumerate() {
            if slot.is_some() {
                dr7 |= Dr7::local_enable(n);
            }
        }
        dr7.bits()
    }

    /// The first watchpoint an access of `len` bytes at guest-physical `gpa` triggers:
    /// its kind and the linear address of the first watched byte touched.
    pub fn watch_hit(
        &self,
        gpa: u64,
        len: u64,
        write: bool,
    ) -> Option<(super::watch::WatchKind, u64)> {
        self.watch
            .iter()
            .find_map(|w| w.hit(gpa, len, write).map(|a| (w.kind, a)))
    }

    /// True if a watchpoint covers part of the guest-physical page at `page`.
    pub fn watch_touches_page(&self, page: u64) -> bool {
        self.watch.iter().any(|w| {
            w.pieces.iter().any(|&(gpa, len, _)| {
                gpa.0 < page + crate::vmm::memslots::PAGE && page < gpa.0 + len
            })
        })
    }

    /// The slot whose address is `linear`, if any.
    pub fn hw_slot_at(&self, linear: u64) -> Option<usize> {
        self.hw.iter().position(|s| *s == Some(linear))
    }
}

/// The shared table, with a generation count so vCPU threads can tell when to re-apply it.
#[derive(Debug)]
pub struct DebugTable {
    generation: AtomicU64,
    bps: Mutex<Breakpoints>,
    /// Whether single steps keep interrupts blocked (QEMU's `sstep` NOIRQ bit).
    step_masks_irq: AtomicBool,
    /// What this KVM showed at run time (see [`DebugTable::learn_int3_fails`]).
    learned: Mutex<Quirks>,
    /// What the machine set up, which the quirk decisions depend on.
    machine: MachineFacts,
}

impl DebugTable {
    /// An empty table for a machine set up as `machine` says.
    pub fn new(machine: MachineFacts) -> DebugTable {
        DebugTable {
            generation: AtomicU64::new(0),
            bps: Mutex::new(Breakpoints::default()),
            step_masks_irq: AtomicBool::new(true),
            learned: Mutex::new(Quirks::default()),
            machine,
        }
    }

    /// Changes the table; every vCPU re-applies it before its next run.
    pub fn update<R>(&self, f: impl FnOnce(&mut Breakpoints) -> R) -> R {
        let mut bps = self.bps.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut bps);
        self.generation.fetch_add(1, Ordering::Release);
        r
    }

    /// Reads the table.
    pub fn with<R>(&self, f: impl FnOnce(&Breakpoints) -> R) -> R {
        let bps = self.bps.lock().unwrap_or_else(|e| e.into_inner());
        f(&bps)
    }

    /// Chooses whether single steps run with interrupts blocked (the default), so a step
    /// never lands in an interrupt handler.
    pub fn set_step_masks_irq(&self, on: bool) {
        self.step_masks_irq.store(on, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Whether single steps run with interrupts blocked.
    pub fn step_masks_irq(&self) -> bool {
        self.step_masks_irq.load(Ordering::Acquire)
    }

    /// The byte new software breakpoints plant ([`quirks::breakpoint_insn`]).
    pub fn sw_insn(&self) -> u8 {
        quirks::breakpoint_insn(self.quirks(), self.machine)
    }

    /// What was learned about this KVM so far.
    pub fn quirks(&self) -> Quirks {
        *self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that an `int3` of ours came back as an emulation failure (PVM,
    /// docs/kvm-quirks.md, "int3 at CPL0"), and replants the breakpoints in `mem` with the
    /// byte [`quirks::breakpoint_insn`] now chooses: `hlt` where it reaches the VMM. Every
    /// such int3 hit costs a kernel log line (~1 ms while the log is not rate-limited), and
    /// KVM never reports it as a debug exit, whereas `hlt` gives a clean KVM_EXIT_HLT.
    /// Hardware KVM reports int3 as KVM_EXIT_DEBUG and never gets here.
    pub fn learn_int3_fails(&self, mem: &crate::memory::GuestMem) {
        use vm_memory::Bytes;
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .int3_is_emulation_failure = true;
        let insn = self.sw_insn();
        self.update(|b| {
            for bp in b.sw.values_mut() {
                if bp.insn != insn && mem.read_obj::<u8>(bp.gpa).ok() == Some(bp.insn) {
                    let _ = mem.write_obj(insn, bp.gpa);
                }
                bp.insn = insn;
            }
        });
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn table_with_int3_at(machine: MachineFacts, mem: &crate::memory::GuestMem) -> DebugTable {
        let table = DebugTable::new(machine);
        mem.write_obj(INT3, GuestAddress(0x1000)).unwrap();
        table.update(|b| {
            b.sw.insert(
                0x1000,
                SwBreakpoint {
                    gpa: GuestAddress(0x1000),
                    orig: 0x90,
                    insn: INT3,
                },
            );
        });
        table
    }

    #[test]
    fn a_failing_int3_replants_hlt_without_an_irqchip() {
        let mem = crate::memory::create_guest_memory(1 << 20).unwrap();
        let table = table_with_int3_at(MachineFacts::default(), &mem);
        table.learn_int3_fails(&mem);
        assert!(table.quirks().int3_is_emulation_failure);
        assert_eq!(table.sw_insn(), HLT);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), HLT);
        assert_eq!(table.with(|b| b.sw[&0x1000].insn), HLT);
    }

    #[test]
    fn with_an_irqchip_a_failing_int3_stays_int3() {
        let mem = crate::memory::create_guest_memory(1 << 20).unwrap();
        let machine = MachineFacts {
            in_kernel_irqchip: true,
            ..Default::default()
        };
        let table = table_with_int3_at(machine, &mem);
        table.learn_int3_fails(&mem);
        assert!(table.quirks().int3_is_emulation_failure);
        assert_eq!(table.sw_insn(), INT3);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), INT3);
    }
}
