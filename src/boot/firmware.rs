//! What a PC's firmware leaves in memory and kernels read without asking: the BIOS Data
//! Area (the serial port list, the EBDA segment, the base memory size), the Extended BIOS
//! Data Area it points to, the ACPI tables (`acpi.rs`) and the MP table (`mptable.rs`).
//! Every boot gets them, whatever the format: Linux reads the EBDA pointer and base memory
//! size to find the end of low memory, Xen reads them before anything else, both look for
//! the RSDP, and without ACPI (`acpi=off`) for the MP table.

use super::acpi::{self, AcpiTables};
use super::layout::{BDA, BDA_END, EBDA_SIZE, EBDA_START};
use super::mptable;
use super::{LoadError, MemWrite};
use crate::platform::{ACPI_AREA_END, ACPI_RSDP, MP_AREA_END, MP_TABLE};

/// BDA offset of the COM1..COM4 I/O base words (IBM PC BIOS interface, 40:00).
const BDA_COM_PORTS: usize = 0x00;
/// BDA offset of the EBDA's real-mode segment (40:0E).
const BDA_EBDA_SEGMENT: usize = 0x0e;
/// BDA offset of the equipment word (40:10); bits 9..11 count the serial ports.
const BDA_EQUIPMENT: usize = 0x10;
/// BDA offset of the base memory size in KiB (40:13), what INT 12h returns.
const BDA_BASE_MEMORY_KIB: usize = 0x13;
/// COM1's I/O base, the 16550 the VMM provides.
const COM1_PORT: u16 = 0x3f8;
/// The equipment word's serial-port count field (bits 9..11).
const EQUIPMENT_SERIAL_SHIFT: u16 = 9;

/// The BIOS Data Area's 256 bytes: COM1 at 0x3f8 (and no other port), the EBDA at
/// [`EBDA_START`], and 639 KiB of base memory (all of it below the EBDA).
pub(super) fn bios_data_area() -> Vec<u8> {
    let mut bda = vec![0u8; (BDA_END - BDA) as usize];
    let mut put16 = |off: usize, v: u16| bda[off..off + 2].copy_from_slice(&v.to_le_bytes());
    put16(BDA_COM_PORTS, COM1_PORT);
    put16(BDA_EBDA_SEGMENT, (EBDA_START >> 4) as u16);
    put16(BDA_EQUIPMENT, 1 << EQUIPMENT_SERIAL_SHIFT);
    put16(BDA_BASE_MEMORY_KIB, (EBDA_START >> 10) as u16);
    bda
}

/// The EBDA: its first byte is its own size in KiB; the rest is zero (the MP floating
/// pointer is in the BIOS area instead, where kernels look too).
fn extended_bios_data_area() -> Vec<u8> {
    let mut ebda = vec![0u8; EBDA_SIZE as usize];
    ebda[0] = (EBDA_SIZE >> 10) as u8;
    ebda
}

