//! Multiboot2 (the Multiboot2 Specification 2.0): the header search, the header tags
//! (honoured, or refused with a message naming the tag), loading the image as an ELF or
//! through the address tag (with the Multiboot v1 loaders of `multiboot.rs`), the modules,
//! the boot information structure, and the 32-bit protected-mode entry with
//! EAX = 0x36D76289 and EBX = the information structure.

use super::acpi::AcpiTables;
use super::elf::{ElfInfo, check_entry, loaded_ranges, rd32};
use super::layout::{self, MemoryKind, MemoryRange};
use super::multiboot::{self, KludgeAddresses, LoadedModule};
use super::{BootFormat, BootPlan, BootRequest, LoadError, MemWrite, RamMap};

/// Multiboot2 header magic (spec 3.1.1).
const MULTIBOOT2_HEADER_MAGIC: u32 = 0xE852_50D6;
/// The magic the boot loader leaves in EAX (spec 3.3).
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36D7_6289;
/// The header must lie within the first 32 KiB of the image, 64-bit aligned (spec 3.1.1).
pub(super) const MULTIBOOT2_SEARCH: usize = 32768;
/// The header's `architecture` for 32-bit protected-mode i386 (spec 3.1.2).
const ARCH_I386: u32 = 0;
/// The header's fixed fields: magic, architecture, header_length, checksum.
const HEADER_FIXED: usize = 16;
/// Header tag flag bit 0: the boot loader may ignore the tag (spec 3.1.3).
const TAG_OPTIONAL: u16 = 1;

/// Header tag types (spec 3.1.3 to 3.1.13).
const HTAG_END: u16 = 0;
const HTAG_INFO_REQUEST: u16 = 1;
const HTAG_ADDRESS: u16 = 2;
const HTAG_ENTRY: u16 = 3;
const HTAG_CONSOLE_FLAGS: u16 = 4;
const HTAG_FRAMEBUFFER: u16 = 5;
const HTAG_MODULE_ALIGN: u16 = 6;
const HTAG_EFI_BS: u16 = 7;
const HTAG_EFI_I386_ENTRY: u16 = 8;
const HTAG_EFI_AMD64_ENTRY: u16 = 9;
const HTAG_RELOCATABLE: u16 = 10;
/// Console flags bit 0: a console described in the boot information is required.
const CONSOLE_REQUIRED: u32 = 1;

/// Boot information tag types (spec 3.6).
const ITAG_END: u32 = 0;
const ITAG_CMDLINE: u32 = 1;
const ITAG_LOADER_NAME: u32 = 2;
const ITAG_MODULE: u32 = 3;
const ITAG_BASIC_MEMINFO: u32 = 4;
const ITAG_MMAP: u32 = 6;
const ITAG_ACPI_OLD: u32 = 14;
const ITAG_ACPI_NEW: u32 = 15;
const ITAG_LOAD_BASE_ADDR: u32 = 21;
/// Bytes per memory map entry: base_addr, length, type, reserved (spec 3.6.8).
const MMAP_ENTRY: u32 = 24;

/// The boot loader name in the boot information.
const LOADER_NAME: &str = "kvmgdb";

/// A Multiboot2 header with a valid checksum.
#[derive(Clone, Copy, Debug)]
pub(super) struct Multiboot2Header {
    offset: usize,
    architecture: u32,
    header_length: u32,
}

/// The offsets, 8-byte aligned within the search area, where the Multiboot2 magic is.
fn magic_offsets(image: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let limit = image.len().min(MULTIBOOT2_SEARCH);
    (0..limit.saturating_sub(HEADER_FIXED - 1))
        .step_by(8)
        .filter(move |&off| rd32(image, off) == Some(MULTIBOOT2_HEADER_MAGIC))
}

/// Finds a Multiboot2 header with a valid checksum (spec 3.1.1 and 3.1.2).
pub(super) fn find_header(image: &[u8]) -> Option<Multiboot2Header> {
    magic_offsets(image).find_map(|off| {
        let architecture = rd32(image, off + 4)?;
        let header_length = rd32(image, off + 8)?;
        let sum = rd32(image, off + 12)?;
        let total = MULTIBOOT2_HEADER_MAGIC
            .wrapping_add(architecture)
            .wrapping_add(header_length)
            .wrapping_add(sum);
        (total == 0).then_some(Multiboot2Header {
            offset: off,
            architecture,
            header_length,
        })
    })
}

