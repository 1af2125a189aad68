//! Where things sit in guest-physical memory at boot: the boot structures kvmgdb writes
//! (all in the first 512 KiB, below the 1 MiB where kernels are conventionally loaded;
//! README documents them as part of the entry state), the firmware areas every boot gets
//! (the BIOS Data Area, the EBDA, the ACPI tables: `firmware.rs`, `acpi.rs`) and the
//! e820-style RAM map that the boot protocols hand the guest.

use crate::memory::{HIGH_RAM_START, MMIO_HOLE_START};
use crate::platform::{ACPI_AREA_END, ACPI_RSDP, MP_AREA_END, MP_TABLE};

/// The GDT (Linux boot-protocol selectors: code 0x10, data 0x18).
pub const GDT: u64 = 0x500;
/// The Multiboot information structure.
pub const MULTIBOOT_INFO: u64 = 0x6000;
/// The Multiboot memory map (follows the information structure).
pub const MULTIBOOT_MMAP: u64 = 0x6100;
/// The Multiboot boot-loader name.
pub const MULTIBOOT_LOADER_NAME: u64 = 0x6700;
/// Variable-size boot information, one format at a time: the Multiboot2 information
/// structure, or the Multiboot v1 module list, module strings and command line. Up to
/// [`BOOT_INFO_END`].
pub const BOOT_INFO: u64 = 0x1_0000;
/// One past the last byte of [`BOOT_INFO`]'s area (64 KiB below the entry stack's top).
pub const BOOT_INFO_END: u64 = 0x7_0000;
/// The zeroed Linux `boot_params` page that RSI points to on ELF64 entry.
pub const BOOT_PARAMS: u64 = 0x7000;
/// The identity-mapping PML4; the PDPT and PDs follow it.
pub const PML4: u64 = 0x9000;
/// The initial stack pointer (the stack grows down from here).
pub const STACK_TOP: u64 = 0x8_0000;
/// End of the region the VMM reserves; kernel segments must not overlap `[GDT, RESERVED_END)`.
pub const RESERVED_END: u64 = 0x8_0000;

/// What a range of the memory map holds (the e820 / Multiboot mmap type numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM.
    Ram = 1,
    /// Not for the guest's allocator (firmware areas).
    Reserved = 2,
}

/// One range of the guest-physical memory map, as e820 and Multiboot's mmap describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    /// First guest-physical byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range holds.
    pub kind: MemoryKind,
}

/// The BIOS Data Area (IBM PC BIOS interface; `firmware.rs` fills it). It stays in the
/// RAM of the memory map, as on a PC, where the OS reads it early and may reuse it.
pub const BDA: u64 = 0x400;
/// One past the BIOS Data Area.
pub const BDA_END: u64 = 0x500;
/// Low RAM ends here: the Extended BIOS Data Area follows, as on a PC.
pub const EBDA_START: u64 = 0x9_fc00;
/// Bytes of the EBDA (1 KiB, up to the 640 KiB line).
pub const EBDA_SIZE: u64 = 0x400;
/// The BIOS ROM area kernels expect reserved.
const BIOS_ROM: u64 = 0xf_0000;
// The MP table lies in the BIOS area, which the memory map reserves.
const _: () = assert!(MP_TABLE >= BIOS_ROM && MP_AREA_END <= EXTENDED_START);
/// Extended memory starts at 1 MiB.
pub const EXTENDED_START: u64 = 1 << 20;

/// The firmware areas of every boot (BDA, EBDA, ACPI tables, MP table): no kernel segment
/// or module may overlap them, since the boot writes them whatever the format.
pub const FIRMWARE_AREAS: [(u64, u64); 4] = [
    (BDA, BDA_END),
    (EBDA_START, EBDA_START + EBDA_SIZE),
    (ACPI_RSDP, ACPI_AREA_END),
    (MP_TABLE, MP_AREA_END),
];

/// The memory map for `ram_top` (one past the highest RAM byte, RAM laid out as
/// `memory::ram_ranges` does): low RAM, the PC's reserved EBDA, ACPI tables' area and BIOS
/// area, RAM from 1 MiB up to the MMIO hole, and the RAM moved above 4 GiB, if any.
///
/// The ACPI area is `Reserved` rather than ACPI-reclaimable: it holds the FACS, which an OS
/// must never reuse (ACPI 6.5, 15.1 and 5.2.10), and reserved memory may hold any table.
pub fn memory_map(ram_top: u64) -> Vec<MemoryRange> {
    let range = |addr, size, kind| MemoryRange { addr, size, kind };
    let low_end = ram_top.min(MMIO_HOLE_START);
    let mut map = vec![
        range(0, EBDA_START, MemoryKind::Ram),
        range(EBDA_START, EBDA_SIZE, MemoryKind::Reserved),
        range(ACPI_RSDP, ACPI_AREA_END - ACPI_RSDP, MemoryKind::Reserved),
        range(BIOS_ROM, 0x1_0000, MemoryKind::Reserved),
        range(EXTENDED_START, low_end - EXTENDED_START, MemoryKind::Ram),
    ];
    if ram_top > HIGH_RAM_START {
        map.push(range(
            HIGH_RAM_START,
            ram_top - HIGH_RAM_START,
            MemoryKind::Ram,
        ));
    }
    map
}

/// KiB of contiguous RAM from 1 MiB to the first hole (Multiboot's `mem_upper`).
pub fn upper_memory_kib(map: &[MemoryRange]) -> u64 {
    map.iter()
        .find(|r| r.addr == EXTENDED_START && r.kind == MemoryKind::Ram)
        .map_or(0, |r| r.size >> 10)
}

/// Checks that `len` bytes of `what` fit in the [`BOOT_INFO`] area.
pub(super) fn check_boot_info(what: &'static str, len: usize) -> Result<(), super::LoadError> {
    let max = BOOT_INFO_END - BOOT_INFO;
    if len as u64 > max {
        return Err(super::LoadError::BootInfoTooLarge {
            what,
            size: len as u64,
            max,
        });
    }
    Ok(())
}
