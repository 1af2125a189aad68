//! Multiboot v1 (the Multiboot Specification 0.6.96): the header search, loading an ELF32,
//! ELF64-with-header or a.out-kludge image, the information block, and the 32-bit
//! protected-mode entry with EAX = 0x2BADB002 and EBX = the information block.

use super::elf::{ElfInfo, physical_entry, rd32};
use super::entry::{self, CpuMode};
use super::layout::{self, MemoryRange};
use super::{BootFormat, BootInfo, BootPlan, LoadError, MemWrite, RamMap};

/// Multiboot v1 header magic (Multiboot spec 3.1.2).
pub(super) const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The magic the boot loader leaves in EAX (Multiboot spec 3.2).
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie within the first 8 KiB of the image, 32-bit aligned.
pub(super) const MULTIBOOT_SEARCH: usize = 8192;
/// Header flag 16: the a.out kludge address fields are valid.
pub(super) const MULTIBOOT_AOUT_KLUDGE: u32 = 1 << 16;

/// A Multiboot v1 header found in the image.
#[derive(Clone, Copy, Debug)]
pub(super) struct MultibootHeader {
    offset: usize,
    flags: u32,
    header_addr: u32,
    load_addr: u32,
    load_end_addr: u32,
    bss_end_addr: u32,
    entry_addr: u32,
}

/// Finds a Multiboot v1 header with a valid checksum (Multiboot spec 3.1.1).
pub(super) fn find_multiboot(image: &[u8]) -> Option<MultibootHeader> {
    let limit = image.len().min(MULTIBOOT_SEARCH);
    (0..limit.saturating_sub(11)).step_by(4).find_map(|off| {
        let magic = rd32(image, off)?;
        let flags = rd32(image, off + 4)?;
        let sum = rd32(image, off + 8)?;
        if magic != MULTIBOOT_HEADER_MAGIC || magic.wrapping_add(flags).wrapping_add(sum) != 0 {
            return None;
        }
        let field = |i: usize| rd32(image, off + 12 + 4 * i).unwrap_or(0);
        Some(MultibootHeader {
            offset: off,
            flags,
            header_addr: field(0),
            load_addr: field(1),
            load_end_addr: field(2),
            bss_end_addr: field(3),
            entry_addr: field(4),
        })
    })
}

/// The offset of a Multiboot v1 header magic in the search area whose checksum is wrong,
/// if any: an image that asks for Multiboot but would not be booted as such.
pub(super) fn find_bad_checksum(image: &[u8]) -> Option<usize> {
    let limit = image.len().min(MULTIBOOT_SEARCH);
    (0..limit.saturating_sub(11))
        .step_by(4)
        .find(|&off| rd32(image, off) == Some(MULTIBOOT_HEADER_MAGIC))
}

/// The plan for a Multiboot kernel: the image loaded as its header (a.out kludge) or its
/// ELF program headers say, the information block, and the protected-mode entry.
pub(super) fn plan(
    image: &[u8],
    mb: MultibootHeader,
    elf: Option<&ElfInfo>,
    cmdline: &str,
    ram: &RamMap,
) -> Result<BootPlan, LoadError> {
    if mb.flags & 0xfffc != 0 {
        log::warn!(
            "Multiboot header asks for features kvmgdb does not provide (flags {:#x}); continuing",
            mb.flags
        );
    }
    let (mut writes, info) = if mb.flags & MULTIBOOT_AOUT_KLUDGE != 0 {
        load_aout_kludge(image, mb, elf, ram)?
    } else {
        let elf = elf.ok_or(LoadError::BadMultiboot(
            "not ELF, and the a.out kludge flag (bit 16) is not set",
        ))?;
        load_elf(image, elf, ram)?
    };
    let memory_map = ram.memory_map();
    writes.push(entry::gdt(CpuMode::Protected));
    writes.push(info_block(cmdline, &memory_map));
    let mut bsp = entry::entry_state(CpuMode::Protected, info.entry);
    bsp.regs.rax = MULTIBOOT_BOOTLOADER_MAGIC.into();
    bsp.regs.rbx = layout::MULTIBOOT_INFO;
    Ok(BootPlan {
        writes,
        vcpus: vec![bsp],
        memory_map,
        info,
    })
}