/// The offset of a Multiboot2 magic in the search area whose checksum is wrong, if any.
pub(super) fn find_bad_checksum(image: &[u8]) -> Option<usize> {
    magic_offsets(image).next()
}

/// A human name for boot information tag `t`, for messages.
fn info_tag_name(t: u32) -> &'static str {
    match t {
        1 => "boot command line",
        2 => "boot loader name",
        3 => "modules",
        4 => "basic memory information",
        5 => "BIOS boot device",
        6 => "memory map",
        7 => "VBE info",
        8 => "framebuffer info",
        9 => "ELF symbols",
        10 => "APM table",
        11 => "EFI 32-bit system table pointer",
        12 => "EFI 64-bit system table pointer",
        13 => "SMBIOS tables",
        14 => "ACPI old RSDP",
        15 => "ACPI new RSDP",
        16 => "networking information",
        17 => "EFI memory map",
        18 => "EFI boot services not terminated",
        19 => "EFI 32-bit image handle pointer",
        20 => "EFI 64-bit image handle pointer",
        21 => "image load base physical address",
        _ => "unknown",
    }
}

/// The relocatable header tag's fields (spec 3.1.13).
#[derive(Clone, Copy, Debug)]
struct Relocatable {
    min_addr: u32,
    max_addr: u32,
    align: u32,
    /// The tag's optional flag: a loader may ignore it.
    optional: bool,
}

/// What the header tags ask of the boot loader, once checked.
#[derive(Debug, Default)]
struct HeaderRequests {
    /// The address tag's fields, with the entry tag's entry point.
    address: Option<KludgeAddresses>,
    /// The entry address tag.
    entry: Option<u32>,
    /// The relocatable tag.
    relocatable: Option<Relocatable>,
    /// A required information request for the image load base address (tag 21).
    requires_load_base: bool,
}

