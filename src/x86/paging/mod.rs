//! The x86 guest page-table walker: turns guest-virtual addresses into guest-physical ones
//! the way the guest's MMU would (Intel SDM Vol. 3A, chapter 4 "Paging").
//!
//! One table of paging levels per mode ([`PagingRegs::hierarchy`]) and one set of entry
//! rules ([`Rules::check`]) serve both walks: [`translate`] follows one address down
//! (recording every level it visits, for `monitor translate`; [`translate_fast`] without
//! allocating, for memory reads and writes), and [`leaves`] enumerates every mapping (for
//! `info mem`, `info tlb` and core files).
//!
//! The walks read the guest's page tables through vm-memory's checked accessors only, so a
//! guest with garbage page tables gets an error, never a panic or a host access outside
//! guest RAM.
//!
//! MAXPHYADDR is taken to be 52, the architectural maximum (SDM 4.1.4), so bits below 52 are
//! never reported as reserved.

pub mod leaves;

use std::fmt;

use super::{
    Cr0, Cr4, Efer, PAGE_SHIFT, PAGE_SIZE, PAGE_SIZE_4M, PTE_PRESENT, PTE_PS, PTE_USER,
    PTE_WRITABLE, PTE_XD,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Physical-address bits 51:12 of an 8-byte entry (and of CR3 in 4/5-level paging, which
/// also drops the PCID or flag bits 11:0), for MAXPHYADDR 52 (SDM 4.5.2, 4.5.4). Bits 58:52
/// are ignored, 62:59 are protection keys and 63 is XD: none of them is address.
pub const ADDR_MASK_52: u64 = 0x000f_ffff_ffff_f000;
/// Physical-address bits 31:12 of a 4-byte 32-bit-paging entry, and of CR3 (SDM 4.3).
pub const ADDR_MASK_32: u64 = 0xffff_f000;
/// CR3 bits 31:5 locate the 32-byte aligned PDPT in PAE paging (SDM 4.4.1).
pub const CR3_PAE_PDPT_MASK: u64 = 0xffff_ffe0;
/// Bits 31:22 of a 4-MByte PDE: physical-address bits 31:22 (SDM 4.3, Table 4-4).
const PDE_4M_ADDR_LOW: u64 = 0xffc0_0000;
/// Bits 20:13 of a 4-MByte PDE hold physical-address bits 39:32 (PSE-36, SDM 4.3, Table 4-4).
const PDE_4M_ADDR_HIGH_SHIFT: u32 = 13;
/// Eight bits of PSE-36 high address: with MAXPHYADDR capped at 40 in 32-bit paging (SDM 4.3).
const PDE_4M_ADDR_HIGH_MASK: u64 = 0xff;

/// Bit 21 of a 4-MByte PDE is reserved (SDM 4.3, Table 4-4).
const RSVD_4M: u64 = 1 << 21;
/// Bits 20:13 of a PDE that maps a 2-MByte page are reserved (SDM Tables 4-9, 4-18).
const RSVD_2M: u64 = 0x001f_e000;
/// Bits 29:13 of a PDPTE that maps a 1-GByte page are reserved (SDM Table 4-16).
const RSVD_1G: u64 = 0x3fff_e000;
/// Bits 62:52 (62:MAXPHYADDR) of PAE PDEs and PTEs are reserved (SDM Tables 4-9 to 4-11).
const RSVD_PAE_HIGH: u64 = 0x7ff0_0000_0000_0000;
/// PAE PDPTE reserved bits: 63:52, 8:5 and 2:1 (SDM 4.4.1, Table 4-8).
const RSVD_PAE_PDPTE: u64 = 0xfff0_0000_0000_01e6;

/// Linear addresses are 32 bits wide outside IA-32e mode (SDM 4.1.1).
const MAX_32BIT_VA: u64 = 0xffff_ffff;

/// A guest-virtual address (distinct from vm_memory::GuestAddress which is guest-physical).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestVirtAddr(pub u64);

/// The control-register state that decides how the guest translates addresses.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagingRegs {
    /// CR0; only PG (bit 31) matters here.
    pub cr0: u64,
    /// CR3: the root of the page tables.
    pub cr3: u64,
    /// CR4; PSE, PAE and LA57 matter here.
    pub cr4: u64,
    /// IA32_EFER; LME, LMA and NXE matter here.
    pub efer: u64,
}

/// The paging mode selected by CR0, CR4 and EFER (SDM 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: linear addresses are physical addresses.
    Disabled,
    /// 32-bit paging: two levels of 4-byte entries, optional 4-MByte pages (SDM 4.3).
    Bits32,
    /// PAE paging: a 4-entry PDPT, then 8-byte PD and PT entries (SDM 4.4).
    Pae,
    /// 4-level paging: PML4, PDPT, PD, PT; 48-bit linear addresses (SDM 4.5).
    Level4,
    /// 5-level paging: PML5 above the PML4; 57-bit linear addresses (SDM 4.5).
    Level5,
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PagingMode::Disabled => "no",
            PagingMode::Bits32 => "32-bit",
            PagingMode::Pae => "PAE",
            PagingMode::Level4 => "4-level",
            PagingMode::Level5 => "5-level",
        })
    }
}

impl PagingRegs {
    /// The paging mode these registers select (SDM 4.1.1, Table 4-1).
    ///
    /// Long mode is recognised by EFER.LMA, or by EFER.LME alone, since with CR0.PG set
    /// the processor sets LMA from LME (SDM 9.8.5); CR4.PAE is required for it either way.
    pub fn mode(&self) -> PagingMode {
        let (cr0, cr4) = (
            Cr0::from_bits_retain(self.cr0),
            Cr4::from_bits_retain(self.cr4),
        );
        if !cr0.contains(Cr0::PG) {
            PagingMode::Disabled
        } else if !cr4.contains(Cr4::PAE) {
            PagingMode::Bits32
        } else if Efer::from_bits_retain(self.efer).intersects(Efer::LMA | Efer::LME) {
            if cr4.contains(Cr4::LA57) {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            }
        } else {
            PagingMode::Pae
        }
    }

    /// The paging structures these registers select, or None with paging disabled.
    pub(crate) fn hierarchy(&self) -> Option<Hierarchy> {
        let (root, levels, wide, va_bits): (u64, &'static [Level], bool, Option<u32>) =
            match self.mode() {
                PagingMode::Disabled => return None,
                PagingMode::Bits32 => (self.cr3 & ADDR_MASK_32, &BITS32, false, None),
                // The processor walks from PDPTE registers loaded when CR3 was written (SDM
                // 4.4.1); reading the table CR3 points at gives the same result unless the
                // guest has changed it since without reloading CR3.
                PagingMode::Pae => (self.cr3 & CR3_PAE_PDPT_MASK, &PAE, true, None),
                PagingMode::Level4 => (self.cr3 & ADDR_MASK_52, &LONG[1..], true, Some(48)),
                PagingMode::Level5 => (self.cr3 & ADDR_MASK_52, &LONG, true, Some(57)),
            };
        Some(Hierarchy {
            root,
            levels,
            va_bits,
            rules: Rules {
                wide,
                nxe: Efer::from_bits_retain(self.efer).contains(Efer::NXE),
                pse: Cr4::from_bits_retain(self.cr4).contains(Cr4::PSE),
            },
        })
    }
}

/// One paging-structure entry the walk read on its way down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelEntry {
    /// The table's name: "PML5", "PML4", "PDPT", "PD" or "PT".
    pub level: &'static str,
    /// Guest-physical address of the table.
    pub table: GuestAddress,
    /// Index of the entry within the table, taken from the virtual address.
    pub index: u64,
    /// Guest-physical address of the entry itself.
    pub entry_gpa: GuestAddress,
    /// The entry's raw value (4-byte entries in 32-bit paging are zero-extended).
    pub entry: u64,
}

