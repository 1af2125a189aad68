//! Debug state: the breakpoints and watchpoints the debugger asked for, and debugger access
//! to guest memory, which shows the guest's bytes under our planted breakpoints. The shared
//! [`table::DebugTable`] is what vCPU threads apply; [`Debugger`] is the controller's side
//! that edits it.

pub mod table;
pub mod watch;

use crate::memory::GuestMem;
use crate::x86::paging::{self, GuestVirtAddr, PagingRegs};
use std::collections::BTreeSet;
use std::sync::Arc;
use table::{DebugTable, HW_SLOTS, SwBreakpoint};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use watch::{WatchKind, Watchpoint};

/// An address the debugger names guest memory by: virtual or physical is part of the
/// address, never a mode the reader has to know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugAddr {
    /// A linear address, translated through the page tables of vCPU `vcpu` as they were at
    /// its last stop.
    Virt {
        /// The vCPU whose page tables translate it.
        vcpu: usize,
        /// The linear address.
        addr: GuestVirtAddr,
    },
    /// A guest-physical address.
    Phys(GuestAddress),
}

/// How [`Debugger::read`] and [`Debugger::write`] find guest-physical pages.
#[derive(Clone, Copy)]
pub enum AddrSpace<'a> {
    /// Through these paging registers.
    Virt(&'a PagingRegs),
    /// Guest-physical addresses as they are.
    Phys,
}

/// Errors inserting breakpoints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BreakpointError {
    /// The address does not translate to guest RAM.
    #[error("address {0:#x} is not mapped to guest RAM")]
    Unmapped(u64),
    /// All four debug-register slots are in use.
    #[error("all {HW_SLOTS} hardware breakpoint slots are in use")]
    NoSlot,
    /// A watchpoint of zero length.
    #[error("a watchpoint needs a length")]
    EmptyWatch,
    /// No such vCPU to translate the address through.
    #[error("no vCPU {0}")]
    NoVcpu(usize),
    /// KVM refused the memory-slot change a watchpoint needs.
    #[error("KVM refused the memory slots for the watchpoint")]
    Slots(#[source] super::memslots::MemSlotError),
}

/// The controller's side of the debug state.
pub struct Debugger {
    table: Arc<DebugTable>,
    mem: Arc<GuestMem>,
    /// Software breakpoints held in debug registers because their address was unmapped.
    sw_via_debugreg: BTreeSet<u64>,
    /// The debugger's choice of guest-physical rather than virtual addresses, kept here so
    /// it outlives one gdb connection (as QEMU's does). Memory access itself never consults
    /// it: every access names its space in a [`DebugAddr`].
    phys_mode: bool,
}

impl Debugger {
    /// The debug state over `table`, planting into `mem`.
    pub fn new(table: Arc<DebugTable>, mem: Arc<GuestMem>) -> Debugger {
        Debugger {
            table,
            mem,
            sw_via_debugreg: BTreeSet::new(),
            phys_mode: false,
        }
    }

    /// The table the vCPU threads apply.
    pub fn table(&self) -> &Arc<DebugTable> {
        &self.table
    }

    /// Chooses how debugger addresses are read: virtual (the default) or physical.
    pub fn set_phys_mode(&mut self, phys: bool) {
        self.phys_mode = phys;
    }

    /// True when debugger addresses are guest-physical.
    pub fn phys_mode(&self) -> bool {
        self.phys_mode
    }

    /// True if the software breakpoint at `addr` lives in a debug register, so a hit on
    /// that register is a software breakpoint to the debugger.
    pub fn is_sw_via_debugreg(&self, addr: u64) -> bool {
        self.sw_via_debugreg.contains(&addr)
    }

    /// The guest-physical address behind address `addr` of `space` and how many bytes from
    /// it lie in the same page, at most `want`; None if nothing is mapped there.
    fn debugger_page(
        &self,
        space: AddrSpace<'_>,
        addr: u64,
        want: usize,
    ) -> Option<(GuestAddress, usize)> {
        let (gpa, page_size) = match space {
            AddrSpace::Phys => (GuestAddress(addr), crate::x86::PAGE_SIZE),
            AddrSpace::Virt(regs) => {
                paging::translate_fast(&*self.mem, regs, GuestVirtAddr(addr)).ok()?
            }
        };
        let in_page = page_size - (addr & (page_size - 1));
        Some((gpa, in_page.min(want as u64) as usize))
    }