/// Walks the header tags (spec 3.1.3 to 3.1.13): honours what kvmgdb can, ignores optional
/// tags it cannot, and refuses a required one with a message naming it.
fn read_tags(image: &[u8], h: &Multiboot2Header) -> Result<HeaderRequests, LoadError> {
    let refuse = |m: String| Err(LoadError::Multiboot2(m));
    let start = h.offset;
    let end = start
        .checked_add(h.header_length as usize)
        .filter(|&e| e <= image.len() && h.header_length as usize >= HEADER_FIXED + 8)
        .ok_or_else(|| {
            LoadError::Multiboot2(format!(
                "header_length {:#x} is shorter than the end tag or runs past the end of the file",
                h.header_length
            ))
        })?;
    let mut req = HeaderRequests::default();
    let mut at = start + HEADER_FIXED;
    loop {
        let Some(tag) = image.get(at..end).filter(|t| t.len() >= 8) else {
            return refuse(format!(
                "the header tags at file offset {at:#x} run past header_length without an end tag"
            ));
        };
        let kind = u16::from_le_bytes([tag[0], tag[1]]);
        let optional = u16::from_le_bytes([tag[2], tag[3]]) & TAG_OPTIONAL != 0;
        let size = rd32(tag, 4).unwrap_or(0) as usize;
        if size < 8 || size > tag.len() {
            return refuse(format!(
                "header tag type {kind} at file offset {at:#x} has size {size}, outside the header"
            ));
        }
        let tag = &tag[..size];
        let field = |i: usize| rd32(tag, 8 + 4 * i);
        let short = || {
            LoadError::Multiboot2(format!(
                "header tag type {kind} at file offset {at:#x} is too short ({size} bytes)"
            ))
        };
        match kind {
            HTAG_END => break,
            HTAG_INFO_REQUEST => {
                for t in (8..size).step_by(4).filter_map(|o| rd32(tag, o)) {
                    let can = matches!(
                        t,
                        ITAG_END
                            | ITAG_CMDLINE
                            | ITAG_LOADER_NAME
                            | ITAG_MODULE
                            | ITAG_BASIC_MEMINFO
                            | ITAG_MMAP
                            | ITAG_ACPI_OLD
                            | ITAG_ACPI_NEW
                    );
                    if t == ITAG_LOAD_BASE_ADDR {
                        req.requires_load_base |= !optional;
                    } else if !can && !optional {
                        return refuse(format!(
                            "the information request tag requires boot information tag {t} ({}), which kvmgdb cannot provide (mark the request optional to boot without it)",
                            info_tag_name(t)
                        ));
                    } else if !can {
                        log::info!(
                            "Multiboot2: the kernel asks for boot information tag {t} ({}), optional; not provided",
                            info_tag_name(t)
                        );
                    }
                }
            }
            HTAG_ADDRESS => {
                let f = |i| field(i).ok_or_else(short);
                req.address = Some(KludgeAddresses {
                    offset: h.offset,
                    header_addr: f(0)?,
                    load_addr: f(1)?,
                    load_end_addr: f(2)?,
                    bss_end_addr: f(3)?,
                    entry_addr: 0,
                });
            }
            HTAG_ENTRY => req.entry = Some(field(0).ok_or_else(short)?),
            HTAG_CONSOLE_FLAGS => {
                let flags = field(0).ok_or_else(short)?;
                if flags & CONSOLE_REQUIRED != 0 && !optional {
                    return refuse(
                        "the console flags tag requires a console described in the boot information (EGA text); kvmgdb has only the COM1 serial port".into(),
                    );
                }
            }
            HTAG_FRAMEBUFFER if !optional => {
                return refuse(
                    "the framebuffer tag is required, and kvmgdb has no framebuffer (mark it optional to boot on COM1)".into(),
                );
            }
            HTAG_MODULE_ALIGN => {} // Modules are always page aligned.
            HTAG_EFI_BS | HTAG_EFI_I386_ENTRY | HTAG_EFI_AMD64_ENTRY if !optional => {
                let name = match kind {
                    HTAG_EFI_BS => "EFI boot services",
                    HTAG_EFI_I386_ENTRY => "EFI i386 entry address",
                    _ => "EFI amd64 entry address",
                };
                return refuse(format!(
                    "the {name} tag is required, and kvmgdb boots without EFI firmware"
                ));
            }
            HTAG_RELOCATABLE => {
                let f = |i| field(i).ok_or_else(short);
                req.relocatable = Some(Relocatable {
                    min_addr: f(0)?,
                    max_addr: f(1)?,
                    align: f(2)?,
                    optional,
                });
            }
            HTAG_FRAMEBUFFER | HTAG_EFI_BS | HTAG_EFI_I386_ENTRY | HTAG_EFI_AMD64_ENTRY => {}
            _ if optional => {
                log::info!("Multiboot2: ignoring optional header tag type {kind}");
            }
            _ => {
                return refuse(format!(
                    "header tag type {kind} at file offset {at:#x} is required and unknown to kvmgdb"
                ));
            }
        }
        at += size.next_multiple_of(8);
    }
    Ok(req)
}

/// The plan for a Multiboot2 kernel: the image loaded as its ELF program headers or its
/// address tag say, the modules after it, the boot information at [`layout::BOOT_INFO`],
/// and the protected-mode entry.
pub(super) fn plan(
    req: &BootRequest,
    h: Multiboot2Header,
    elf: Option<&ElfInfo>,
    ram: &RamMap,
    acpi: &AcpiTables,
) -> Result<BootPlan, LoadError> {
    if h.architecture != ARCH_I386 {
        let what = if h.architecture == 4 {
            "MIPS32"
        } else {
            "unknown"
        };
        return Err(LoadError::Multiboot2(format!(
            "architecture {} ({what}) is not i386 (0), the only one kvmgdb boots",
            h.architecture
        )));
    }
    let tags = read_tags(req.image, &h)?;
    let format = BootFormat::Multiboot2;
    let (mut writes, mut info) = match (tags.address, elf) {
        (Some(mut addresses), elf) => {
            // load_addr -1: load from the file's start (spec 3.1.5).
            if addresses.load_addr == u32::MAX {
                addresses.load_addr = addresses.header_addr.wrapping_sub(h.offset as u32);
            }
            addresses.entry_addr = match (tags.entry, elf) {
                (Some(e), _) => e,
                (None, Some(elf)) => elf.entry as u32,
                (None, None) => {
                    return Err(LoadError::Multiboot2(
                        "the image is not ELF and has an address tag but no entry address tag"
                            .into(),
                    ));
                }
            };
            multiboot::load_aout_kludge(req.image, &addresses, elf, ram, format)?
        }
        (None, Some(elf)) => {
            let (writes, mut info) = multiboot::load_elf(req.image, elf, ram, format)?;
            if let Some(e) = tags.entry {
                check_entry(e.into(), &loaded_ranges(elf))?;
                info.entry = e.into();
            }
            (writes, info)
        }
        (None, None) => {
            return Err(LoadError::Multiboot2(
                "the image is not ELF and has no address tag saying where it loads".into(),
            ));
        }
    };
    let load_base = match tags.relocatable {
        Some(r) => check_relocatable(r, lowest_address(&writes), info.kernel_end)?,
        None => None,
    };
    if tags.requires_load_base && load_base.is_none() {
        return Err(LoadError::Multiboot2(
            "the information request tag requires the image load base address (21), which only a relocatable image gets".into(),
        ));
    }
    info.image_is_32bit = elf.is_none_or(|e| !e.is_64);
    let (module_writes, modules) = multiboot::load_modules(req.modules, info.kernel_end, ram)?;
    writes.extend(module_writes);
    let memory_map = ram.memory_map();
    let boot_info = boot_information(
        &multiboot::kernel_cmdline(req),
        &memory_map,
        &modules,
        acpi,
        load_base,
    );
    layout::check_boot_info("the Multiboot2 boot information", boot_info.len())?;
    writes.push(MemWrite::Bytes {
        gpa: layout::BOOT_INFO,
        data: boot_info,
    });
    Ok(multiboot::protected_mode_plan(
        writes,
        memory_map,
        info,
        MULTIBOOT2_BOOTLOADER_MAGIC,
        layout::BOOT_INFO,
    ))
}

