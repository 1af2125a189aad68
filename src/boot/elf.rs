//! ELF images: parsing and validating the headers (for every format that carries an ELF
//! image), and the ELF64 entry: segments loaded at their physical addresses, then, when a
//! PVH note names a 32-bit entry, the PVH boot ([`super::linux::pvh`]), else long mode at
//! `e_entry` with an identity map and RSI pointing at a Linux `boot_params` (the 64-bit
//! boot protocol: a vmlinux boots by it, a bare-metal kernel may ignore it).

use super::entry::{self, CpuMode};
use super::linux;
use super::{BootFormat, BootInfo, BootPlan, BootRequest, LoadError, MemWrite, RamMap, layout};
use crate::x86::PAGE_SIZE;
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The first four bytes of every ELF file (gABI, e_ident).
pub(super) const ELF_MAGIC: &[u8] = b"\x7fELF";
const EM_386: u16 = 3;
pub(super) const EM_X86_64: u16 = 62;
pub(super) const PT_LOAD: u32 = 1;
/// A segment of ELF notes (gABI, "Note Section").
const PT_NOTE: u32 = 4;
/// The PVH entry note's type (Xen's public/elfnote.h), under the name "Xen".
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// One PT_LOAD segment, class-independent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    pub(super) offset: u64,
    pub(super) paddr: u64,
    pub(super) vaddr: u64,
    pub(super) filesz: u64,
    pub(super) memsz: u64,
}

/// The parts of an ELF header we use.
#[derive(Debug)]
pub(super) struct ElfInfo {
    pub(super) is_64: bool,
    pub(super) entry: u64,
    pub(super) segments: Vec<Segment>,
    /// (file offset, size) of each PT_NOTE segment.
    pub(super) notes: Vec<(u64, u64)>,
}

pub(super) fn rd16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
pub(super) fn rd32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn rd64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Parses and validates the ELF header and program headers (System V gABI, ch. 4 and 5).
/// `None` when the image is not ELF at all.
pub(super) fn parse_elf(image: &[u8]) -> Result<Option<ElfInfo>, LoadError> {
    if !image.starts_with(ELF_MAGIC) {
        return Ok(None);
    }
    let trunc = |what| LoadError::BadElf(what);
    // e_ident is 16 bytes; the whole ELF header 52 (ELFCLASS32) or 64 (ELFCLASS64).
    let class = *image.get(4).ok_or(trunc("ELF header cut short"))?;
    let is_64 = match class {
        1 => false,
        2 => true,
        _ => return Err(trunc("unknown ELF class")),
    };
    if image.len() < if is_64 { 64 } else { 52 } {
        return Err(trunc("ELF header cut short"));
    }
    if image[5] != 1 {
        return Err(trunc("not little-endian"));
    }
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
    let mut notes = Vec::new();
    for i in 0..phnum {
        let base = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * phentsize))
            .ok_or(trunc("program header offset out of range"))?;
        let ph = base
            .checked_add(phentsize)
            .and_then(|end| image.get(base..end))
            .ok_or(trunc("program headers lie past the end of the file"))?;
        let p_type = rd32(ph, 0).unwrap_or(0);
        if p_type == PT_NOTE {
            let (offset, filesz) = if is_64 {
                (rd64(ph, 8), rd64(ph, 32))
            } else {
                (rd32(ph, 4).map(u64::from), rd32(ph, 16).map(u64::from))
            };
            notes.push((offset.unwrap_or(0), filesz.unwrap_or(0)));
        }
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
    check_no_overlap(&segments)?;
    let info = ElfInfo {
        is_64,
        entry,
        segments,
        notes,
    };
    Ok(Some(info))
}

/// Refuses segments that overlap in guest-physical memory: which bytes win would be up to
/// the order of loading, and no linker makes such an image on purpose.
fn check_no_overlap(segments: &[Segment]) -> Result<(), LoadError> {
    let mut spans: Vec<(u64, u64)> = segments
        .iter()
        .map(|s| (s.paddr, s.paddr.saturating_add(s.memsz)))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((a_start, a_end), (b_start, b_end)) = (pair[0], pair[1]);
        if b_start < a_end {
            return Err(LoadError::OverlappingSegments {
                first: (a_start, a_end),
                second: (b_start, b_end),
            });
        }
    }
    Ok(())
}

