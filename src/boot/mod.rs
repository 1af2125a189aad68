//! Kernel loading and the boot entry state: ELF64 entered in long mode, and Multiboot v1
//! (ELF32, ELF64 or a.out-kludge images) entered in 32-bit protected mode, as
//! `qemu-system-x86_64 -kernel` does.

use crate::memory::{GuestMem, HIGH_RAM_START, MMIO_HOLE_START, layout};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::Elf;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Errors while loading a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The image is empty.
    #[error("the kernel image is empty")]
    Empty,
    /// The image is neither ELF nor a Multiboot kernel.
    #[error(
        "not a kernel kvmgdb can boot: expected an ELF64 x86-64 image or a Multiboot v1 kernel"
    )]
    UnknownFormat,
    /// The ELF headers are cut short or point outside the file.
    #[error("the ELF image is truncated or corrupt: {0}")]
    BadElf(&'static str),
    /// The ELF image is for another machine.
    #[error("the ELF image is for machine type {0}, not x86 or x86-64")]
    WrongMachine(u16),
    /// A 32-bit ELF without a Multiboot header has no defined entry state.
    #[error("a 32-bit ELF kernel needs a Multiboot header (magic 0x1BADB002 in its first 8 KiB)")]
    Elf32WithoutMultiboot,
    /// The Multiboot header's load addresses are inconsistent.
    #[error("the Multiboot header is invalid: {0}")]
    BadMultiboot(&'static str),
    /// A segment does not fit into guest RAM.
    #[error(
        "the kernel segment at {start:#x}..{end:#x} does not fit in guest RAM ({ram} MiB): give more with --memory"
    )]
    DoesNotFit {
        /// First guest-physical byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// RAM size in MiB.
        ram: u64,
    },
    /// A segment overlaps the VMM's boot structures.
    #[error(
        "the kernel segment at {start:#x}..{end:#x} overlaps kvmgdb's boot structures at {:#x}..{:#x}",
        layout::GDT,
        layout::RESERVED_END
    )]
    OverlapsBootArea {
        /// First guest-physical byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The ELF loader failed.
    #[error("loading the ELF image failed")]
    Elf(#[source] linux_loader::loader::Error),
    /// Writing to guest memory failed.
    #[error("writing the boot structures to guest memory failed")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootFormat {
    /// 64-bit long mode at e_entry with an identity map (see README).
    Elf64,
    /// Multiboot v1: 32-bit protected mode, paging off, EAX=0x2BADB002, EBX=info.
    Multiboot,
}

/// The result of loading: where and how the kernel starts.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// The boot protocol.
    pub format: BootFormat,
    /// The entry point (guest-physical, identity mapped at entry).
    pub entry: u64,
    /// True when the image itself is 32-bit (ELF32 or a.out), so gdb sees i386 registers.
    pub image_is_32bit: bool,
    /// One past the highest guest-physical byte the kernel occupies.
    pub kernel_end: u64,
}

/// Multiboot v1 header magic (Multiboot spec 3.1.2).
const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The magic the boot loader leaves in EAX (Multiboot spec 3.2).
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie within the first 8 KiB of the image, 32-bit aligned.
const MULTIBOOT_SEARCH: usize = 8192;
/// Header flag 16: the a.out kludge address fields are valid.
const MULTIBOOT_AOUT_KLUDGE: u32 = 1 << 16;

const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;

/// One PT_LOAD segment, class-independent.
#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: u64,
    paddr: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

/// The parts of an ELF header we use.
#[derive(Debug)]
struct ElfInfo {
    is_64: bool,
    entry: u64,
    segments: Vec<Segment>,
}