/// The firmware writes of a machine with `vcpus` CPUs, and the ACPI tables they hold (a
/// format that hands the kernel a copy of the RSDP takes it from there). Each area is
/// written whole, so that a reset restores it.
pub(super) fn writes(vcpus: usize) -> Result<(Vec<MemWrite>, AcpiTables), LoadError> {
    let tables = acpi::build(vcpus)?;
    for (signature, at) in &tables.tables {
        log::debug!("ACPI {} at {at:#x}", String::from_utf8_lossy(signature));
    }
    let used = tables.bytes.len() as u64;
    // acpi::build has checked the CPU count, which the MP table shares.
    let mp = mptable::build(vcpus);
    let mp_used = mp.len() as u64;
    let writes = vec![
        MemWrite::Bytes {
            gpa: BDA,
            data: bios_data_area(),
        },
        MemWrite::Bytes {
            gpa: EBDA_START,
            data: extended_bios_data_area(),
        },
        MemWrite::Bytes {
            gpa: ACPI_RSDP,
            data: tables.bytes.clone(),
        },
        MemWrite::Zero {
            gpa: ACPI_RSDP + used,
            len: ACPI_AREA_END - ACPI_RSDP - used,
        },
        MemWrite::Bytes {
            gpa: MP_TABLE,
            data: mp,
        },
        MemWrite::Zero {
            gpa: MP_TABLE + mp_used,
            len: MP_AREA_END - MP_TABLE - mp_used,
        },
    ];
    Ok((writes, tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], off: u64) -> u16 {
        let off = (off - BDA) as usize;
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    /// The BDA fields by their absolute addresses, as kernels read them.
    #[test]
    fn bda_fields() {
        let bda = bios_data_area();
        assert_eq!(bda.len(), 256);
        assert_eq!(u16_at(&bda, 0x400), 0x3f8, "COM1");
        assert_eq!(u16_at(&bda, 0x402), 0, "no COM2");
        assert_eq!(u16_at(&bda, 0x40e), 0x9fc0, "EBDA segment");
        assert_eq!(u16_at(&bda, 0x410) >> 9 & 7, 1, "one serial port");
        assert_eq!(u16_at(&bda, 0x413), 639, "base memory KiB");
        assert_eq!(extended_bios_data_area()[0], 1, "EBDA size KiB");
    }

    /// Every format's plan starts with the firmware writes, for the request's CPUs.
    #[test]
    fn every_plan_writes_the_firmware() {
        use super::super::tests::{aout_kludge, elf64};
        use super::super::{BootRequest, plan};
        let (want, _) = writes(3).unwrap();
        for image in [aout_kludge(), elf64(0x10_0000, 0x10_0000, 0x40, 0x1000)] {
            let req = BootRequest {
                vcpus: 3,
                ..BootRequest::new(&image, 16 << 20)
            };
            let p = plan(&req).unwrap();
            assert_eq!(p.writes[..want.len()], want[..], "{:?}", p.info.format);
        }
    }

    /// No format's boot structures (Multiboot v1 and v2 information, the Linux zero page
    /// and command line of an ELF64 or a bzImage, PVH's start info) nor its kernel land
    /// on a firmware area: only the firmware writes (the plan's first) touch them, for the
    /// largest machine the tables describe.
    #[test]
    fn no_boot_structure_overlaps_the_firmware_areas() {
        use super::super::layout::FIRMWARE_AREAS;
        use super::super::linux::bzimage::tests::bzimage;
        use super::super::linux::pvh::tests::vmlinux;
        use super::super::multiboot2::tests::{flat, image as multiboot2};
        use super::super::tests::{aout_kludge, elf64};
        use super::super::{BootFormat, BootRequest, plan};
        let cpus = acpi::MAX_CPUS;
        let (firmware, _) = writes(cpus).unwrap();
        let images = [
            aout_kludge(),
            multiboot2(&flat()),
            elf64(0x10_0000, 0x10_0000, 0x40, 0x1000),
            vmlinux(Some(0x100_0040)),
            bzimage(0x1000),
        ];
        let mut formats = Vec::new();
        for image in &images {
            let req = BootRequest {
                vcpus: cpus,
                cmdline: "console=ttyS0",
                ..BootRequest::new(image, 64 << 20)
            };
            let p = plan(&req).unwrap();
            formats.push(p.info.format);
            for w in &p.writes[firmware.len()..] {
                let (start, end) = match w {
                    MemWrite::Bytes { gpa, data } => (*gpa, gpa + data.len() as u64),
                    MemWrite::Zero { gpa, len } => (*gpa, gpa + len),
                };
                for (lo, hi) in FIRMWARE_AREAS {
                    assert!(
                        end <= lo || start >= hi,
                        "{:?}: {start:#x}..{end:#x} overlaps {lo:#x}..{hi:#x}",
                        p.info.format
                    );
                }
            }
        }
        assert_eq!(
            formats,
            [
                BootFormat::Multiboot,
                BootFormat::Multiboot2,
                BootFormat::Elf64,
                BootFormat::Pvh,
                BootFormat::BzImage64,
            ]
        );
    }

    /// The writes cover the BDA, the EBDA, the whole ACPI area and the MP tables' area,
    /// nothing else.
    #[test]
    fn writes_cover_the_firmware_areas() {
        let (writes, tables) = writes(2).unwrap();
        let mp = mptable::size(2) as u64;
        let mut covered: Vec<(u64, u64)> = writes
            .iter()
            .map(|w| match w {
                MemWrite::Bytes { gpa, data } => (*gpa, gpa + data.len() as u64),
                MemWrite::Zero { gpa, len } => (*gpa, gpa + len),
            })
            .collect();
        covered.sort();
        assert_eq!(
            covered,
            [
                (0x400, 0x500),
                (0x9_fc00, 0xa_0000),
                (0xe_0000, 0xe_0000 + tables.bytes.len() as u64),
                (0xe_0000 + tables.bytes.len() as u64, 0xf_0000),
                (0xf_0000, 0xf_0000 + mp),
                (0xf_0000 + mp, 0xf_2000),
            ]
        );
    }
}
