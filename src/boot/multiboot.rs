//! Multiboot v1 (the Multiboot Specification 0.6.96): the header search, loading an ELF32,
//! ELF64-with-header or a.out-kludge image, the modules, the information block, and the
//! 32-bit protected-mode entry with EAX = 0x2BADB002 and EBX = the information block.
//! Multiboot2 (`multiboot2.rs`) loads its images and modules with the same code.

use super::elf::{ElfInfo, physical_entry, rd32};
use super::entry::{self, CpuMode};
use super::layout::{self, MemoryRange};
use super::{BootFormat, BootInfo, BootPlan, BootRequest, LoadError, MemWrite, Module, RamMap};
use crate::x86::PAGE_SIZE;

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
    flags: u32,
    addresses: KludgeAddresses,
}

/// Where an image that is loaded as a flat file goes: the a.out kludge fields of a
/// Multiboot v1 header (spec 3.1.3), or a Multiboot2 address and entry address tag.
#[derive(Clone, Copy, Debug)]
pub(super) struct KludgeAddresses {
    /// File offset of the header that holds them.
    pub(super) offset: usize,
    /// Where that header lands in memory.
    pub(super) header_addr: u32,
    /// Where the loaded part of the file starts in memory.
    pub(super) load_addr: u32,
    /// One past the loaded part's end; 0: to the end of the file.
    pub(super) load_end_addr: u32,
    /// One past the bss; 0: no bss.
    pub(super) bss_end_addr: u32,
    /// The entry point.
    pub(super) entry_addr: u32,
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
            flags,
            addresses: KludgeAddresses {
                offset: off,
                header_addr: field(0),
                load_addr: field(1),
                load_end_addr: field(2),
                bss_end_addr: field(3),
                entry_addr: field(4),
            },
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
/// ELF program headers say, the modules after it, the information block, and the
/// protected-mode entry.
pub(super) fn plan(
    req: &BootRequest,
    mb: MultibootHeader,
    elf: Option<&ElfInfo>,
    ram: &RamMap,
) -> Result<BootPlan, LoadError> {
    let image = req.image;
    if mb.flags & 0xfffc != 0 {
        log::warn!(
            "Multiboot header asks for features kvmgdb does not provide (flags {:#x}); continuing",
            mb.flags
        );
    }
    let format = BootFormat::Multiboot;
    let (mut writes, info) = if mb.flags & MULTIBOOT_AOUT_KLUDGE != 0 {
        load_aout_kludge(image, &mb.addresses, elf, ram, format)?
    } else {
        let elf = elf.ok_or(LoadError::BadMultiboot(
            "not ELF, and the a.out kludge flag (bit 16) is not set",
        ))?;
        load_elf(image, elf, ram, format)?
    };
    let (module_writes, modules) = load_modules(req.modules, info.kernel_end, ram)?;
    writes.extend(module_writes);
    let memory_map = ram.memory_map();
    let (block, strings) = info_block(&kernel_cmdline(req), &memory_map, &modules)?;
    writes.push(block);
    writes.push(strings);
    Ok(protected_mode_plan(
        writes,
        memory_map,
        info,
        MULTIBOOT_BOOTLOADER_MAGIC,
        layout::MULTIBOOT_INFO,
    ))
}

/// The plan of a kernel entered in 32-bit protected mode with paging off, as both Multiboot
/// versions are: `writes` and the GDT, the boot vCPU at the entry point with EAX = `magic`
/// and EBX = `info_addr`.
pub(super) fn protected_mode_plan(
    mut writes: Vec<MemWrite>,
    memory_map: Vec<MemoryRange>,
    info: BootInfo,
    magic: u32,
    info_addr: u64,
) -> BootPlan {
    writes.push(entry::gdt(CpuMode::Protected));
    let mut bsp = entry::entry_state(CpuMode::Protected, info.entry);
    bsp.regs.rax = magic.into();
    bsp.regs.rbx = info_addr;
    BootPlan {
        writes,
        vcpus: vec![bsp],
        memory_map,
        info,
    }
}

/// Multiboot spec 3.1.3 (and the Multiboot2 address tag, 3.1.5): the header's address
/// fields describe a flat image.
pub(super) fn load_aout_kludge(
    image: &[u8],
    mb: &KludgeAddresses,
    elf: Option<&ElfInfo>,
    ram: &RamMap,
    format: BootFormat,
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
        format,
        entry: mb.entry_addr.into(),
        image_is_32bit: elf.is_none_or(|e| !e.is_64),
        kernel_end: end,
    };
    Ok((writes, info))
}