/// A successful translation of one guest-virtual address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address the virtual address maps to.
    pub gpa: GuestAddress,
    /// Size of the page holding the address: 4 KiB, 2 MiB, 1 GiB or 4 MiB (4 KiB when paging
    /// is disabled, so callers still split accesses at page boundaries).
    pub page_size: u64,
    /// Every level's R/W bit is set (CR0.WP is not considered).
    pub writable: bool,
    /// Every level's U/S bit is set.
    pub user: bool,
    /// No level's XD bit is set while EFER.NXE is on.
    pub executable: bool,
    /// The entries visited, from the root table down to the one that maps the page.
    pub levels: Vec<LevelEntry>,
}

/// Why a guest-virtual address has no translation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// The entry at some level has its present bit clear.
    #[error(
        "the {level} entry at guest-physical {:#x} is {entry:#x}, whose present bit is clear, so the address is not mapped",
        .entry_gpa.0
    )]
    NotPresent {
        /// The table whose entry is not present.
        level: &'static str,
        /// Guest-physical address of the entry.
        entry_gpa: GuestAddress,
        /// The entry's raw value.
        entry: u64,
    },
    /// A present entry has reserved bits set, so the guest would take a page fault.
    #[error(
        "the {level} entry at guest-physical {:#x} is {entry:#x}, which sets reserved bits {bits:#x}, so the guest would take a page fault",
        .entry_gpa.0
    )]
    ReservedBits {
        /// The table whose entry is malformed.
        level: &'static str,
        /// Guest-physical address of the entry.
        entry_gpa: GuestAddress,
        /// The entry's raw value.
        entry: u64,
        /// The reserved bits that are set.
        bits: u64,
    },
    /// The address is not canonical for 4- or 5-level paging.
    #[error(
        "address {0:#x} is not canonical: its upper bits are not copies of the highest linear-address bit"
    )]
    NonCanonical(u64),
    /// A page-table entry lies outside guest RAM, so the walk cannot read it.
    #[error(
        "the {level} entry at guest-physical {:#x} lies outside guest RAM, so the page tables cannot be read",
        .gpa.0
    )]
    TableOutsideRam {
        /// The table that should hold the entry.
        level: &'static str,
        /// Guest-physical address of the unreadable entry.
        gpa: GuestAddress,
    },
    /// The address does not fit the 32-bit linear addresses of 32-bit or PAE paging.
    #[error("address {va:#x} is wider than the 32-bit linear addresses of {mode} paging")]
    AddressTooWide {
        /// The virtual address asked for.
        va: u64,
        /// The paging mode in force.
        mode: PagingMode,
    },
}

/// Effective access rights of a mapping: the AND of R/W and U/S over every level, and no
/// XD anywhere while EFER.NXE is set (SDM 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Writable (CR0.WP not considered).
    pub writable: bool,
    /// User-mode accessible.
    pub user: bool,
    /// Instruction fetches allowed.
    pub executable: bool,
}

impl Perms {
    /// All rights, as with paging disabled.
    pub const ALL: Perms = Perms {
        writable: true,
        user: true,
        executable: true,
    };

    /// QEMU's `info mem` form, extended with x: `urwx`, `-rw-` …
    pub fn letters(&self) -> String {
        format!(
            "{}r{}{}",
            if self.user { 'u' } else { '-' },
            if self.writable { 'w' } else { '-' },
            if self.executable { 'x' } else { '-' }
        )
    }
}

/// A level whose PS bit may make it map a large page.
#[derive(Clone, Copy)]
pub(crate) struct LargePage {
    /// Bits reserved only in the large-page form of the entry.
    reserved: u64,
    /// The PS bit only counts with CR4.PSE (32-bit paging); otherwise it is ignored.
    needs_pse: bool,
}

/// One level of a paging-structure hierarchy.
#[derive(Clone, Copy)]
pub(crate) struct Level {
    /// The table's name: "PML5", "PML4", "PDPT", "PD" or "PT".
    pub(crate) name: &'static str,
    /// Lowest virtual-address bit of this level's index; a page mapped here is 1 << shift
    /// bytes.
    pub(crate) shift: u32,
    /// Entries in the table.
    pub(crate) entries: u64,
    /// Bits reserved in every present entry of this level (XD without NXE is added apart).
    reserved: u64,
    large: Option<LargePage>,
    /// Whether R/W, U/S and XD here restrict access (PAE PDPTEs have none of them, SDM 4.4.1).
    perms: bool,
}

impl Level {
    /// The index of `va`'s entry in this level's table.
    pub(crate) fn index(&self, va: u64) -> u64 {
        (va >> self.shift) & (self.entries - 1)
    }
}

const fn level(
    name: &'static str,
    shift: u32,
    entries: u64,
    reserved: u64,
    large: Option<LargePage>,
) -> Level {
    Level {
        name,
        shift,
        entries,
        reserved,
        large,
        perms: true,
    }
}

const fn large(reserved: u64, needs_pse: bool) -> Option<LargePage> {
    Some(LargePage {
        reserved,
        needs_pse,
    })
}

/// 32-bit paging: the PD (SDM 4.3, Tables 4-4, 4-5), then the PT, where bit 7 is PAT, not PS
/// (Table 4-6).
const BITS32: [Level; 2] = [
    level("PD", 22, 1024, 0, large(RSVD_4M, true)),
    level("PT", PAGE_SHIFT, 1024, 0, None),
];

/// PAE paging: the 4-entry PDPT of the PDPTE registers (SDM 4.4.1), the PD and the PT
/// (SDM 4.4.2, Tables 4-8 to 4-11).
const PAE: [Level; 3] = [
    Level {
        name: "PDPT",
        shift: 30,
        entries: 4,
        reserved: RSVD_PAE_PDPTE,
        large: None,
        perms: false,
    },
    level("PD", 21, 512, RSVD_PAE_HIGH, large(RSVD_2M, false)),
    level("PT", PAGE_SHIFT, 512, RSVD_PAE_HIGH, None),
];

/// 5-level paging; 4-level paging uses the same list without the PML5 (SDM 4.5.4, Tables
/// 4-14 to 4-20). PS is reserved in PML5Es and PML4Es.
const LONG: [Level; 5] = [
    level("PML5", 48, 512, PTE_PS, None),
    level("PML4", 39, 512, PTE_PS, None),
    level("PDPT", 30, 512, 0, large(RSVD_1G, false)),
    level("PD", 21, 512, 0, large(RSVD_2M, false)),
    level("PT", PAGE_SHIFT, 512, 0, None),
];

/// The paging structures of one mode, from the root down.
pub(crate) struct Hierarchy {
    /// Guest-physical address of the root table.
    pub(crate) root: u64,
    /// The levels, root first; the last is the PT.
    pub(crate) levels: &'static [Level],
    /// Linear-address width for canonical sign extension in 4/5-level paging; None for
    /// 32-bit linear addresses.
    pub(crate) va_bits: Option<u32>,
    /// How entries are read and checked.
    pub(crate) rules: Rules,
}

/// The per-mode rules for reading and checking one entry (SDM 4.3 to 4.7).
#[derive(Clone, Copy)]
pub(crate) struct Rules {
    /// 8-byte entries (PAE, 4/5-level) rather than 4-byte ones (32-bit paging).
    pub(crate) wide: bool,
    nxe: bool,
    pse: bool,
}