fn rd16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn rd32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn rd64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Parses and validates the ELF header and program headers (System V gABI, ch. 4 and 5).
fn parse_elf(image: &[u8]) -> Result<Option<ElfInfo>, LoadError> {
    if image.len() < 4 || &image[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let trunc = |what| LoadError::BadElf(what);
    let class = *image.get(4).ok_or(trunc("no ELF class"))?;
    if image.get(5) != Some(&1) {
        return Err(trunc("not little-endian"));
    }
    let is_64 = match class {
        1 => false,
        2 => true,
        _ => return Err(trunc("unknown ELF class")),
    };
    let machine = rd16(image, 18).ok_or(trunc("ELF header cut short"))?;
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(LoadError::WrongMachine(machine));
    }
    let (entry, phoff, phentsize, phnum) = if is_64 {
        (
            rd64(image, 24),
            rd64(image, 32),
            rd16(image, 54),
            rd16(image, 56),
        )
    } else {
        (
            rd32(image, 24).map(u64::from),
            rd32(image, 28).map(u64::from),
            rd16(image, 42),
            rd16(image, 44),
        )
    };
    let (entry, phoff, phentsize, phnum) = (
        entry.ok_or(trunc("ELF header cut short"))?,
        phoff.ok_or(trunc("ELF header cut short"))?,
        phentsize.ok_or(trunc("ELF header cut short"))? as usize,
        phnum.ok_or(trunc("ELF header cut short"))? as usize,
    );
    let want = if is_64 { 56 } else { 32 };
    if phnum == 0 {
        return Err(trunc("no program headers"));
    }
    if phentsize != want {
        return Err(trunc("unexpected program header size"));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let base = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * phentsize))
            .ok_or(trunc("program header offset out of range"))?;
        let ph = image
            .get(base..base + phentsize)
            .ok_or(trunc("program headers lie past the end of the file"))?;
        let p_type = rd32(ph, 0).unwrap_or(0);
        if p_type != PT_LOAD {
            continue;
        }
        let seg = if is_64 {
            Segment {
                offset: rd64(ph, 8).unwrap_or(0),
                vaddr: rd64(ph, 16).unwrap_or(0),
                paddr: rd64(ph, 24).unwrap_or(0),
                filesz: rd64(ph, 32).unwrap_or(0),
                memsz: rd64(ph, 40).unwrap_or(0),
            }
        } else {
            Segment {
                offset: rd32(ph, 4).unwrap_or(0).into(),
                vaddr: rd32(ph, 8).unwrap_or(0).into(),
                paddr: rd32(ph, 12).unwrap_or(0).into(),
                filesz: rd32(ph, 16).unwrap_or(0).into(),
                memsz: rd32(ph, 20).unwrap_or(0).into(),
            }
        };
        let end = seg
            .offset
            .checked_add(seg.filesz)
            .ok_or(trunc("segment size overflows"))?;
        if end > image.len() as u64 {
            return Err(trunc("a segment lies past the end of the file"));
        }
        if seg.memsz < seg.filesz {
            return Err(trunc(
                "a segment's memory size is smaller than its file size",
            ));
        }
        if seg.memsz > 0 {
            segments.push(seg);
        }
    }
    if segments.is_empty() {
        return Err(trunc("no loadable segments"));
    }
    Ok(Some(ElfInfo {
        is_64,
        entry,
        segments,
    }))
}

/// A Multiboot v1 header found in the image.
#[derive(Clone, Copy, Debug)]
struct MultibootHeader {
    offset: usize,
    flags: u32,
    header_addr: u32,
    load_addr: u32,
    load_end_addr: u32,
    bss_end_addr: u32,
    entry_addr: u32,
}