/// An ELF32 or ELF64 image with a Multiboot or Multiboot2 header: its PT_LOAD segments at
/// `p_paddr`.
pub(super) fn load_elf(
    image: &[u8],
    elf: &ElfInfo,
    ram: &RamMap,
    format: BootFormat,
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
        format,
        entry,
        image_is_32bit: !elf.is_64,
        kernel_end,
    };
    Ok((writes, info))
}

/// The command line a Multiboot kernel gets: the image's name, then its arguments, as boot
/// loaders pass it (GRUB and QEMU do; Xen reads its options after the name).
pub(super) fn kernel_cmdline(req: &BootRequest) -> String {
    match (req.image_name.is_empty(), req.cmdline.is_empty()) {
        (_, true) => req.image_name.to_string(),
        (true, false) => req.cmdline.to_string(),
        (false, false) => format!("{} {}", req.image_name, req.cmdline),
    }
}

/// A module as loaded: where it lies, and its command line.
#[derive(Clone, Debug)]
pub(super) struct LoadedModule<'a> {
    /// First guest-physical byte.
    pub(super) start: u64,
    /// One past the last byte.
    pub(super) end: u64,
    /// The module's string: its path and arguments, as the user gave them.
    pub(super) cmdline: &'a str,
}

/// Loads `modules` one after the other from the first page after `kernel_end`, each page
/// aligned (Multiboot spec 3.1.2, flag 0; Multiboot2's module alignment tag), all below
/// 4 GiB as the 32-bit information structures need.
pub(super) fn load_modules<'a>(
    modules: &'a [Module],
    kernel_end: u64,
    ram: &RamMap,
) -> Result<(Vec<MemWrite>, Vec<LoadedModule<'a>>), LoadError> {
    let mut writes = Vec::new();
    let mut loaded = Vec::new();
    let mut at = kernel_end.next_multiple_of(PAGE_SIZE);
    for m in modules {
        let end = at + m.data.len() as u64;
        if end > 1 << 32 || ram.check_range(at, end).is_err() {
            return Err(LoadError::BootDataDoesNotFit {
                what: "a Multiboot module",
                start: at,
                end,
                ram: ram.size >> 20,
            });
        }
        writes.push(MemWrite::Bytes {
            gpa: at,
            data: m.data.clone(),
        });
        loaded.push(LoadedModule {
            start: at,
            end,
            cmdline: &m.cmdline,
        });
        at = end.next_multiple_of(PAGE_SIZE);
    }
    Ok((writes, loaded))
}

/// Multiboot information flags (Multiboot spec 3.3).
const MBI_MEMORY: u32 = 1 << 0;
const MBI_CMDLINE: u32 = 1 << 2;
const MBI_MODS: u32 = 1 << 3;
const MBI_MMAP: u32 = 1 << 6;
const MBI_LOADER_NAME: u32 = 1 << 9;
/// Bytes of `[MULTIBOOT_INFO, +INFO_AREA)`: the information structure, the memory map and
/// the boot-loader name all lie inside.
pub(super) const INFO_AREA: usize = 0x800;
/// Bytes per memory-map entry: the `size` field (20, not counting itself) and 20 more.
const MMAP_ENTRY: usize = 24;
/// Bytes per module-list entry: mod_start, mod_end, string, reserved (spec 3.3).
const MODULE_ENTRY: usize = 16;