    /// Reads guest memory at address `addr` of `space` into `buf`. Returns how many bytes
    /// were readable: a read stops at the first unmapped page. Our planted breakpoint bytes
    /// read as the original bytes.
    pub fn read(&self, space: AddrSpace<'_>, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let Some((gpa, n)) =
                self.debugger_page(space, addr.wrapping_add(done as u64), buf.len() - done)
            else {
                break;
            };
            let chunk = &mut buf[done..done + n];
            if self.mem.read_slice(chunk, gpa).is_err() {
                break;
            }
            self.table.with(|b| {
                for bp in b.sw.values() {
                    if bp.gpa >= gpa && bp.gpa.0 < gpa.0 + n as u64 {
                        chunk[(bp.gpa.0 - gpa.0) as usize] = bp.orig;
                    }
                }
            });
            done += n;
        }
        done
    }

    /// Writes guest memory at address `addr` of `space` (as for [`Debugger::read`]).
    /// Returns how many bytes were written. Bytes under our breakpoints update the saved
    /// original instead, so the breakpoint stays planted.
    pub fn write(&self, space: AddrSpace<'_>, addr: u64, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            let Some((gpa, n)) =
                self.debugger_page(space, addr.wrapping_add(done as u64), data.len() - done)
            else {
                break;
            };
            let mut chunk = data[done..done + n].to_vec();
            let end = gpa.0 + n as u64;
            let covers_bp = self
                .table
                .with(|b| b.sw.values().any(|bp| bp.gpa >= gpa && bp.gpa.0 < end));
            if covers_bp {
                self.table.update(|b| {
                    for bp in b.sw.values_mut() {
                        if bp.gpa >= gpa && bp.gpa.0 < end {
                            let i = (bp.gpa.0 - gpa.0) as usize;
                            bp.orig = chunk[i];
                            chunk[i] = bp.insn;
                        }
                    }
                });
            }
            if self.mem.write_slice(&chunk, gpa).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    /// Plants a software breakpoint at linear address `addr`, translated through `regs`.
    pub fn add_sw_breakpoint(
        &mut self,
        regs: &PagingRegs,
        addr: u64,
    ) -> Result<(), BreakpointError> {
        if self.table.with(|b| b.sw.contains_key(&addr)) {
            return Ok(());
        }
        let Ok((gpa, _)) = paging::translate_fast(&*self.mem, regs, GuestVirtAddr(addr)) else {
            // Not mapped yet (say, a higher-half kernel before it loads its page tables):
            // there is no byte to patch, but a debug-register breakpoint watches the linear
            // address whatever the mapping becomes.
            self.add_hw_breakpoint(addr)
                .map_err(|_| BreakpointError::Unmapped(addr))?;
            self.sw_via_debugreg.insert(addr);
            return Ok(());
        };
        let orig: u8 = self
            .mem
            .read_obj(gpa)
            .map_err(|_| BreakpointError::Unmapped(addr))?;
        let insn = self.table.sw_insn();
        self.mem
            .write_obj(insn, gpa)
            .map_err(|_| BreakpointError::Unmapped(addr))?;
        self.table.update(|b| {
            b.sw.insert(addr, SwBreakpoint { gpa, orig, insn });
            b.sw_sticky = true;
        });
        Ok(())
    }

    /// Removes the software breakpoint at `addr`; false if there was none.
    pub fn remove_sw_breakpoint(&mut self, addr: u64) -> bool {
        if self.sw_via_debugreg.remove(&addr) {
            return self.remove_hw_breakpoint(addr);
        }
        let Some(bp) = self.table.update(|b| b.sw.remove(&addr)) else {
            return false;
        };
        unplant(&self.mem, &bp);
        true
    }

    /// Arms a debug-register execute breakpoint at linear address `addr`.
    pub fn add_hw_breakpoint(&mut self, addr: u64) -> Result<(), BreakpointError> {
        self.table.update(|b| {
            if b.hw_slot_at(addr).is_some() {
                return Ok(());
            }
            let slot =
                b.hw.iter()
                    .position(Option::is_none)
                    .ok_or(BreakpointError::NoSlot)?;
            b.hw[slot] = Some(addr);
            Ok(())
        })
    }

    /// Disarms the execute breakpoint at `addr`; false if there was none.
    pub fn remove_hw_breakpoint(&mut self, addr: u64) -> bool {
        self.table.update(|b| match b.hw_slot_at(addr) {
            Some(slot) => {
                b.hw[slot] = None;
                true
            }
            None => false,
        })
    }

    /// Removes every breakpoint and watchpoint. Returns true if there were watchpoints, so
    /// the memory slots need laying out again.
    pub fn clear(&mut self) -> bool {
        self.sw_via_debugreg.clear();
        let old = self.table.update(std::mem::take);
        for bp in old.sw.values() {
            unplant(&self.mem, bp);
        }
        !old.watch.is_empty()
    }

    /// Adds a watchpoint on `len` bytes at debugger address `addr` (translated through
    /// `regs`) for accesses of `kind`, and returns it. The memory slots must then be laid
    /// out again; if that fails, [`Debugger::forget_watchpoint`] takes it back.
    pub fn add_watchpoint(
        &mut self,
        regs: &PagingRegs,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> Result<Watchpoint, BreakpointError> {
        if len == 0 {
            return Err(BreakpointError::EmptyWatch);
        }
        // Watchpoint addresses follow the debugger's address mode, as its memory reads do.
        let space = if self.phys_mode {
            AddrSpace::Phys
        } else {
            AddrSpace::Virt(regs)
        };
        let mut pieces: Vec<(GuestAddress, u64, u64)> = Vec::new();
        let mut done = 0u64;
        while done < len {
            let linear = addr.wrapping_add(done);
            let want = (len - done).min(usize::MAX as u64) as usize;
            let (gpa, n) = self
                .debugger_page(space, linear, want)
                .filter(|(gpa, n)| {
                    self.mem.address_in_range(*gpa)
                        && self
                            .mem
                            .address_in_range(GuestAddress(gpa.0 + *n as u64 - 1))
                })
                .ok_or(BreakpointError::Unmapped(linear))?;
            match pieces.last_mut() {
                Some(last) if last.0.0 + last.1 == gpa.0 => last.1 += n as u64,
                _ => pieces.push((gpa, n as u64, linear)),
            }
            done += n as u64;
        }
        let w = Watchpoint {
            addr,
            len,
            kind,
            pieces,
        };
        self.table.update(|b| b.watch.push(w.clone()));
        Ok(w)
    }

    /// Takes back a watchpoint [`Debugger::add_watchpoint`] added.
    pub fn forget_watchpoint(&mut self, w: &Watchpoint) {
        self.table.update(|b| b.watch.retain(|x| x != w));
    }

    /// Removes a watchpoint; false if there was none. The memory slots must then be laid
    /// out again.
    pub fn remove_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> bool {
        self.table.update(|b| {
            match b
                .watch
                .iter()
                .position(|w| w.addr == addr && w.len == len && w.kind == kind)
            {
                Some(i) => {
                    b.watch.remove(i);
                    true
                }
                None => false,
            }
        })
    }

    /// The watchpoints in force.
    pub fn watches(&self) -> Vec<Watchpoint> {
        self.table.with(|b| b.watch.clone())
    }

    /// Plants every software breakpoint again over freshly loaded code (after a reset),
    /// saving the new original bytes.
    pub fn replant(&self) {
        self.table.update(|b| {
            for bp in b.sw.values_mut() {
                bp.orig = self.mem.read_obj(bp.gpa).unwrap_or(0);
                let _ = self.mem.write_obj(bp.insn, bp.gpa);
            }
        });
    }
}

/// Restores the original byte under a breakpoint, unless the guest has overwritten the int3.
fn unplant(mem: &GuestMem, bp: &SwBreakpoint) {
    let byte: u8 = mem.read_obj(bp.gpa).unwrap_or(bp.orig);
    if byte == bp.insn {
        let _ = mem.write_obj(bp.orig, bp.gpa);
    }
}