/// The lowest address the kernel's writes start at: where the image is loaded.
fn lowest_address(writes: &[MemWrite]) -> u64 {
    writes
        .iter()
        .map(|w| match w {
            MemWrite::Bytes { gpa, .. } | MemWrite::Zero { gpa, .. } => *gpa,
        })
        .min()
        .unwrap_or(0)
}

/// A relocatable image (spec 3.1.13) is loaded where it is linked, which must be a place
/// the tag allows: kvmgdb does not relocate. Returns the load base address for the
/// information tag 21; `None` when an optional tag cannot be honoured and is ignored (the
/// image then boots, unrelocated, as one without the tag).
fn check_relocatable(r: Relocatable, base: u64, end: u64) -> Result<Option<u64>, LoadError> {
    let aligned = r.align == 0 || base % u64::from(r.align) == 0;
    if base >= r.min_addr.into() && end <= u64::from(r.max_addr) && aligned {
        return Ok(Some(base));
    }
    let why = format!(
        "the relocatable tag allows {:#x}..{:#x} aligned to {:#x}, and the image is linked at {base:#x}..{end:#x}; kvmgdb loads images where they are linked and does not relocate them",
        r.min_addr, r.max_addr, r.align
    );
    if r.optional {
        log::info!("Multiboot2: ignoring the optional relocatable tag: {why}");
        return Ok(None);
    }
    Err(LoadError::Multiboot2(why))
}

/// Appends boot information tag `kind` with `payload`, padded to 8 bytes (spec 3.4).
fn push_tag(info: &mut Vec<u8>, kind: u32, payload: &[u8]) {
    info.extend_from_slice(&kind.to_le_bytes());
    info.extend_from_slice(&(8 + payload.len() as u32).to_le_bytes());
    info.extend_from_slice(payload);
    info.resize(info.len().next_multiple_of(8), 0);
}