/// The strings area at [`layout::BOOT_INFO`]: the module list, the modules' strings, then
/// the kernel command line, whole (a boot loader has no reason to cut it; the kernel keeps
/// what it takes). Returns it with the command line's address.
fn strings_area(cmdline: &str, modules: &[LoadedModule]) -> Result<(MemWrite, u64), LoadError> {
    let mut list = vec![0u8; MODULE_ENTRY * modules.len()];
    let mut strings = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let string = layout::BOOT_INFO + (list.len() + strings.len()) as u64;
        let e = &mut list[MODULE_ENTRY * i..MODULE_ENTRY * (i + 1)];
        // Modules lie below 4 GiB (load_modules), and so does the string area.
        e[0..4].copy_from_slice(&(m.start as u32).to_le_bytes());
        e[4..8].copy_from_slice(&(m.end as u32).to_le_bytes());
        e[8..12].copy_from_slice(&(string as u32).to_le_bytes());
        strings.extend_from_slice(m.cmdline.as_bytes());
        strings.push(0);
    }
    list.extend_from_slice(&strings);
    let cmdline_at = layout::BOOT_INFO + list.len() as u64;
    list.extend_from_slice(cmdline.as_bytes());
    list.push(0);
    layout::check_boot_info(
        "the Multiboot command line, module list and strings",
        list.len(),
    )?;
    let area = MemWrite::Bytes {
        gpa: layout::BOOT_INFO,
        data: list,
    };
    Ok((area, cmdline_at))
}