/// Multiboot spec 3.1.3: the header's address fields describe a flat image.
fn load_aout_kludge(
    image: &[u8],
    mb: MultibootHeader,
    elf: Option<&ElfInfo>,
    ram: &RamMap,
) -> Result<(Vec<MemWrite>, BootInfo), LoadError> {
    let bad = LoadError::BadMultiboot;
    if mb.load_addr > mb.header_addr {
        return Err(bad("load_addr is above header_addr"));
    }
    let file_start = mb
        .offset
        .checked_sub((mb.header_addr - mb.load_addr) as usize)
        .ok_or(bad("header_addr - load_addr reaches before the file start"))?;
    let load_len = if mb.load_end_addr == 0 {
        image.len() - file_start
    } else {
        if mb.load_end_addr < mb.load_addr {
            return Err(bad("load_end_addr is below load_addr"));
        }
        (mb.load_end_addr - mb.load_addr) as usize
    };
    let data = image
        .get(file_start..file_start + load_len)
        .ok_or(bad("the image is shorter than its load range"))?;
    let load = u64::from(mb.load_addr);
    let end = if mb.bss_end_addr == 0 {
        load + load_len as u64
    } else {
        u64::from(mb.bss_end_addr).max(load + load_len as u64)
    };
    ram.check_range(load, end)?;
    let writes = vec![
        MemWrite::Bytes {
            gpa: load,
            data: data.to_vec(),
        },
        MemWrite::Zero {
            gpa: load + load_len as u64,
            len: end - load - load_len as u64,
        },
    ];
    super::elf::check_entry(mb.entry_addr.into(), &[(load, end)])?;
    let info = BootInfo {
        format: BootFormat::Multiboot,
        entry: mb.entry_addr.into(),
        image_is_32bit: elf.is_none_or(|e| !e.is_64),
        kernel_end: end,
    };
    Ok((writes, info))
}

/// An ELF32 or ELF64 image with a Multiboot header: its PT_LOAD segments at `p_paddr`.
fn load_elf(
    image: &[u8],
    elf: &ElfInfo,
    ram: &RamMap,
) -> Result<(Vec<MemWrite>, BootInfo), LoadError> {
    let mut writes = Vec::new();
    let mut kernel_end = 0;
    for s in &elf.segments {
        let end = s.paddr.saturating_add(s.memsz);
        ram.check_range(s.paddr, end)?;
        let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
        writes.push(MemWrite::Bytes {
            gpa: s.paddr,
            data: data.to_vec(),
        });
        writes.push(MemWrite::Zero {
            gpa: s.paddr + s.filesz,
            len: s.memsz - s.filesz,
        });
        kernel_end = kernel_end.max(end);
    }
    let entry = physical_entry(elf, elf.entry);
    super::elf::check_entry(entry, &super::elf::loaded_ranges(elf))?;
    let info = BootInfo {
        format: BootFormat::Multiboot,
        entry,
        image_is_32bit: !elf.is_64,
        kernel_end,
    };
    Ok((writes, info))
}

/// Multiboot information flags (Multiboot spec 3.3).
const MBI_MEMORY: u32 = 1 << 0;
const MBI_CMDLINE: u32 = 1 << 2;
const MBI_MMAP: u32 = 1 << 6;
const MBI_LOADER_NAME: u32 = 1 << 9;
/// Bytes of `[MULTIBOOT_INFO, +INFO_AREA)`: the information structure, the memory map, the
/// command line and the boot-loader name all lie inside.
pub(super) const INFO_AREA: usize = 0x800;
/// The longest command line kept (the rest of its slot holds the NUL).
const CMDLINE_MAX: usize = 0x2ff;
/// Bytes per memory-map entry: the `size` field (20, not counting itself) and 20 more.
const MMAP_ENTRY: usize = 24;

/// The information block at [`layout::MULTIBOOT_INFO`]: one blob with the structure, the
/// memory map `map`, the command line and the boot-loader name, everything else zero.
fn info_block(cmdline: &str, map: &[MemoryRange]) -> MemWrite {
    let base = layout::MULTIBOOT_INFO;
    let mut block = vec![0u8; INFO_AREA];
    let mut put = |at: u64, bytes: &[u8]| {
        let off = (at - base) as usize;
        block[off..off + bytes.len()].copy_from_slice(bytes);
    };
    for (i, r) in map.iter().enumerate() {
        let at = layout::MULTIBOOT_MMAP + (MMAP_ENTRY * i) as u64;
        put(at, &20u32.to_le_bytes());
        put(at + 4, &r.addr.to_le_bytes());
        put(at + 12, &r.size.to_le_bytes());
        put(at + 20, &(r.kind as u32).to_le_bytes());
    }
    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.truncate(CMDLINE_MAX);
    cmd.push(0);
    put(layout::MULTIBOOT_CMDLINE, &cmd);
    put(layout::MULTIBOOT_LOADER_NAME, b"kvmgdb\0");
    let fields: [(u64, u32); 8] = [
        (0, MBI_MEMORY | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME),
        (4, 640),
        (8, layout::upper_memory_kib(map) as u32),
        (16, layout::MULTIBOOT_CMDLINE as u32),
        (44, (MMAP_ENTRY * map.len()) as u32),
        (48, layout::MULTIBOOT_MMAP as u32),
        (64, layout::MULTIBOOT_LOADER_NAME as u32),
        (12, 0xffff_ffff), // boot_device: none (flag not set; kept all-ones like GRUB)
    ];
    for (off, v) in fields {
        put(base + off, &v.to_le_bytes());
    }
    MemWrite::Bytes {
        gpa: base,
        data: block,
    }
}