/// What one entry means under [`Rules::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// P is clear.
    NotPresent,
    /// P is set along with these reserved bits: the guest would take a page fault.
    Reserved(u64),
    /// The entry points to the next level's table at this guest-physical address.
    Table(u64),
    /// The entry maps a page of `size` bytes at guest-physical `base`.
    Page {
        /// Guest-physical address of the page.
        base: u64,
        /// The page size.
        size: u64,
    },
}

impl Rules {
    /// Bytes per entry.
    pub(crate) fn entry_size(&self) -> u64 {
        if self.wide { 8 } else { 4 }
    }

    /// Classifies `entry` of `level`; for a valid entry, narrows `perms` by its rights
    /// (the AND over every level, SDM 4.6.1, 4.6.2).
    pub(crate) fn check(&self, level: &Level, entry: u64, perms: &mut Perms) -> EntryKind {
        if entry & PTE_PRESENT == 0 {
            return EntryKind::NotPresent;
        }
        let large = level
            .large
            .filter(|l| entry & PTE_PS != 0 && (self.pse || !l.needs_pse));
        // Reserved bits only count once P is set (SDM 4.7).
        let mut reserved = level.reserved | large.map_or(0, |l| l.reserved);
        if self.wide && !self.nxe {
            reserved |= PTE_XD;
        }
        let bits = entry & reserved;
        if bits != 0 {
            return EntryKind::Reserved(bits);
        }
        if level.perms {
            perms.writable &= entry & PTE_WRITABLE != 0;
            perms.user &= entry & PTE_USER != 0;
            if self.nxe && entry & PTE_XD != 0 {
                perms.executable = false;
            }
        }
        if large.is_none() && level.shift != PAGE_SHIFT {
            let mask = if self.wide {
                ADDR_MASK_52
            } else {
                ADDR_MASK_32
            };
            return EntryKind::Table(entry & mask);
        }
        let size = 1u64 << level.shift;
        let base = if self.wide {
            entry & ADDR_MASK_52 & !(size - 1)
        } else if size == PAGE_SIZE_4M {
            // PSE-36: bits 20:13 of the PDE are physical-address bits 39:32 (SDM 4.3).
            (entry & PDE_4M_ADDR_LOW)
                | (((entry >> PDE_4M_ADDR_HIGH_SHIFT) & PDE_4M_ADDR_HIGH_MASK) << 32)
        } else {
            entry & ADDR_MASK_32
        };
        EntryKind::Page { base, size }
    }

    /// One little-endian entry at `gpa`, or None if it is not entirely inside guest RAM.
    pub(crate) fn read_entry<M: GuestMemory + ?Sized>(&self, mem: &M, gpa: u64) -> Option<u64> {
        if self.wide {
            let mut raw = [0u8; 8];
            mem.read_slice(&mut raw, GuestAddress(gpa)).ok()?;
            Some(u64::from_le_bytes(raw))
        } else {
            let mut raw = [0u8; 4];
            mem.read_slice(&mut raw, GuestAddress(gpa)).ok()?;
            Some(u64::from(u32::from_le_bytes(raw)))
        }
    }
}

/// `va` sign-extended from its low `bits` bits (SDM 3.3.7.1, 4.5.1).
pub(crate) fn sign_extend(va: u64, bits: u32) -> u64 {
    let unused = 64 - bits;
    (((va << unused) as i64) >> unused) as u64
}

/// What a walk found, before deciding whether to keep the visited levels.
struct Walk {
    gpa: GuestAddress,
    page_size: u64,
    perms: Perms,
}

impl Walk {
    fn into_translation(self, levels: Vec<LevelEntry>) -> Translation {
        Translation {
            gpa: self.gpa,
            page_size: self.page_size,
            writable: self.perms.writable,
            user: self.perms.user,
            executable: self.perms.executable,
            levels,
        }
    }
}

/// The one walker behind [`translate`] and [`translate_fast`]; `visit` sees every entry read.
fn walk<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    va: GuestVirtAddr,
    mut visit: impl FnMut(LevelEntry),
) -> Result<Walk, WalkError> {
    let va = va.0;
    let Some(h) = regs.hierarchy() else {
        // Without paging, linear addresses are physical and 32 bits wide (SDM 4.1.1);
        // IA-32e mode cannot be active with paging off.
        return Ok(Walk {
            gpa: GuestAddress(va & MAX_32BIT_VA),
            page_size: PAGE_SIZE,
            perms: Perms::ALL,
        });
    };
    match h.va_bits {
        None if va > MAX_32BIT_VA => {
            return Err(WalkError::AddressTooWide {
                va,
                mode: regs.mode(),
            });
        }
        Some(bits) if sign_extend(va, bits) != va => return Err(WalkError::NonCanonical(va)),
        _ => {}
    }
    let mut perms = Perms::ALL;
    let mut table = h.root;
    for level in h.levels {
        // Every table is aligned to at least its own size (4 KiB, or 32 bytes for the PAE
        // PDPT) and masked below 2^52, so OR-ing the offset in is an exact, overflow-free add.
        let index = level.index(va);
        let entry_gpa = table | (index * h.rules.entry_size());
        let entry = h
            .rules
            .read_entry(mem, entry_gpa)
            .ok_or(WalkError::TableOutsideRam {
                level: level.name,
                gpa: GuestAddress(entry_gpa),
            })?;
        visit(LevelEntry {
            level: level.name,
            table: GuestAddress(table),
            index,
            entry_gpa: GuestAddress(entry_gpa),
            entry,
        });
        match h.rules.check(level, entry, &mut perms) {
            EntryKind::NotPresent => {
                return Err(WalkError::NotPresent {
                    level: level.name,
                    entry_gpa: GuestAddress(entry_gpa),
                    entry,
                });
            }
            EntryKind::Reserved(bits) => {
                return Err(WalkError::ReservedBits {
                    level: level.name,
                    entry_gpa: GuestAddress(entry_gpa),
                    entry,
                    bits,
                });
            }
            EntryKind::Table(next) => table = next,
            EntryKind::Page { base, size } => {
                return Ok(Walk {
                    gpa: GuestAddress(base | (va & (size - 1))),
                    page_size: size,
                    perms,
                });
            }
        }
    }
    unreachable!("every hierarchy ends in a PT, whose present entries map a page")
}

/// Translates `va` as the guest's MMU would, recording every paging-structure entry read.
pub fn translate<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    va: GuestVirtAddr,
) -> Result<Translation, WalkError> {
    let mut levels = Vec::with_capacity(LONG.len());
    let walk = walk(mem, regs, va, |entry| levels.push(entry))?;
    Ok(walk.into_translation(levels))
}

/// Like [`translate`], but also returns the entries the walk read when it fails, so a user
/// can see which level stopped it (`monitor translate`).
pub fn translate_explained<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    va: GuestVirtAddr,
) -> (Vec<LevelEntry>, Result<Translation, WalkError>) {
    let mut levels = Vec::with_capacity(LONG.len());
    let result =
        walk(mem, regs, va, |entry| levels.push(entry)).map(|w| w.into_translation(levels.clone()));
    (levels, result)
}

/// Translates `va` without allocating: returns the guest-physical address and the size of
/// the page that holds it.
pub fn translate_fast<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    va: GuestVirtAddr,
) -> Result<(GuestAddress, u64), WalkError> {
    let walk = walk(mem, regs, va, |_| {})?;
    Ok((walk.gpa, walk.page_size))
}