/// The information block at [`layout::MULTIBOOT_INFO`]: one blob with the structure, the
/// memory map `map` and the boot-loader name, everything else zero; and the strings area
/// with the module list and the command line.
fn info_block(
    cmdline: &str,
    map: &[MemoryRange],
    modules: &[LoadedModule],
) -> Result<(MemWrite, MemWrite), LoadError> {
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
    put(layout::MULTIBOOT_LOADER_NAME, b"kvmgdb\0");
    let (strings, cmdline_at) = strings_area(cmdline, modules)?;
    let (mods, mods_addr) = match modules.is_empty() {
        true => (0, 0),
        false => (MBI_MODS, layout::BOOT_INFO as u32),
    };
    let fields: [(u64, u32); 10] = [
        (
            0,
            MBI_MEMORY | MBI_CMDLINE | mods | MBI_MMAP | MBI_LOADER_NAME,
        ),
        (4, 640),
        (8, layout::upper_memory_kib(map) as u32),
        (16, cmdline_at as u32),
        (20, modules.len() as u32),
        (24, mods_addr),
        (44, (MMAP_ENTRY * map.len()) as u32),
        (48, layout::MULTIBOOT_MMAP as u32),
        (64, layout::MULTIBOOT_LOADER_NAME as u32),
        (12, 0xffff_ffff), // boot_device: none (flag not set; kept all-ones like GRUB)
    ];
    for (off, v) in fields {
        put(base + off, &v.to_le_bytes());
    }
    let block = MemWrite::Bytes {
        gpa: base,
        data: block,
    };
    Ok((block, strings))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::plan;
    use super::super::tests::{aout_kludge, blob_at, u32_at};
    use super::*;

    /// The NUL-terminated string at the start of `b`.
    pub(in crate::boot) fn c_str(b: &[u8]) -> &str {
        std::str::from_utf8(&b[..b.iter().position(|&c| c == 0).expect("NUL")]).unwrap()
    }

    /// Modules land page aligned after the kernel's bss, listed with their strings; the
    /// command line starts with the image name.
    #[test]
    fn modules_and_command_line() {
        let img = aout_kludge();
        let modules = [
            Module {
                cmdline: "/boot/xen-initrd dom0".into(),
                data: vec![7; 4097],
            },
            Module {
                cmdline: "second".into(),
                data: b"2nd".to_vec(),
            },
        ];
        let req = BootRequest {
            image_name: "xen.gz",
            cmdline: "console=com1",
            modules: &modules,
            ..BootRequest::new(&img, 16 << 20)
        };
        let p = plan(&req).unwrap();
        let mbi = blob_at(&p, layout::MULTIBOOT_INFO);
        assert_eq!(
            u32_at(mbi, 0),
            1 | 4 | 8 | 64 | 512,
            "mem, cmdline, mods, mmap, name"
        );
        let list = blob_at(&p, layout::BOOT_INFO);
        let cmd = (u64::from(u32_at(mbi, 16)) - layout::BOOT_INFO) as usize;
        assert_eq!(c_str(&list[cmd..]), "xen.gz console=com1");
        assert_eq!(u32_at(mbi, 20), 2, "mods_count");
        assert_eq!(u64::from(u32_at(mbi, 24)), layout::BOOT_INFO, "mods_addr");
        // The kernel's bss ends at 1 MiB + 8 KiB.
        let want = [
            (0x10_2000, 0x10_2000 + 4097, "/boot/xen-initrd dom0"),
            (0x10_4000, 0x10_4003, "second"),
        ];
        for (i, (start, end, string)) in want.into_iter().enumerate() {
            let e = &list[16 * i..16 * (i + 1)];
            assert_eq!((u32_at(e, 0), u32_at(e, 4), u32_at(e, 12)), (start, end, 0));
            let at = (u64::from(u32_at(e, 8)) - layout::BOOT_INFO) as usize;
            assert_eq!(c_str(&list[at..]), string);
            assert_eq!(blob_at(&p, start.into()), &modules[i].data[..]);
        }
        // Without modules: no flag, no list; a name alone is the whole command line.
        let req = BootRequest {
            image_name: "k",
            ..BootRequest::new(&img, 16 << 20)
        };
        let p = plan(&req).unwrap();
        let mbi = blob_at(&p, layout::MULTIBOOT_INFO);
        assert_eq!(u32_at(mbi, 0) & 8, 0);
        assert_eq!((u32_at(mbi, 20), u32_at(mbi, 24)), (0, 0));
        assert_eq!(u64::from(u32_at(mbi, 16)), layout::BOOT_INFO);
        assert_eq!(c_str(blob_at(&p, layout::BOOT_INFO)), "k");
    }

    /// Modules that do not fit RAM, or whose strings overflow their area, are refused.
    #[test]
    fn modules_that_do_not_fit() {
        let img = aout_kludge();
        let big = [Module {
            cmdline: "big".into(),
            data: vec![0; 15 << 20],
        }];
        let req = BootRequest {
            modules: &big,
            ..BootRequest::new(&img, 16 << 20)
        };
        assert!(matches!(
            plan(&req),
            Err(LoadError::BootDataDoesNotFit {
                start: 0x10_2000,
                ..
            })
        ));
        let long = [Module {
            cmdline: "x".repeat(0x6_0000),
            data: vec![1],
        }];
        let req = BootRequest {
            modules: &long,
            ..BootRequest::new(&img, 16 << 20)
        };
        assert!(matches!(
            plan(&req),
            Err(LoadError::BootInfoTooLarge { .. })
        ));
    }

    /// A kernel loaded over the ACPI tables' area is refused.
    #[test]
    fn kernel_over_the_firmware_area() {
        let mut img = aout_kludge();
        // header_addr, load_addr, bss_end_addr and entry moved to 0xe0000.
        for (off, v) in [
            (0x1c, 0xe_0010u32),
            (0x20, 0xe_0000),
            (0x28, 0),
            (0x2c, 0xe_0040),
        ] {
            img[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        let sum = 0u32
            .wrapping_sub(MULTIBOOT_HEADER_MAGIC)
            .wrapping_sub(u32_at(&img, 0x14));
        img[0x18..0x1c].copy_from_slice(&sum.to_le_bytes());
        let err = plan(&BootRequest::new(&img, 16 << 20)).unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::OverlapsFirmware {
                    area_start: 0xe_0000,
                    area_end: 0xf_0000,
                    ..
                }
            ),
            "{err}"
        );
    }
}