/// A NUL-terminated string's bytes.
fn c_string(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// The boot information structure (spec 3.4 to 3.6), to lie at [`layout::BOOT_INFO`]:
/// total_size and reserved, then the command line, boot loader name, modules, basic memory
/// information, memory map, both RSDP copies, the load base address of a relocatable image,
/// and the end tag.
fn boot_information(
    cmdline: &str,
    map: &[MemoryRange],
    modules: &[LoadedModule],
    acpi: &AcpiTables,
    load_base: Option<u64>,
) -> Vec<u8> {
    let mut info = vec![0u8; 8];
    push_tag(&mut info, ITAG_CMDLINE, &c_string(cmdline));
    push_tag(&mut info, ITAG_LOADER_NAME, &c_string(LOADER_NAME));
    for m in modules {
        // Modules lie below 4 GiB (load_modules).
        let mut p = (m.start as u32).to_le_bytes().to_vec();
        p.extend_from_slice(&(m.end as u32).to_le_bytes());
        p.extend_from_slice(&c_string(m.cmdline));
        push_tag(&mut info, ITAG_MODULE, &p);
    }
    let lower = map
        .iter()
        .find(|r| r.addr == 0 && r.kind == MemoryKind::Ram)
        .map_or(0, |r| r.size >> 10) as u32;
    let upper = layout::upper_memory_kib(map) as u32;
    let mut meminfo = lower.to_le_bytes().to_vec();
    meminfo.extend_from_slice(&upper.to_le_bytes());
    push_tag(&mut info, ITAG_BASIC_MEMINFO, &meminfo);
    let mut mmap = MMAP_ENTRY.to_le_bytes().to_vec();
    mmap.extend_from_slice(&0u32.to_le_bytes()); // entry_version
    for r in map {
        mmap.extend_from_slice(&r.addr.to_le_bytes());
        mmap.extend_from_slice(&r.size.to_le_bytes());
        mmap.extend_from_slice(&(r.kind as u32).to_le_bytes());
        mmap.extend_from_slice(&0u32.to_le_bytes());
    }
    push_tag(&mut info, ITAG_MMAP, &mmap);
    push_tag(&mut info, ITAG_ACPI_OLD, &acpi.rsdp_v1());
    push_tag(&mut info, ITAG_ACPI_NEW, acpi.rsdp());
    if let Some(base) = load_base {
        // A relocatable image lies below 4 GiB (its tag's addresses are 32-bit).
        push_tag(&mut info, ITAG_LOAD_BASE_ADDR, &(base as u32).to_le_bytes());
    }
    push_tag(&mut info, ITAG_END, &[]);
    let total = info.len() as u32;
    info[..4].copy_from_slice(&total.to_le_bytes());
    info
}

#[cfg(test)]
pub(in crate::boot) mod tests {
    use super::super::multiboot::tests::c_str;
    use super::super::tests::{aout_kludge, blob_at, u32_at, u64_at};
    use super::super::{Module, check_prefix, plan};
    use super::*;
    use crate::platform::ACPI_RSDP;

    /// Where the test images' header lies in the file, and the file in memory.
    const HDR_AT: usize = 0x40;
    const LOAD: u32 = 0x10_0000;
    const ENTRY: u32 = LOAD + 0x100;

    /// A header tag: type, flags, payload.
    pub(in crate::boot) type Tag = (u16, u16, Vec<u8>);

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The address tag (the whole file at 1 MiB, bss to 1 MiB + 8 KiB) and the entry tag.
    pub(in crate::boot) fn flat() -> Vec<Tag> {
        vec![
            (
                HTAG_ADDRESS,
                0,
                words(&[LOAD + HDR_AT as u32, LOAD, 0, LOAD + 0x2000]),
            ),
            (HTAG_ENTRY, 0, words(&[ENTRY])),
        ]
    }

    /// A 4 KiB image of NOPs with a Multiboot2 header for `arch` holding `tags` and the end
    /// tag at [`HDR_AT`].
    fn image_arch(arch: u32, tags: &[Tag]) -> Vec<u8> {
        let mut h = Vec::new();
        for (kind, flags, payload) in tags.iter().chain([&(HTAG_END, 0, vec![])]) {
            h.extend_from_slice(&kind.to_le_bytes());
            h.extend_from_slice(&flags.to_le_bytes());
            h.extend_from_slice(&(8 + payload.len() as u32).to_le_bytes());
            h.extend_from_slice(payload);
            h.resize(h.len().next_multiple_of(8), 0);
        }
        let len = (HEADER_FIXED + h.len()) as u32;
        let sum = 0u32
            .wrapping_sub(MULTIBOOT2_HEADER_MAGIC)
            .wrapping_sub(arch)
            .wrapping_sub(len);
        let mut img = vec![0x90u8; 0x1000];
        let fixed = words(&[MULTIBOOT2_HEADER_MAGIC, arch, len, sum]);
        img[HDR_AT..HDR_AT + 16].copy_from_slice(&fixed);
        img[HDR_AT + 16..HDR_AT + 16 + h.len()].copy_from_slice(&h);
        img
    }

    pub(in crate::boot) fn image(tags: &[Tag]) -> Vec<u8> {
        image_arch(ARCH_I386, tags)
    }

    fn boot(img: &[u8]) -> Result<BootPlan, LoadError> {
        plan(&BootRequest::new(img, 16 << 20))
    }

    /// The refusal message of `img`.
    fn refusal(img: &[u8]) -> String {
        match boot(img) {
            Err(LoadError::Multiboot2(m)) => m,
            other => panic!("expected a Multiboot2 refusal, got {other:?}"),
        }
    }

    /// The boot information's tags: (type, payload), checking sizes and alignment.
    fn info_tags(info: &[u8]) -> Vec<(u32, Vec<u8>)> {
        assert_eq!(u32_at(info, 0) as usize, info.len(), "total_size");
        let mut tags = Vec::new();
        let mut at = 8;
        loop {
            assert_eq!(at % 8, 0, "tag alignment");
            let (kind, size) = (u32_at(info, at), u32_at(info, at + 4) as usize);
            tags.push((kind, info[at + 8..at + size].to_vec()));
            at += size.next_multiple_of(8);
            if kind == ITAG_END {
                assert_eq!(
                    (size, at),
                    (8, info.len()),
                    "the end tag closes the structure"
                );
                return tags;
            }
        }
    }

    /// An a.out-style image with modules: the entry state, where everything lands, and
    /// every boot information tag.
    #[test]
    fn flat_image_with_modules() {
        let mut tags = flat();
        let wanted = [1, 2, 3, 4, 6, 14, 15];
        tags.push((HTAG_INFO_REQUEST, 0, words(&wanted)));
        tags.push((HTAG_MODULE_ALIGN, 0, vec![]));
        tags.push((HTAG_FRAMEBUFFER, TAG_OPTIONAL, words(&[1024, 768, 32])));
        tags.push((HTAG_CONSOLE_FLAGS, 0, words(&[2])));
        let img = image(&tags);
        let modules = [
            Module {
                cmdline: "initrd.img root=/dev/ram".into(),
                data: vec![0xab; 5000],
            },
            Module {
                cmdline: "m2".into(),
                data: b"MOD2".to_vec(),
            },
        ];
        let req = BootRequest {
            image_name: "/boot/kernel",
            cmdline: "console=ttyS0",
            modules: &modules,
            vcpus: 2,
            ..BootRequest::new(&img, 16 << 20)
        };
        let plan = plan(&req).unwrap();
        assert_eq!(plan.info.format, BootFormat::Multiboot2);
        assert_eq!(plan.info.entry, u64::from(ENTRY));
        assert!(plan.info.image_is_32bit);
        let bsp = plan.bsp();
        assert_eq!(bsp.regs.rax, 0x36d7_6289);
        assert_eq!(bsp.regs.rbx, layout::BOOT_INFO);
        assert_eq!(bsp.regs.rip, u64::from(ENTRY));
        assert_eq!(
            (bsp.sregs.cs.db, bsp.sregs.cr0),
            (1, 0x11),
            "32-bit, paging off"
        );
        assert_eq!(blob_at(&plan, LOAD.into()), &img[..]);
        assert!(plan.writes.contains(&MemWrite::Zero {
            gpa: 0x10_1000,
            len: 0x1000
        }));
        // Modules: page aligned from the end of the bss.
        assert_eq!(blob_at(&plan, 0x10_2000), &modules[0].data[..]);
        assert_eq!(blob_at(&plan, 0x10_4000), b"MOD2");

        let tags = info_tags(blob_at(&plan, layout::BOOT_INFO));
        let kinds: Vec<u32> = tags.iter().map(|t| t.0).collect();
        assert_eq!(kinds, [1, 2, 3, 3, 4, 6, 14, 15, 0]);
        assert_eq!(c_str(&tags[0].1), "/boot/kernel console=ttyS0");
        assert_eq!(c_str(&tags[1].1), "kvmgdb");
        for (t, (start, end, name)) in tags[2..4].iter().zip([
            (0x10_2000, 0x10_2000 + 5000, "initrd.img root=/dev/ram"),
            (0x10_4000, 0x10_4004, "m2"),
        ]) {
            assert_eq!((u32_at(&t.1, 0), u32_at(&t.1, 4)), (start, end));
            assert_eq!(c_str(&t.1[8..]), name);
        }
        assert_eq!(
            (u32_at(&tags[4].1, 0), u32_at(&tags[4].1, 4)),
            (639, 15 << 10)
        );
        let mmap = &tags[5].1;
        assert_eq!(
            (u32_at(mmap, 0), u32_at(mmap, 4)),
            (24, 0),
            "entry size, version"
        );
        assert_eq!(mmap.len(), 8 + 24 * plan.memory_map.len());
        for (i, r) in plan.memory_map.iter().enumerate() {
            let e = 8 + 24 * i;
            assert_eq!(u64_at(mmap, e), r.addr);
            assert_eq!(u64_at(mmap, e + 8), r.size);
            assert_eq!(u32_at(mmap, e + 16), r.kind as u32);
        }
        // The RSDP copies match the tables the plan writes at ACPI_RSDP.
        let rsdp = &blob_at(&plan, ACPI_RSDP)[..36];
        assert_eq!(tags[7].1, rsdp, "new RSDP");
        let old = &tags[6].1;
        assert_eq!((old.len(), old[15]), (20, 0), "old RSDP: ACPI 1.0");
        assert_eq!(old.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        assert_eq!(old[16..20], rsdp[16..20], "the RSDT address");
    }

    /// The header is found 8-byte aligned in the first 32 KiB, before a Multiboot v1 header.
    #[test]
    fn header_search() {
        let img = image(&flat());
        let mut far = vec![0u8; 0x6000];
        far.extend_from_slice(&img);
        assert!(check_prefix(&far).is_ok());
        assert_eq!(blob_at(&boot(&far).unwrap(), LOAD.into()), &img[..]);
        let mut too_far = vec![0u8; MULTIBOOT2_SEARCH];
        too_far.extend_from_slice(&img);
        assert!(find_header(&too_far).is_none());
        let mut misaligned = vec![0u8; 4];
        misaligned.extend_from_slice(&img);
        assert!(find_header(&misaligned).is_none());
        // A Multiboot v1 image that also carries a Multiboot2 header boots as Multiboot2.
        let mut both = aout_kludge();
        both[0x800..0x840].copy_from_slice(&img[HDR_AT..HDR_AT + 0x40]);
        let p = boot(&both).unwrap();
        assert_eq!(p.info.format, BootFormat::Multiboot2);
        // A bad checksum is reported as such.
        let mut bad = image(&flat());
        bad[HDR_AT + 12] ^= 1;
        assert!(matches!(
            boot(&bad),
            Err(LoadError::BadMultiboot2Checksum(HDR_AT))
        ));
        assert!(matches!(
            check_prefix(&bad),
            Err(LoadError::BadMultiboot2Checksum(HDR_AT))
        ));
    }

    /// Each refusal names what is refused.
    #[test]
    fn refusals_name_the_tag() {
        let with = |extra: Tag| {
            let mut t = flat();
            t.push(extra);
            image(&t)
        };
        let m = refusal(&image_arch(4, &flat()));
        assert!(m.contains("architecture 4 (MIPS32)"), "{m}");
        let m = refusal(&with((HTAG_INFO_REQUEST, 0, words(&[1, 8]))));
        assert!(m.contains("tag 8 (framebuffer info)"), "{m}");
        boot(&with((HTAG_INFO_REQUEST, TAG_OPTIONAL, words(&[8, 9])))).unwrap();
        let m = refusal(&with((HTAG_FRAMEBUFFER, 0, words(&[0, 0, 32]))));
        assert!(m.contains("framebuffer tag is required"), "{m}");
        let m = refusal(&with((HTAG_EFI_BS, 0, vec![])));
        assert!(m.contains("EFI boot services tag"), "{m}");
        boot(&with((HTAG_EFI_AMD64_ENTRY, TAG_OPTIONAL, words(&[ENTRY])))).unwrap();
        let m = refusal(&with((HTAG_EFI_I386_ENTRY, 0, words(&[ENTRY]))));
        assert!(m.contains("EFI i386 entry address tag"), "{m}");
        let m = refusal(&with((HTAG_CONSOLE_FLAGS, 0, words(&[1]))));
        assert!(m.contains("console flags tag"), "{m}");
        boot(&with((HTAG_CONSOLE_FLAGS, TAG_OPTIONAL, words(&[1])))).unwrap();
        let m = refusal(&with((42, 0, vec![])));
        assert!(m.contains("header tag type 42"), "{m}");
        boot(&with((42, TAG_OPTIONAL, vec![]))).unwrap();
        let m = refusal(&with((HTAG_ENTRY, 0, vec![])));
        assert!(m.contains("too short"), "{m}");
        let m = refusal(&image(&[]));
        assert!(m.contains("no address tag"), "{m}");
        let m = refusal(&image(&flat()[..1]));
        assert!(m.contains("no entry address tag"), "{m}");
        let m = refusal(&with((HTAG_INFO_REQUEST, 0, words(&[21]))));
        assert!(m.contains("load base address (21)"), "{m}");
        // header_length running past the file, and tags with no end tag.
        let mut img = image(&flat());
        img.truncate(HDR_AT + 24);
        assert!(refusal(&img).contains("header_length"));
        let mut img = image(&flat());
        let tag_len = 8 + 16 + 8 + 4 + 4; // up to the end tag
        img[HDR_AT + 16 + tag_len..HDR_AT + 16 + tag_len + 8].fill(0xee);
        assert!(refusal(&img).contains("size"), "{}", refusal(&img));
    }

    /// A relocatable image loads where it is linked, if the tag allows it, and is told
    /// where (tag 21); otherwise it is refused.
    #[test]
    fn relocatable() {
        let reloc = |min: u32, max: u32, align: u32| {
            let mut t = flat();
            t.push((HTAG_RELOCATABLE, 0, words(&[min, max, align, 0])));
            image(&t)
        };
        let p = boot(&reloc(0x10_0000, 0x1000_0000, 0x1000)).unwrap();
        let tags = info_tags(blob_at(&p, layout::BOOT_INFO));
        let base = tags.iter().find(|t| t.0 == ITAG_LOAD_BASE_ADDR).unwrap();
        assert_eq!(u32_at(&base.1, 0), LOAD);
        let m = refusal(&reloc(0x20_0000, 0x1000_0000, 0x1000));
        assert!(m.contains("does not relocate"), "{m}");
        assert!(refusal(&reloc(0, 0x10_1000, 0x1000)).contains("relocatable tag"));
        assert!(refusal(&reloc(0, 0x1000_0000, 0x20_0000)).contains("relocatable tag"));
        // An optional tag that cannot be honoured is ignored: no load base address.
        let mut t = flat();
        t.push((
            HTAG_RELOCATABLE,
            TAG_OPTIONAL,
            words(&[0x20_0000, u32::MAX, 0x1000, 0]),
        ));
        let p = boot(&image(&t)).unwrap();
        let tags = info_tags(blob_at(&p, layout::BOOT_INFO));
        assert!(tags.iter().all(|t| t.0 != ITAG_LOAD_BASE_ADDR));
    }

    /// Hostile headers: random bytes over a valid header's fields and tags (a seeded
    /// xorshift, so a failure replays) give a plan or an error, never a panic.
    #[test]
    fn mutated_headers_never_panic() {
        let mut tags = flat();
        tags.push((HTAG_INFO_REQUEST, 0, words(&[1, 2, 3, 4, 6, 14, 15, 21])));
        tags.push((HTAG_RELOCATABLE, 0, words(&[0, 0x1000_0000, 0x1000, 0])));
        tags.push((HTAG_CONSOLE_FLAGS, TAG_OPTIONAL, words(&[3])));
        let good = image(&tags);
        let header_len = u32_at(&good, HDR_AT + 8) as usize;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let modules = [Module {
            cmdline: "m".into(),
            data: vec![1; 10],
        }];
        for _ in 0..1000 {
            let mut img = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = HDR_AT + 4 + (next() as usize) % (header_len - 4);
                img[at] = next() as u8;
            }
            // Keep the checksum valid, so the mutations reach the tag parser.
            let sum = 0u32
                .wrapping_sub(MULTIBOOT2_HEADER_MAGIC)
                .wrapping_sub(u32_at(&img, HDR_AT + 4))
                .wrapping_sub(u32_at(&img, HDR_AT + 8));
            img[HDR_AT + 12..HDR_AT + 16].copy_from_slice(&sum.to_le_bytes());
            let req = BootRequest {
                modules: &modules,
                ..BootRequest::new(&img, 16 << 20)
            };
            let _ = plan(&req);
        }
    }

    /// load_addr -1 loads the file from its start.
    #[test]
    fn load_from_file_start() {
        let img = image(&[
            (
                HTAG_ADDRESS,
                0,
                words(&[LOAD + HDR_AT as u32, u32::MAX, 0, 0]),
            ),
            (HTAG_ENTRY, 0, words(&[ENTRY])),
        ]);
        let p = boot(&img).unwrap();
        assert_eq!(blob_at(&p, LOAD.into()), &img[..]);
    }
}