/// Runs `access(chunk, gpa)` page by page over `len` bytes at `va`; stops at the first page
/// that is unmapped or whose access comes up short. Returns how many bytes were done.
fn for_each_page<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    va: GuestVirtAddr,
    len: usize,
    mut access: impl FnMut(std::ops::Range<usize>, GuestAddress) -> usize,
) -> usize {
    let mut done = 0;
    while done < len {
        let Some(cur) = u64::try_from(done).ok().and_then(|d| va.0.checked_add(d)) else {
            break;
        };
        let Ok((gpa, page_size)) = translate_fast(mem, regs, GuestVirtAddr(cur)) else {
            break;
        };
        let left_in_page = page_size - (cur & (page_size - 1));
        let want = usize::try_from(left_in_page).map_or(len - done, |n| n.min(len - done));
        let got = access(done..done + want, gpa);
        done += got;
        if got < want {
            break;
        }
    }
    done
}

/// Reads guest-virtual memory into `buf`, translating page by page; stops at the first
/// unmapped page or guest-physical address outside RAM. Returns the number of bytes read.
pub fn read_virt<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    va: GuestVirtAddr,
    buf: &mut [u8],
) -> usize {
    let len = buf.len();
    for_each_page(mem, regs, va, len, |range, gpa| {
        buf.get_mut(range)
            .and_then(|chunk| mem.read(chunk, gpa).ok())
            .unwrap_or(0)
    })
}