/// Finds a Multiboot v1 header with a valid checksum (Multiboot spec 3.1.1).
fn find_multiboot(image: &[u8]) -> Option<MultibootHeader> {
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

/// Checks that `[start, end)` lies in RAM and clear of the boot structures.
fn check_range(mem: &GuestMem, start: u64, end: u64) -> Result<(), LoadError> {
    let ram = ram_size(mem);
    let fits = end >= start
        && mem.address_in_range(GuestAddress(start))
        && (end == start || mem.address_in_range(GuestAddress(end - 1)))
        && mem
            .to_region_addr(GuestAddress(start))
            .is_some_and(|(r, _)| {
                end <= vm_memory::GuestMemoryRegion::start_addr(r).0
                    + vm_memory::GuestMemoryRegion::len(r)
            });
    if !fits {
        return Err(LoadError::DoesNotFit {
            start,
            end,
            ram: ram >> 20,
        });
    }
    if start < layout::RESERVED_END && end > layout::GDT {
        return Err(LoadError::OverlapsBootArea { start, end });
    }
    Ok(())
}

fn ram_size(mem: &GuestMem) -> u64 {
    mem.iter().map(vm_memory::GuestMemoryRegion::len).sum()
}

/// Loads `image` into guest memory and writes the boot structures its protocol needs.
pub fn load_kernel(mem: &GuestMem, image: &[u8], cmdline: &str) -> Result<BootInfo, LoadError> {
    if image.is_empty() {
        return Err(LoadError::Empty);
    }
    let elf = parse_elf(image)?;
    let multiboot = find_multiboot(image);
    let info = match (multiboot, &elf) {
        (Some(mb), elf) => load_multiboot(mem, image, mb, elf.as_ref())?,
        (None, Some(elf)) if elf.is_64 => load_elf64(mem, image, elf)?,
        (None, Some(_)) => return Err(LoadError::Elf32WithoutMultiboot),
        (None, None) => return Err(LoadError::UnknownFormat),
    };
    write_gdt(mem, info.format)?;
    match info.format {
        BootFormat::Elf64 => {
            write_identity_page_tables(mem)?;
            mem.write_slice(&[0u8; 4096], GuestAddress(layout::BOOT_PARAMS))
                .map_err(LoadError::Memory)?;
        }
        BootFormat::Multiboot => write_multiboot_info(mem, cmdline)?,
    }
    Ok(info)
}

fn load_elf64(mem: &GuestMem, image: &[u8], elf: &ElfInfo) -> Result<BootInfo, LoadError> {
    for s in &elf.segments {
        check_range(mem, s.paddr, s.paddr.saturating_add(s.memsz))?;
    }
    let mut cursor = std::io::Cursor::new(image);
    let result = Elf::load(mem, None, &mut cursor, None).map_err(LoadError::Elf)?;
    // linux-loader copies p_filesz bytes; zero the bss tail ourselves so a reload is clean.
    for s in &elf.segments {
        zero(mem, s.paddr + s.filesz, s.memsz - s.filesz)?;
    }
    // A kernel linked at a higher-half address may give e_entry as a virtual address; the
    // entry runs identity mapped, so map it back through its segment's p_paddr.
    let entry = physical_entry(elf, result.kernel_load.0);
    Ok(BootInfo {
        format: BootFormat::Elf64,
        entry,
        image_is_32bit: false,
        kernel_end: result.kernel_end,
    })
}

fn physical_entry(elf: &ElfInfo, entry: u64) -> u64 {
    let in_phys = elf
        .segments
        .iter()
        .any(|s| entry >= s.paddr && entry < s.paddr + s.memsz);
    if in_phys {
        return entry;
    }
    elf.segments
        .iter()
        .find(|s| entry >= s.vaddr && entry < s.vaddr + s.memsz)
        .map_or(entry, |s| s.paddr + (entry - s.vaddr))
}

fn zero(mem: &GuestMem, start: u64, len: u64) -> Result<(), LoadError> {
    let zeros = [0u8; 4096];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        mem.write_slice(&zeros[..n], GuestAddress(start + done))
            .map_err(LoadError::Memory)?;
        done += n as u64;
    }
    Ok(())
}