/// The entry a 32-bit ELF's PVH note names, if it has one. linux-loader finds the note of an
/// ELF64 but reads no ELF32, so the notes of those are read here (gABI "Note Section": a
/// 12-byte header of name size, descriptor size and type, then the name and the
/// descriptor, each padded to 4 bytes); a note segment cut short is a corrupt ELF.
pub(super) fn pvh_entry32(image: &[u8], elf: &ElfInfo) -> Result<Option<u64>, LoadError> {
    for &(offset, size) in &elf.notes {
        let notes = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(o, n)| image.get(o..o.checked_add(n)?))
            .ok_or(LoadError::BadElf(
                "a note segment lies past the end of the file",
            ))?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let field = |i: usize| rd32(notes, at + 4 * i).unwrap_or(0) as usize;
            let (namesz, descsz, n_type) = (field(0), field(1), field(2) as u32);
            let name_at = at + 12;
            let desc_at = name_at.saturating_add(namesz.next_multiple_of(4));
            let next = desc_at.saturating_add(descsz.next_multiple_of(4));
            if next > notes.len() {
                return Err(LoadError::BadElf("an ELF note runs past its segment"));
            }
            if n_type == XEN_ELFNOTE_PHYS32_ENTRY
                && notes.get(name_at..name_at + namesz) == Some(&b"Xen\0"[..])
            {
                return match rd32(notes, desc_at).filter(|_| descsz >= 4) {
                    Some(entry) => Ok(Some(entry.into())),
                    None => Err(LoadError::BadElf("the PVH note holds no 32-bit entry")),
                };
            }
            at = next;
        }
    }
    Ok(None)
}

/// Refuses an entry point outside everything the image loads: the vCPU would start on
/// whatever RAM holds there (zeros, or kvmgdb's own boot structures).
pub(super) fn check_entry(entry: u64, loaded: &[(u64, u64)]) -> Result<(), LoadError> {
    if loaded
        .iter()
        .any(|&(start, end)| entry >= start && entry < end)
    {
        return Ok(());
    }
    Err(LoadError::EntryOutsideImage(entry))
}

/// The guest-physical ranges the segments occupy.
pub(super) fn loaded_ranges(elf: &ElfInfo) -> Vec<(u64, u64)> {
    elf.segments
        .iter()
        .map(|s| (s.paddr, s.paddr.saturating_add(s.memsz)))
        .collect()
}

/// The plan for an ELF64 image without a Multiboot header: the PVH entry when its note
/// names one, else long mode at `e_entry`.
///
/// Only the segments' file bytes are copied out of the image (once into linux-loader's
/// scratch memory, once into the plan), so a debug vmlinux of hundreds of MiB costs the
/// ~60 MiB it loads, not its size.
pub(super) fn plan_elf64(
    req: &BootRequest,
    elf: &ElfInfo,
    ram: &RamMap,
) -> Result<BootPlan, LoadError> {
    for s in &elf.segments {
        ram.check_range(s.paddr, s.paddr.saturating_add(s.memsz))?;
    }
    let (mut writes, loaded) = load_with_linux_loader(req.image, elf)?;
    // linux-loader copies p_filesz bytes; the bss tails are ours to clear, so a reset that
    // re-applies the plan over a dirty image still leaves them zero.
    for s in &elf.segments {
        writes.push(MemWrite::Zero {
            gpa: s.paddr + s.filesz,
            len: s.memsz - s.filesz,
        });
    }
    let kernel_end = loaded_ranges(elf).iter().map(|r| r.1).max().unwrap_or(0);
    // linux-loader reports what the last PT_NOTE segment says (each one overwrites the
    // answer); a vmlinux has one, holding the PVH note among Linux's others.
    if let PvhBootCapability::PvhEntryPresent(pvh) = loaded.pvh_boot_cap {
        check_entry(pvh.0, &loaded_ranges(elf))?;
        return linux::pvh::plan(req, ram, writes, pvh.0, kernel_end, false);
    }
    writes.push(entry::gdt(CpuMode::Long));
    writes.push(entry::identity_page_tables(ram.top()));
    writes.extend(linux::elf64_boot_params(req, ram, kernel_end)?);
    // A kernel linked at a higher-half address may give e_entry as a virtual address; the
    // entry runs identity mapped, so map it back through its segment's p_paddr.
    let entry = physical_entry(elf, loaded.kernel_load.0);
    check_entry(entry, &loaded_ranges(elf))?;
    let mut bsp = entry::entry_state(CpuMode::Long, entry);
    bsp.regs.rsi = layout::BOOT_PARAMS;
    Ok(BootPlan {
        writes,
        vcpus: vec![bsp],
        memory_map: ram.memory_map(),
        info: BootInfo {
            format: BootFormat::Elf64,
            entry,
            image_is_32bit: false,
            kernel_end: loaded.kernel_end,
        },
    })
}