/// Writes `buf` to guest-virtual memory, translating page by page; stops at the first
/// unmapped page or guest-physical address outside RAM. Returns the number of bytes written.
///
/// Page protections are not checked: a debugger may write to read-only pages.
pub fn write_virt<M: GuestMemory + ?Sized>(
    mem: &M,
    regs: &PagingRegs,
    va: GuestVirtAddr,
    buf: &[u8],
) -> usize {
    for_each_page(mem, regs, va, buf.len(), |range, gpa| {
        buf.get(range)
            .and_then(|chunk| mem.write(chunk, gpa).ok())
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const MEM_SIZE: usize = 64 << 20;
    /// P | R/W | U/S: the most permissive intermediate entry.
    const PRW_US: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_USER;

    fn ram() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest RAM")
    }

    fn put64(mem: &GuestMemoryMmap<()>, gpa: u64, val: u64) {
        mem.write_slice(&val.to_le_bytes(), GuestAddress(gpa))
            .expect("write entry");
    }

    fn put32(mem: &GuestMemoryMmap<()>, gpa: u64, val: u32) {
        mem.write_slice(&val.to_le_bytes(), GuestAddress(gpa))
            .expect("write entry");
    }

    fn regs32(cr3: u64, pse: bool) -> PagingRegs {
        PagingRegs {
            cr0: Cr0::PG.bits() | Cr0::PE.bits(),
            cr3,
            cr4: if pse { Cr4::PSE.bits() } else { 0 },
            efer: 0,
        }
    }

    fn regs_pae(cr3: u64, nxe: bool) -> PagingRegs {
        PagingRegs {
            cr0: Cr0::PG.bits() | Cr0::PE.bits(),
            cr3,
            cr4: Cr4::PAE.bits(),
            efer: if nxe { Efer::NXE.bits() } else { 0 },
        }
    }

    fn regs_long(cr3: u64, nxe: bool, la57: bool) -> PagingRegs {
        PagingRegs {
            cr0: Cr0::PG.bits() | Cr0::PE.bits(),
            cr3,
            cr4: Cr4::PAE.bits() | if la57 { Cr4::LA57.bits() } else { 0 },
            efer: Efer::LME.bits() | Efer::LMA.bits() | if nxe { Efer::NXE.bits() } else { 0 },
        }
    }

    /// Translates with both entry points and checks that they agree.
    fn tr(mem: &GuestMemoryMmap<()>, regs: &PagingRegs, va: u64) -> Translation {
        let t = translate(mem, regs, GuestVirtAddr(va)).expect("translate");
        let fast = translate_fast(mem, regs, GuestVirtAddr(va)).expect("translate_fast");
        assert_eq!(fast, (t.gpa, t.page_size));
        t
    }

    fn err(mem: &GuestMemoryMmap<()>, regs: &PagingRegs, va: u64) -> WalkError {
        let e = translate(mem, regs, GuestVirtAddr(va)).expect_err("translation should fail");
        let fast = translate_fast(mem, regs, GuestVirtAddr(va)).expect_err("fast should fail");
        assert_eq!(e, fast);
        e
    }

    /// (level, table, index, entry_gpa) of each visited level, for compact comparisons.
    fn path(t: &Translation) -> Vec<(&'static str, u64, u64, u64)> {
        t.levels
            .iter()
            .map(|l| (l.level, l.table.0, l.index, l.entry_gpa.0))
            .collect()
    }

    /// Builds 4- or 5-level tables from a pool high in RAM, independently of the walker.
    struct Builder<'a> {
        mem: &'a GuestMemoryMmap<()>,
        root: u64,
        next: u64,
        five: bool,
    }

    impl<'a> Builder<'a> {
        fn new(mem: &'a GuestMemoryMmap<()>, five: bool) -> Self {
            Builder {
                mem,
                root: 0x0370_0000,
                next: 0x0371_0000,
                five,
            }
        }

        fn regs(&self, nxe: bool) -> PagingRegs {
            regs_long(self.root, nxe, self.five)
        }

        /// Maps the `size` page at `va` to `gpa` with leaf flags `flags` (P is added).
        fn map(&mut self, va: u64, gpa: u64, size: u64, flags: u64) {
            let shifts: &[u32] = if self.five {
                &[48, 39, 30, 21, 12]
            } else {
                &[39, 30, 21, 12]
            };
            let mut table = self.root;
            for &shift in shifts {
                let slot = table + ((va >> shift) & 0x1ff) * 8;
                if 1u64 << shift == size {
                    let ps = if shift > 12 { PTE_PS } else { 0 };
                    put64(self.mem, slot, gpa | flags | ps | PTE_PRESENT);
                    return;
                }
                let mut raw = [0u8; 8];
                self.mem
                    .read_slice(&mut raw, GuestAddress(slot))
                    .expect("read");
                let entry = u64::from_le_bytes(raw);
                table = if entry & PTE_PRESENT != 0 {
                    entry & ADDR_MASK_52
                } else {
                    let t = self.next;
                    self.next += 0x1000;
                    put64(self.mem, slot, t | PRW_US);
                    t
                };
            }
            panic!("no level maps {size:#x}-byte pages");
        }
    }

    #[test]
    fn mode_from_registers() {
        let pg = Cr0::PG.bits() | Cr0::PE.bits();
        let m = |cr0, cr4, efer| {
            PagingRegs {
                cr0,
                cr3: 0,
                cr4,
                efer,
            }
            .mode()
        };
        assert_eq!(m(0, 0, 0), PagingMode::Disabled);
        assert_eq!(
            m(Cr0::PE.bits(), Cr4::PAE.bits(), Efer::LME.bits()),
            PagingMode::Disabled
        );
        assert_eq!(m(pg, 0, 0), PagingMode::Bits32);
        assert_eq!(m(pg, Cr4::PSE.bits(), 0), PagingMode::Bits32);
        assert_eq!(m(pg, Cr4::PAE.bits(), 0), PagingMode::Pae);
        assert_eq!(m(pg, Cr4::PAE.bits(), Efer::NXE.bits()), PagingMode::Pae);
        assert_eq!(
            m(pg, Cr4::PAE.bits(), Efer::LME.bits() | Efer::LMA.bits()),
            PagingMode::Level4
        );
        assert_eq!(m(pg, Cr4::PAE.bits(), Efer::LME.bits()), PagingMode::Level4);
        assert_eq!(m(pg, Cr4::PAE.bits(), Efer::LMA.bits()), PagingMode::Level4);
        assert_eq!(
            m(
                pg,
                Cr4::PAE.bits() | Cr4::LA57.bits(),
                Efer::LME.bits() | Efer::LMA.bits()
            ),
            PagingMode::Level5
        );
        // LA57 means nothing outside IA-32e mode.
        assert_eq!(
            m(pg, Cr4::PAE.bits() | Cr4::LA57.bits(), 0),
            PagingMode::Pae
        );
    }

    #[test]
    fn paging_disabled_is_identity_on_32_bits() {
        let mem = ram();
        let regs = PagingRegs::default();
        let t = tr(&mem, &regs, 0x0123_4567);
        assert_eq!(t.gpa, GuestAddress(0x0123_4567));
        assert_eq!(t.page_size, PAGE_SIZE);
        assert!(t.levels.is_empty());
        assert!(t.writable && t.user && t.executable);
        assert_eq!(
            tr(&mem, &regs, 0xffff_ffff_0000_1000).gpa,
            GuestAddress(0x1000)
        );

        mem.write_slice(b"identity", GuestAddress(0x5ffc))
            .expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(read_virt(&mem, &regs, GuestVirtAddr(0x5ffc), &mut buf), 8);
        assert_eq!(&buf, b"identity");
    }

    #[test]
    fn bits32_4k_page() {
        let mem = ram();
        // va 0x00c0_5abc: PD index 3, PT index 5, offset 0xabc (SDM 4.3, Figure 4-2).
        put32(&mem, 0x1000 + 3 * 4, 0x2000 | PRW_US as u32);
        // Bit 7 of a PTE is PAT, not PS: it must not make a large page.
        put32(
            &mem,
            0x2000 + 5 * 4,
            0x0030_0000 | PTE_PS as u32 | PRW_US as u32,
        );
        // PWT and PCD (CR3 bits 3, 4) are not address bits.
        for pse in [false, true] {
            let t = tr(&mem, &regs32(0x1018, pse), 0x00c0_5abc);
            assert_eq!(t.gpa, GuestAddress(0x0030_0abc));
            assert_eq!(t.page_size, PAGE_SIZE);
            assert_eq!(
                path(&t),
                [("PD", 0x1000, 3, 0x100c), ("PT", 0x2000, 5, 0x2014)]
            );
            assert_eq!(t.levels[1].entry, 0x0030_0087);
            assert!(t.executable, "32-bit paging has no XD bit");
        }
    }

    #[test]
    fn bits32_4m_page_needs_pse() {
        let mem = ram();
        let va = 0x0812_3456; // PD index 0x20, offset in a 4 MiB page 0x12_3456
        put32(
            &mem,
            0x1000 + 0x20 * 4,
            0x0180_0000 | (PTE_PS | PRW_US) as u32,
        );
        let t = tr(&mem, &regs32(0x1000, true), va);
        assert_eq!(t.gpa, GuestAddress(0x0192_3456));
        assert_eq!(t.page_size, PAGE_SIZE_4M);
        assert_eq!(path(&t), [("PD", 0x1000, 0x20, 0x1080)]);

        // Without CR4.PSE the PS bit is ignored and the PDE points to a page table
        // (SDM 4.3): PT index (va >> 12) & 0x3ff = 0x123.
        put32(&mem, 0x0180_0000 + 0x123 * 4, 0x0005_0000 | PRW_US as u32);
        let t = tr(&mem, &regs32(0x1000, false), va);
        assert_eq!(t.gpa, GuestAddress(0x0005_0456));
        assert_eq!(t.page_size, PAGE_SIZE);
        assert_eq!(
            path(&t),
            [
                ("PD", 0x1000, 0x20, 0x1080),
                ("PT", 0x0180_0000, 0x123, 0x0180_048c)
            ]
        );
    }

    #[test]
    fn bits32_pse36_high_address_and_reserved_bit() {
        let mem = ram();
        let regs = regs32(0x1000, true);
        // Bits 20:13 = 0x12 become physical-address bits 39:32 (SDM 4.3, Table 4-4).
        let pde = 0x0180_0000 | (0x12 << 13) | PTE_PS | PRW_US;
        put32(&mem, 0x1000 + 0x20 * 4, pde as u32);
        let t = tr(&mem, &regs, 0x0812_3456);
        assert_eq!(t.gpa, GuestAddress(0x12_0192_3456));
        assert_eq!(t.page_size, PAGE_SIZE_4M);
        // That page is far outside guest RAM, so nothing can be read from it.
        let mut buf = [0u8; 4];
        assert_eq!(
            read_virt(&mem, &regs, GuestVirtAddr(0x0812_3456), &mut buf),
            0
        );

        put32(&mem, 0x1000 + 0x20 * 4, (pde | RSVD_4M) as u32);
        assert_eq!(
            err(&mem, &regs, 0x0812_3456),
            WalkError::ReservedBits {
                level: "PD",
                entry_gpa: GuestAddress(0x1080),
                entry: pde | RSVD_4M,
                bits: RSVD_4M,
            }
        );
    }

    #[test]
    fn bits32_rejects_wide_address_and_missing_entries() {
        let mem = ram();
        let regs = regs32(0x1000, false);
        assert_eq!(
            err(&mem, &regs, 0x1_0000_0000),
            WalkError::AddressTooWide {
                va: 0x1_0000_0000,
                mode: PagingMode::Bits32
            }
        );
        assert_eq!(
            err(&mem, &regs, 0x00c0_5abc),
            WalkError::NotPresent {
                level: "PD",
                entry_gpa: GuestAddress(0x100c),
                entry: 0
            }
        );
        put32(&mem, 0x100c, 0x2000 | PRW_US as u32);
        put32(&mem, 0x2014, 0x0030_0000 | (PTE_WRITABLE | PTE_USER) as u32);
        assert_eq!(
            err(&mem, &regs, 0x00c0_5abc),
            WalkError::NotPresent {
                level: "PT",
                entry_gpa: GuestAddress(0x2014),
                entry: 0x0030_0006
            }
        );
        // A page directory beyond the end of RAM.
        assert_eq!(
            err(&mem, &regs32(0xffff_f000, false), 0x00c0_5abc),
            WalkError::TableOutsideRam {
                level: "PD",
                gpa: GuestAddress(0xffff_f00c)
            }
        );
    }

    /// PAE tables for va 0x8060_5abc (PDPT index 2, PD index 3, PT index 5, offset 0xabc)
    /// with the PDPT at 0x1020, which is 32-byte but not 4 KiB aligned (SDM 4.4.1).
    fn pae_setup(mem: &GuestMemoryMmap<()>) {
        put64(mem, 0x1020 + 2 * 8, 0x3000 | PTE_PRESENT);
        put64(mem, 0x3000 + 3 * 8, 0x4000 | PRW_US);
        put64(mem, 0x4000 + 5 * 8, 0x0030_0000 | PRW_US);
        // PT index 6 maps a frame above 4 GiB: PAE entries carry wide addresses.
        put64(mem, 0x4000 + 6 * 8, 0x12_3456_7000 | PRW_US);
    }

    #[test]
    fn pae_4k_page() {
        let mem = ram();
        pae_setup(&mem);
        let regs = regs_pae(0x1020, false);
        let t = tr(&mem, &regs, 0x8060_5abc);
        assert_eq!(t.gpa, GuestAddress(0x0030_0abc));
        assert_eq!(t.page_size, PAGE_SIZE);
        assert_eq!(
            path(&t),
            [
                ("PDPT", 0x1020, 2, 0x1030),
                ("PD", 0x3000, 3, 0x3018),
                ("PT", 0x4000, 5, 0x4028)
            ]
        );
        assert_eq!(
            tr(&mem, &regs, 0x8060_6abc).gpa,
            GuestAddress(0x12_3456_7abc)
        );
        // CR3 bits 4:0 are ignored; with 0x1000 the PDPT entry would be elsewhere.
        assert_eq!(
            tr(&mem, &regs_pae(0x1038, false), 0x8060_5abc).gpa.0,
            0x0030_0abc
        );
        assert!(matches!(
            err(&mem, &regs_pae(0x1000, false), 0x8060_5abc),
            WalkError::NotPresent { level: "PDPT", .. }
        ));
        assert!(matches!(
            err(&mem, &regs, 0x1_8060_5abc),
            WalkError::AddressTooWide {
                mode: PagingMode::Pae,
                ..
            }
        ));
    }

    #[test]
    fn pae_2m_page() {
        let mem = ram();
        pae_setup(&mem);
        let regs = regs_pae(0x1020, false);
        // va 0x8081_2345: PDPT index 2, PD index 4, offset 0x1_2345; PAT (bit 12) set.
        let pde = 0x0260_0000 | (1 << 12) | PTE_PS | PRW_US;
        put64(&mem, 0x3000 + 4 * 8, pde);
        let t = tr(&mem, &regs, 0x8081_2345);
        assert_eq!(t.gpa, GuestAddress(0x0261_2345));
        assert_eq!(t.page_size, 2 << 20);
        assert_eq!(
            path(&t),
            [("PDPT", 0x1020, 2, 0x1030), ("PD", 0x3000, 4, 0x3020)]
        );

        put64(&mem, 0x3020, pde | (1 << 13));
        assert!(matches!(
            err(&mem, &regs, 0x8081_2345),
            WalkError::ReservedBits {
                level: "PD",
                bits: 0x2000,
                ..
            }
        ));
    }

    #[test]
    fn pae_reserved_bits_and_nx() {
        let mem = ram();
        pae_setup(&mem);
        // PDPTEs have no R/W bit: bits 2:1 are reserved (SDM 4.4.1).
        put64(&mem, 0x1030, 0x3000 | PTE_PRESENT | PTE_WRITABLE);
        assert!(matches!(
            err(&mem, &regs_pae(0x1020, true), 0x8060_5abc),
            WalkError::ReservedBits {
                level: "PDPT",
                bits: 0x2,
                ..
            }
        ));
        put64(&mem, 0x1030, 0x3000 | PTE_PRESENT);

        put64(&mem, 0x4028, 0x0030_0000 | PRW_US | PTE_XD);
        let t = tr(&mem, &regs_pae(0x1020, true), 0x8060_5abc);
        assert_eq!(t.gpa, GuestAddress(0x0030_0abc));
        assert!(!t.executable && t.writable && t.user);
        // Without EFER.NXE, bit 63 is reserved (SDM 4.4.2).
        assert!(matches!(
            err(&mem, &regs_pae(0x1020, false), 0x8060_5abc),
            WalkError::ReservedBits {
                level: "PT",
                bits: PTE_XD,
                ..
            }
        ));
        // Bits 62:52 are reserved in PAE entries (but ignored in 4-level ones).
        put64(&mem, 0x4028, 0x0030_0000 | PRW_US | (1 << 52));
        assert!(matches!(
            err(&mem, &regs_pae(0x1020, true), 0x8060_5abc),
            WalkError::ReservedBits {
                level: "PT",
                bits: 0x0010_0000_0000_0000,
                ..
            }
        ));
    }

    /// va for the hand-built 4-level tables: PML4 1, PDPT 2, PD 3, PT 4, offset 0x567.
    const L4_VA: u64 = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x567;
    /// Entry addresses of the hand-built 4-level tables, root first.
    const L4_ENTRIES: [(&str, u64); 4] = [
        ("PML4", 0x10008),
        ("PDPT", 0x11010),
        ("PD", 0x12018),
        ("PT", 0x13020),
    ];

    fn level4_setup(mem: &GuestMemoryMmap<()>) {
        // Protection-key bits 62:59 and ignored bits 58:52 are not address bits (SDM 4.5.4).
        put64(mem, 0x10008, 0x11000 | PRW_US | (0xf << 59) | (0x7f << 52));
        put64(mem, 0x11010, 0x12000 | PRW_US);
        put64(mem, 0x12018, 0x13000 | PRW_US);
        put64(mem, 0x13020, 0x0030_0000 | PRW_US);
    }

    #[test]
    fn level4_4k_page_ignores_pcid() {
        let mem = ram();
        level4_setup(&mem);
        let mut regs = regs_long(0x10000 | 0xabc, true, false);
        regs.cr4 |= Cr4::PCIDE.bits();
        let t = tr(&mem, &regs, L4_VA);
        assert_eq!(t.gpa, GuestAddress(0x0030_0567));
        assert_eq!(t.page_size, PAGE_SIZE);
        assert_eq!(
            path(&t),
            [
                ("PML4", 0x10000, 1, 0x10008),
                ("PDPT", 0x11000, 2, 0x11010),
                ("PD", 0x12000, 3, 0x12018),
                ("PT", 0x13000, 4, 0x13020)
            ]
        );
        assert!(t.writable && t.user && t.executable);
        // EFER.LME alone (LMA not yet reflected) still selects 4-level paging.
        regs.efer = Efer::LME.bits();
        assert_eq!(tr(&mem, &regs, L4_VA).gpa, GuestAddress(0x0030_0567));
    }

    #[test]
    fn level4_2m_and_1g_pages() {
        let mem = ram();
        level4_setup(&mem);
        let regs = regs_long(0x10000, false, false);
        // PD index 5 maps a 2 MiB page; PAT (bit 12) is not an address bit.
        put64(
            &mem,
            0x12000 + 5 * 8,
            0x0260_0000 | (1 << 12) | PTE_PS | PRW_US,
        );
        let va = (1 << 39) | (2 << 30) | (5 << 21) | 0x1_2345;
        let t = tr(&mem, &regs, va);
        assert_eq!(t.gpa, GuestAddress(0x0261_2345));
        assert_eq!(t.page_size, 2 << 20);
        assert_eq!(t.levels.len(), 3);
        assert_eq!(t.levels[2].index, 5);

        // PDPT index 3 maps a 1 GiB page above 4 GiB.
        put64(&mem, 0x11000 + 3 * 8, 0x1_4000_0000 | PTE_PS | PRW_US);
        let va = (1 << 39) | (3 << 30) | 0x1234_5678;
        let t = tr(&mem, &regs, va);
        assert_eq!(t.gpa, GuestAddress(0x1_5234_5678));
        assert_eq!(t.page_size, 1 << 30);
        assert_eq!(
            path(&t),
            [("PML4", 0x10000, 1, 0x10008), ("PDPT", 0x11000, 3, 0x11018)]
        );

        // Reserved low address bits of large pages (SDM Tables 4-16, 4-18).
        put64(&mem, 0x11018, 0x1_4000_0000 | (1 << 29) | PTE_PS | PRW_US);
        assert!(matches!(
            err(&mem, &regs, va),
            WalkError::ReservedBits {
                level: "PDPT",
                bits: 0x2000_0000,
                ..
            }
        ));
        put64(&mem, 0x12028, 0x0260_0000 | (1 << 20) | PTE_PS | PRW_US);
        assert!(matches!(
            err(&mem, &regs, (1 << 39) | (2 << 30) | (5 << 21)),
            WalkError::ReservedBits {
                level: "PD",
                bits: 0x10_0000,
                ..
            }
        ));
        // PS is reserved in a PML4E.
        put64(&mem, 0x10008, 0x11000 | PTE_PS | PRW_US);
        assert!(matches!(
            err(&mem, &regs, L4_VA),
            WalkError::ReservedBits {
                level: "PML4",
                bits: PTE_PS,
                ..
            }
        ));
    }

    #[test]
    fn level5_4k_page() {
        let mem = ram();
        let va = (1 << 48) | (2 << 39) | (3 << 30) | (4 << 21) | (5 << 12) | 0x678;
        put64(&mem, 0x20000 + 8, 0x21000 | PRW_US);
        put64(&mem, 0x21000 + 2 * 8, 0x22000 | PRW_US);
        put64(&mem, 0x22000 + 3 * 8, 0x23000 | PRW_US);
        put64(&mem, 0x23000 + 4 * 8, 0x24000 | PRW_US);
        put64(&mem, 0x24000 + 5 * 8, 0x0030_0000 | PRW_US);
        let t = tr(&mem, &regs_long(0x20000, false, true), va);
        assert_eq!(t.gpa, GuestAddress(0x0030_0678));
        assert_eq!(
            path(&t),
            [
                ("PML5", 0x20000, 1, 0x20008),
                ("PML4", 0x21000, 2, 0x21010),
                ("PDPT", 0x22000, 3, 0x22018),
                ("PD", 0x23000, 4, 0x23020),
                ("PT", 0x24000, 5, 0x24028)
            ]
        );
        // The same address is not canonical under 4-level paging.
        assert_eq!(
            err(&mem, &regs_long(0x20000, false, false), va),
            WalkError::NonCanonical(va)
        );
    }

    #[test]
    fn higher_half_kernel_mapping() {
        let mem = ram();
        let mut b = Builder::new(&mem, false);
        b.map(0xffff_ffff_8000_1000, 0x0050_0000, PAGE_SIZE, PTE_WRITABLE);
        let t = tr(&mem, &b.regs(false), 0xffff_ffff_8000_1234);
        assert_eq!(t.gpa, GuestAddress(0x0050_0234));
        let idx: Vec<_> = t.levels.iter().map(|l| l.index).collect();
        assert_eq!(idx, [511, 510, 0, 1]);
        assert_eq!(t.levels[0].entry_gpa, GuestAddress(b.root + 511 * 8));
        assert!(t.writable && !t.user);
    }

    #[test]
    fn non_canonical_addresses() {
        let mem = ram();
        let l4 = regs_long(0x10000, false, false);
        let l5 = regs_long(0x10000, false, true);
        for va in [
            0x0000_8000_0000_0000,
            0xffff_7fff_ffff_ffff,
            0x8000_0000_0000_0000,
        ] {
            assert_eq!(err(&mem, &l4, va), WalkError::NonCanonical(va));
        }
        // Canonical: the walk starts and finds an empty PML4.
        for va in [0xffff_8000_0000_0000, 0x0000_7fff_ffff_ffff] {
            assert!(matches!(
                err(&mem, &l4, va),
                WalkError::NotPresent { level: "PML4", .. }
            ));
        }
        for va in [0x0100_0000_0000_0000, 0xfeff_ffff_ffff_ffff] {
            assert_eq!(err(&mem, &l5, va), WalkError::NonCanonical(va));
        }
        for va in [
            0x0000_8000_0000_0000,
            0x00ff_ffff_ffff_f000,
            0xff00_0000_0000_0000,
        ] {
            assert!(matches!(
                err(&mem, &l5, va),
                WalkError::NotPresent { level: "PML5", .. }
            ));
        }
    }

    #[test]
    fn not_present_reports_each_level() {
        let mem = ram();
        level4_setup(&mem);
        let regs = regs_long(0x10000, false, false);
        for (level, gpa) in L4_ENTRIES {
            let mut raw = [0u8; 8];
            mem.read_slice(&mut raw, GuestAddress(gpa)).expect("read");
            let saved = u64::from_le_bytes(raw);
            put64(&mem, gpa, saved & !PTE_PRESENT);
            assert_eq!(
                err(&mem, &regs, L4_VA),
                WalkError::NotPresent {
                    level,
                    entry_gpa: GuestAddress(gpa),
                    entry: saved & !PTE_PRESENT
                }
            );
            put64(&mem, gpa, saved);
        }
        assert_eq!(tr(&mem, &regs, L4_VA).gpa, GuestAddress(0x0030_0567));

        let mem = ram();
        pae_setup(&mem);
        let regs = regs_pae(0x1020, false);
        for (level, gpa, saved) in [
            ("PDPT", 0x1030, 0x3000 | PTE_PRESENT),
            ("PD", 0x3018, 0x4000 | PRW_US),
            ("PT", 0x4028, 0x0030_0000 | PRW_US),
        ] {
            put64(&mem, gpa, 0);
            assert_eq!(
                err(&mem, &regs, 0x8060_5abc),
                WalkError::NotPresent {
                    level,
                    entry_gpa: GuestAddress(gpa),
                    entry: 0
                }
            );
            put64(&mem, gpa, saved);
        }
        assert_eq!(tr(&mem, &regs, 0x8060_5abc).gpa, GuestAddress(0x0030_0abc));
    }

    #[test]
    fn table_outside_ram() {
        let mem = ram();
        level4_setup(&mem);
        // The PDPT pointer leads past the end of the 64 MiB of RAM.
        put64(&mem, 0x10008, 0x1_0000_0000 | PRW_US);
        let e = err(&mem, &regs_long(0x10000, false, false), L4_VA);
        assert_eq!(
            e,
            WalkError::TableOutsideRam {
                level: "PDPT",
                gpa: GuestAddress(0x1_0000_0010)
            }
        );
        assert!(e.to_string().contains("outside guest RAM"), "{e}");
        // CR3 itself outside RAM.
        assert_eq!(
            err(&mem, &regs_long(0x8000_0000, false, false), L4_VA),
            WalkError::TableOutsideRam {
                level: "PML4",
                gpa: GuestAddress(0x8000_0008)
            }
        );
    }

    #[test]
    fn effective_permissions() {
        let mem = ram();
        level4_setup(&mem);
        let regs = regs_long(0x10000, true, false);
        let perms = |mem: &GuestMemoryMmap<()>| {
            let t = tr(mem, &regs, L4_VA);
            (t.writable, t.user, t.executable)
        };
        assert_eq!(perms(&mem), (true, true, true));
        // R/W clear at the PD: read-only though the PTE says writable.
        put64(&mem, 0x12018, 0x13000 | PTE_PRESENT | PTE_USER);
        assert_eq!(perms(&mem), (false, true, true));
        // U/S clear at the PML4: supervisor-only.
        put64(&mem, 0x12018, 0x13000 | PRW_US);
        put64(&mem, 0x10008, 0x11000 | PTE_PRESENT | PTE_WRITABLE);
        assert_eq!(perms(&mem), (true, false, true));
        // XD at an upper level forbids execution of everything below it.
        put64(&mem, 0x10008, 0x11000 | PRW_US);
        put64(&mem, 0x11010, 0x12000 | PRW_US | PTE_XD);
        assert_eq!(perms(&mem), (true, true, false));
        // Without EFER.NXE that XD bit is reserved instead.
        assert!(matches!(
            err(&mem, &regs_long(0x10000, false, false), L4_VA),
            WalkError::ReservedBits {
                level: "PDPT",
                bits: PTE_XD,
                ..
            }
        ));
        put64(&mem, 0x11010, 0x12000 | PRW_US);
        put64(&mem, 0x13020, 0x0030_0000 | PTE_PRESENT | PTE_XD);
        assert_eq!(perms(&mem), (false, false, false));
    }

    /// Two virtual pages at 0x40_0000 backed by physical pages in reverse order, with a decoy
    /// in the page physically following the first.
    fn split_pages(mem: &GuestMemoryMmap<()>) -> PagingRegs {
        let mut b = Builder::new(mem, false);
        b.map(0x40_0000, 0x30_0000, PAGE_SIZE, PTE_WRITABLE);
        b.map(0x40_1000, 0x10_0000, PAGE_SIZE, PTE_WRITABLE);
        b.map(0x50_0000, 0x20_0000, PAGE_SIZE, PTE_WRITABLE);
        // 0x50_1000 stays unmapped; 0x60_1000 maps outside RAM.
        b.map(0x60_0000, 0x21_0000, PAGE_SIZE, PTE_WRITABLE);
        b.map(0x60_1000, 0x8000_0000, PAGE_SIZE, PTE_WRITABLE);
        mem.write_slice(&[1, 2, 3, 4, 5, 6, 7, 8], GuestAddress(0x30_0ff8))
            .expect("write");
        mem.write_slice(&[9, 10, 11, 12, 13, 14, 15, 16], GuestAddress(0x10_0000))
            .expect("write");
        mem.write_slice(&[0xee; 8], GuestAddress(0x30_1000))
            .expect("write");
        b.regs(false)
    }

    #[test]
    fn read_virt_follows_noncontiguous_pages() {
        let mem = ram();
        let regs = split_pages(&mem);
        let mut buf = [0u8; 16];
        assert_eq!(
            read_virt(&mem, &regs, GuestVirtAddr(0x40_0ff8), &mut buf),
            16
        );
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(read_virt(&mem, &regs, GuestVirtAddr(0x40_0ff8), &mut []), 0);
    }

    #[test]
    fn read_virt_stops_at_unmapped_page_or_end_of_ram() {
        let mem = ram();
        let regs = split_pages(&mem);
        mem.write_slice(b"abcdefgh", GuestAddress(0x20_0ff8))
            .expect("write");
        mem.write_slice(b"ABCDEFGH", GuestAddress(0x21_0ff8))
            .expect("write");
        for (va, want) in [(0x50_0ff8, b"abcdefgh"), (0x60_0ff8, b"ABCDEFGH")] {
            let mut buf = [0u8; 16];
            assert_eq!(read_virt(&mem, &regs, GuestVirtAddr(va), &mut buf), 8);
            assert_eq!(&buf[..8], want);
            assert_eq!(buf[8..], [0; 8], "bytes past the hole must be left alone");
        }
        let mut buf = [0u8; 4];
        assert_eq!(
            read_virt(&mem, &regs, GuestVirtAddr(0x50_1000), &mut buf),
            0
        );
        assert_eq!(
            read_virt(&mem, &regs, GuestVirtAddr(0x0000_8000_0000_0000), &mut buf),
            0
        );
    }

    #[test]
    fn write_virt_follows_pages_and_stops_at_holes() {
        let mem = ram();
        let regs = split_pages(&mem);
        let data: Vec<u8> = (100..116).collect();
        assert_eq!(write_virt(&mem, &regs, GuestVirtAddr(0x40_0ff8), &data), 16);
        let mut phys = [0u8; 8];
        mem.read_slice(&mut phys, GuestAddress(0x30_0ff8))
            .expect("read");
        assert_eq!(phys[..], data[..8]);
        mem.read_slice(&mut phys, GuestAddress(0x10_0000))
            .expect("read");
        assert_eq!(phys[..], data[8..]);
        mem.read_slice(&mut phys, GuestAddress(0x30_1000))
            .expect("read");
        assert_eq!(
            phys, [0xee; 8],
            "the physically next page must be untouched"
        );

        assert_eq!(write_virt(&mem, &regs, GuestVirtAddr(0x50_0ffc), &data), 4);
        mem.read_slice(&mut phys, GuestAddress(0x20_0ff8))
            .expect("read");
        assert_eq!(phys, [0, 0, 0, 0, 100, 101, 102, 103]);
        assert_eq!(write_virt(&mem, &regs, GuestVirtAddr(0x60_0ffe), &data), 2);
        assert_eq!(write_virt(&mem, &regs, GuestVirtAddr(0x50_1000), &data), 0);
    }

    #[test]
    fn read_virt_splits_at_large_page_boundaries() {
        let mem = ram();
        let mut b = Builder::new(&mem, false);
        b.map(0x60_0000, 0x0200_0000, 2 << 20, 0);
        b.map(0x80_0000, 0x0100_0000, 2 << 20, 0);
        mem.write_slice(b"left", GuestAddress(0x021f_fffc))
            .expect("write");
        mem.write_slice(b"RIGHT", GuestAddress(0x0100_0000))
            .expect("write");
        mem.write_slice(b"xxxx", GuestAddress(0x0220_0000))
            .expect("write");
        let mut buf = [0u8; 9];
        assert_eq!(
            read_virt(&mem, &b.regs(false), GuestVirtAddr(0x7f_fffc), &mut buf),
            9
        );
        assert_eq!(&buf, b"leftRIGHT");
    }

    #[test]
    fn read_virt_at_top_of_address_space_does_not_wrap() {
        let mem = ram();
        let mut b = Builder::new(&mem, false);
        b.map(0xffff_ffff_ffff_f000, 0x0050_0000, PAGE_SIZE, 0);
        b.map(0, 0x0060_0000, PAGE_SIZE, 0);
        mem.write_slice(b"top!", GuestAddress(0x0050_0ffc))
            .expect("write");
        let mut buf = [0u8; 16];
        let n = read_virt(
            &mem,
            &b.regs(false),
            GuestVirtAddr(0xffff_ffff_ffff_fffc),
            &mut buf,
        );
        assert_eq!(n, 4);
        assert_eq!(&buf[..4], b"top!");
        assert_eq!(
            write_virt(&mem, &b.regs(false), GuestVirtAddr(u64::MAX), &buf),
            1
        );
    }

    #[test]
    fn five_level_builder_read() {
        let mem = ram();
        let mut b = Builder::new(&mem, true);
        let va = 0xff00_1234_5678_9000;
        b.map(va, 0x0070_0000, PAGE_SIZE, 0);
        mem.write_slice(b"la57", GuestAddress(0x0070_0010))
            .expect("write");
        let mut buf = [0u8; 4];
        assert_eq!(
            read_virt(&mem, &b.regs(false), GuestVirtAddr(va + 0x10), &mut buf),
            4
        );
        assert_eq!(&buf, b"la57");
    }

    #[test]
    fn errors_explain_themselves() {
        let e = WalkError::NotPresent {
            level: "PD",
            entry_gpa: GuestAddress(0x3018),
            entry: 0x4006,
        };
        assert_eq!(
            e.to_string(),
            "the PD entry at guest-physical 0x3018 is 0x4006, whose present bit is clear, so the address is not mapped"
        );
        let e = WalkError::AddressTooWide {
            va: 0x1_0000_0000,
            mode: PagingMode::Pae,
        };
        assert_eq!(
            e.to_string(),
            "address 0x100000000 is wider than the 32-bit linear addresses of PAE paging"
        );
    }
}