fn load_multiboot(
    mem: &GuestMem,
    image: &[u8],
    mb: MultibootHeader,
    elf: Option<&ElfInfo>,
) -> Result<BootInfo, LoadError> {
    if mb.flags & 0xfffc != 0 {
        log::warn!(
            "Multiboot header asks for features kvmgdb does not provide (flags {:#x}); continuing",
            mb.flags
        );
    }
    if mb.flags & MULTIBOOT_AOUT_KLUDGE != 0 {
        // Multiboot spec 3.1.3: the address fields describe a flat image.
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
        check_range(mem, load, end)?;
        mem.write_slice(data, GuestAddress(load))
            .map_err(LoadError::Memory)?;
        zero(mem, load + load_len as u64, end - load - load_len as u64)?;
        return Ok(BootInfo {
            format: BootFormat::Multiboot,
            entry: mb.entry_addr.into(),
            image_is_32bit: elf.is_none_or(|e| !e.is_64),
            kernel_end: end,
        });
    }
    let elf = elf.ok_or(LoadError::BadMultiboot(
        "not ELF, and the a.out kludge flag (bit 16) is not set",
    ))?;
    let mut kernel_end = 0;
    for s in &elf.segments {
        let end = s.paddr.saturating_add(s.memsz);
        check_range(mem, s.paddr, end)?;
        let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
        mem.write_slice(data, GuestAddress(s.paddr))
            .map_err(LoadError::Memory)?;
        zero(mem, s.paddr + s.filesz, s.memsz - s.filesz)?;
        kernel_end = kernel_end.max(end);
    }
    Ok(BootInfo {
        format: BootFormat::Multiboot,
        entry: physical_entry(elf, elf.entry),
        image_is_32bit: !elf.is_64,
        kernel_end,
    })
}

/// GDT selectors at entry, as in the Linux boot protocol (`__BOOT_CS`, `__BOOT_DS`).
pub const BOOT_CS: u16 = 0x10;
/// Data selector at entry.
pub const BOOT_DS: u16 = 0x18;

/// Segment-descriptor access bytes and flags (SDM Vol. 3, 3.4.5).
const CODE64_DESC: u64 = 0x00af_9b00_0000_ffff; // L=1, P, DPL0, exec/read, accessed
const CODE32_DESC: u64 = 0x00cf_9b00_0000_ffff; // D=1, G=1, P, DPL0, exec/read, accessed
const DATA_DESC: u64 = 0x00cf_9300_0000_ffff; // D/B=1, G=1, P, DPL0, read/write, accessed

fn write_gdt(mem: &GuestMem, format: BootFormat) -> Result<(), LoadError> {
    let code = match format {
        BootFormat::Elf64 => CODE64_DESC,
        BootFormat::Multiboot => CODE32_DESC,
    };
    let gdt: [u64; 4] = [0, 0, code, DATA_DESC];
    for (i, d) in gdt.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(layout::GDT + 8 * i as u64))
            .map_err(LoadError::Memory)?;
    }
    Ok(())
}

/// Page-table entry bits (SDM Vol. 3, 4.5).
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;

/// How much the ELF64 entry identity-maps: at least 4 GiB, and all RAM.
fn identity_map_size(mem: &GuestMem) -> u64 {
    let top = mem.last_addr().0 + 1;
    top.max(4 << 30).next_multiple_of(1 << 30)
}

/// Writes PML4 → PDPT → PDs mapping `[0, identity_map_size)` with 2 MiB pages.
fn write_identity_page_tables(mem: &GuestMem) -> Result<(), LoadError> {
    let pml4 = layout::PML4;
    let pdpt = pml4 + 0x1000;
    let gib = identity_map_size(mem) >> 30;
    let w = |v: u64, a: u64| mem.write_obj(v, GuestAddress(a)).map_err(LoadError::Memory);
    zero(mem, pml4, 0x2000)?;
    w(pdpt | PTE_PRESENT | PTE_WRITABLE, pml4)?;
    for g in 0..gib {
        let pd = pdpt + 0x1000 * (g + 1);
        w(pd | PTE_PRESENT | PTE_WRITABLE, pdpt + 8 * g)?;
        for i in 0..512u64 {
            let addr = (g << 30) | (i << 21);
            w(addr | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE, pd + 8 * i)?;
        }
    }
    Ok(())
}

/// Multiboot information flags (Multiboot spec 3.3).
const MBI_MEMORY: u32 = 1 << 0;
const MBI_CMDLINE: u32 = 1 << 2;
const MBI_MMAP: u32 = 1 << 6;
const MBI_LOADER_NAME: u32 = 1 << 9;
/// Memory-map entry type for usable RAM.
const MMAP_AVAILABLE: u32 = 1;
const MMAP_RESERVED: u32 = 2;