/// The plan for an ELF32 image without a Multiboot header whose PVH note names `entry`:
/// its segments loaded as Multiboot loads an ELF32, then the PVH boot.
pub(super) fn plan_pvh32(
    req: &BootRequest,
    elf: &ElfInfo,
    entry: u64,
    ram: &RamMap,
) -> Result<BootPlan, LoadError> {
    let (writes, info) = super::multiboot::load_elf(req.image, elf, ram, BootFormat::Pvh)?;
    check_entry(entry, &loaded_ranges(elf))?;
    linux::pvh::plan(req, ram, writes, entry, info.kernel_end, true)
}

/// Runs linux-loader's ELF loader (its header checks, and the PVH note it reports) into
/// scratch memory covering just the file-backed segments, and lifts what it
/// wrote out as one blob per segment, in program-header order: overlapping segments end
/// up as linux-loader left them.
fn load_with_linux_loader(
    image: &[u8],
    elf: &ElfInfo,
) -> Result<(Vec<MemWrite>, linux_loader::loader::KernelLoaderResult), LoadError> {
    let file_backed: Vec<&Segment> = elf.segments.iter().filter(|s| s.filesz > 0).collect();
    let scratch = GuestMemoryMmap::<()>::from_ranges(&scratch_ranges(&file_backed))
        .map_err(LoadError::Scratch)?;
    let mut cursor = std::io::Cursor::new(image);
    let loaded = Elf::load(&scratch, None, &mut cursor, None).map_err(LoadError::Elf)?;
    let mut writes = Vec::new();
    for s in file_backed {
        let mut data = vec![0u8; s.filesz as usize];
        scratch
            .read_slice(&mut data, GuestAddress(s.paddr))
            .map_err(LoadError::ScratchRead)?;
        writes.push(MemWrite::Bytes { gpa: s.paddr, data });
    }
    Ok((writes, loaded))
}

/// Page-aligned, merged ranges covering the file bytes of `segments` (at least one page, as
/// a memory needs a region even when every segment is bss).
fn scratch_ranges(segments: &[&Segment]) -> Vec<(GuestAddress, usize)> {
    let mut spans: Vec<(u64, u64)> = segments
        .iter()
        .map(|s| {
            let start = s.paddr & !(PAGE_SIZE - 1);
            (start, (s.paddr + s.filesz).next_multiple_of(PAGE_SIZE))
        })
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    if merged.is_empty() {
        merged.push((0, PAGE_SIZE));
    }
    merged
        .into_iter()
        .map(|(start, end)| (GuestAddress(start), (end - start) as usize))
        .collect()
}

/// `entry` as a physical address: itself if a segment holds it physically, else mapped from
/// the segment whose virtual range holds it.
pub(super) fn physical_entry(elf: &ElfInfo, entry: u64) -> u64 {
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