fn write_multiboot_info(mem: &GuestMem, cmdline: &str) -> Result<(), LoadError> {
    let m = |r: Result<(), vm_memory::GuestMemoryError>| r.map_err(LoadError::Memory);
    let info = layout::MULTIBOOT_INFO;
    zero(mem, info, 0x800)?;
    let ram_top = mem.last_addr().0 + 1;
    let low_end = ram_top.min(MMIO_HOLE_START);
    // mem_upper: KiB of contiguous RAM from 1 MiB to the first hole.
    let mem_upper = (low_end.saturating_sub(1 << 20) >> 10) as u32;
    let mut mmap: Vec<(u64, u64, u32)> = vec![
        (0, 0x9_fc00, MMAP_AVAILABLE),
        (0x9_fc00, 0x400, MMAP_RESERVED),
        (0xf_0000, 0x1_0000, MMAP_RESERVED),
        (1 << 20, low_end - (1 << 20), MMAP_AVAILABLE),
    ];
    if ram_top > HIGH_RAM_START {
        mmap.push((HIGH_RAM_START, ram_top - HIGH_RAM_START, MMAP_AVAILABLE));
    }
    for (i, (base, len, kind)) in mmap.iter().enumerate() {
        let at = layout::MULTIBOOT_MMAP + 24 * i as u64;
        m(mem.write_obj(20u32, GuestAddress(at)))?;
        m(mem.write_obj(*base, GuestAddress(at + 4)))?;
        m(mem.write_obj(*len, GuestAddress(at + 12)))?;
        m(mem.write_obj(*kind, GuestAddress(at + 20)))?;
    }
    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.truncate(0x2ff);
    cmd.push(0);
    m(mem.write_slice(&cmd, GuestAddress(layout::MULTIBOOT_CMDLINE)))?;
    m(mem.write_slice(b"kvmgdb\0", GuestAddress(layout::MULTIBOOT_LOADER_NAME)))?;
    let fields: [(u64, u32); 8] = [
        (0, MBI_MEMORY | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME),
        (4, 640),
        (8, mem_upper),
        (16, layout::MULTIBOOT_CMDLINE as u32),
        (44, 24 * mmap.len() as u32),
        (48, layout::MULTIBOOT_MMAP as u32),
        (64, layout::MULTIBOOT_LOADER_NAME as u32),
        (12, 0xffff_ffff), // boot_device: none (flag not set; kept all-ones like GRUB)
    ];
    for (off, v) in fields {
        m(mem.write_obj(v, GuestAddress(info + off)))?;
    }
    Ok(())
}

/// RFLAGS at entry: only the always-one bit 1; interrupts off.
const RFLAGS_RESERVED1: u64 = 0x2;

/// Control-register bits (SDM Vol. 3, 2.5).
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

fn segment(selector: u16, type_: u8, db: u8, l: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets the general-purpose registers of the boot vCPU for `info`.
pub fn entry_regs(info: &BootInfo) -> kvm_regs {
    let mut regs = kvm_regs {
        rip: info.entry,
        rflags: RFLAGS_RESERVED1,
        rsp: layout::STACK_TOP,
        ..Default::default()
    };
    match info.format {
        BootFormat::Elf64 => regs.rsi = layout::BOOT_PARAMS,
        BootFormat::Multiboot => {
            regs.rax = MULTIBOOT_BOOTLOADER_MAGIC.into();
            regs.rbx = layout::MULTIBOOT_INFO;
        }
    }
    regs
}

/// Rewrites the system registers of the boot vCPU (starting from KVM's reset state) for `info`.
pub fn entry_sregs(info: &BootInfo, sregs: &mut kvm_sregs) {
    let data = segment(BOOT_DS, 0x3, 1, 0);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    // A 64-bit busy TSS and an LDT marked unusable: what VM entry checks demand
    // (SDM Vol. 3, 28.3.1.2); the guest loads its own before it needs them.
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0x67,
        selector: 0,
        type_: 0xb,
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.ldt = kvm_segment {
        limit: 0xffff,
        type_: 0x2,
        present: 1,
        unusable: 1,
        ..Default::default()
    };
    match info.format {
        BootFormat::Elf64 => {
            sregs.cs = segment(BOOT_CS, 0xb, 0, 1);
            sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
            sregs.cr3 = layout::PML4;
            sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        BootFormat::Multiboot => {
            sregs.cs = segment(BOOT_CS, 0xb, 1, 0);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    fn elf64(entry: u64, paddr: u64, filesz: u64, memsz: u64) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16] = 2;
        f[18] = EM_X86_64 as u8;
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
        f[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes());
        f[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&filesz.to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        for (i, b) in f[0x100..0x100 + filesz as usize].iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        f
    }

    #[test]
    fn loads_elf64_and_builds_tables() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let img = elf64(0x10_0000, 0x10_0000, 0x40, 0x1000);
        let info = load_kernel(&mem, &img, "").unwrap();
        assert_eq!(info.format, BootFormat::Elf64);
        assert_eq!(info.entry, 0x10_0000);
        assert!(!info.image_is_32bit);
        let b: u8 = mem.read_obj(GuestAddress(0x10_0001)).unwrap();
        assert_eq!(b, 1 ^ 0x5a);
        let pml4e: u64 = mem.read_obj(GuestAddress(layout::PML4)).unwrap();
        assert_eq!(pml4e & !0xfff, layout::PML4 + 0x1000);
        // The PD entry for 2 MiB maps 2 MiB as a large page.
        let pde: u64 = mem
            .read_obj(GuestAddress(layout::PML4 + 0x2000 + 8))
            .unwrap();
        assert_eq!(pde, (2 << 20) | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE);
    }

    #[test]
    fn rejects_bad_images() {
        let mem = create_guest_memory(16 << 20).unwrap();
        assert!(matches!(load_kernel(&mem, b"", ""), Err(LoadError::Empty)));
        assert!(matches!(
            load_kernel(&mem, b"hello world, not a kernel", ""),
            Err(LoadError::UnknownFormat)
        ));
        let img = elf64(0x10_0000, 0x10_0000, 0x40, 0x1000);
        assert!(matches!(
            load_kernel(&mem, &img[..0x60], ""),
            Err(LoadError::BadElf(_))
        ));
        assert!(matches!(
            load_kernel(&mem, &img[..0x120], ""),
            Err(LoadError::BadElf(_))
        ));
        let big = elf64(0x10_0000, 0x10_0000, 0x40, 64 << 20);
        assert!(matches!(
            load_kernel(&mem, &big, ""),
            Err(LoadError::DoesNotFit { .. })
        ));
        let low = elf64(0x1000, 0x1000, 0x40, 0x1000);
        assert!(matches!(
            load_kernel(&mem, &low, ""),
            Err(LoadError::OverlapsBootArea { .. })
        ));
        let mut arm = img.clone();
        arm[18] = 183;
        assert!(matches!(
            load_kernel(&mem, &arm, ""),
            Err(LoadError::WrongMachine(183))
        ));
    }

    #[test]
    fn aout_kludge_multiboot() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut img = vec![0x90u8; 0x1000];
        let flags = MULTIBOOT_AOUT_KLUDGE | 2;
        let hdr: [u32; 8] = [
            MULTIBOOT_HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC.wrapping_add(flags)),
            0x10_0010, // header_addr
            0x10_0000, // load_addr
            0,         // load_end_addr: whole file
            0x10_2000, // bss_end_addr
            0x10_0040, // entry
        ];
        for (i, v) in hdr.iter().enumerate() {
            img[0x10 + 4 * i..0x14 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        let info = load_kernel(&mem, &img, "k").unwrap();
        assert_eq!(info.format, BootFormat::Multiboot);
        assert_eq!(info.entry, 0x10_0040);
        assert!(info.image_is_32bit);
        let regs = entry_regs(&info);
        assert_eq!(regs.rax, 0x2BAD_B002);
        let upper: u32 = mem
            .read_obj(GuestAddress(layout::MULTIBOOT_INFO + 8))
            .unwrap();
        assert_eq!(upper, (15 << 20) >> 10);
        let b: u8 = mem.read_obj(GuestAddress(0x10_0050)).unwrap();
        assert_eq!(b, 0x90);
    }
}
