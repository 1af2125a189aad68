//! Boot images. Each format, in a file of its own, turns the image bytes, the command line
//! and the RAM size into a [`BootPlan`]: plain data saying what goes where in guest memory,
//! the entry state of each vCPU and the memory map. The VMM applies the plan when it builds
//! the machine and re-applies it on reset; it knows no image format.
//!
//! Today: ELF64 entered in long mode with a Linux zero page (`elf.rs`), or by its PVH note;
//! Linux bzImages (memtest86+ too) by the x86 boot protocol (`linux/`); Multiboot v1 (ELF32,
//! ELF64 or a.out-kludge images, with modules) entered in 32-bit protected mode
//! (`multiboot.rs`), as `qemu-system-x86_64 -kernel` does; and Multiboot2 (`multiboot2.rs`),
//! which QEMU refuses. `entry.rs` holds the CPU modes they enter in, [`layout`] where the
//! boot structures go.
//!
//! [`plan`] tells the formats apart in this order:
//! 1. An empty image is an error.
//! 2. An image starting with the ELF magic has its headers validated first: a corrupt ELF is
//!    reported as such even when it also carries a Multiboot header.
//! 3. An image that is not ELF and has the Linux setup header ("HdrS" at 0x202) is a Linux
//!    bzImage, booted by the x86 boot protocol whatever else it carries (a bzImage is also
//!    a PE/COFF EFI image and a boot sector; memtest86+'s too), as QEMU decides: a protocol
//!    older than 2.06, a zImage or a header cut short is refused.
//! 4. A Multiboot2 header (magic and checksum, 8-byte aligned) in the first 32 KiB makes it
//!    a Multiboot2 kernel, whether ELF or not, and even when it also has a Multiboot v1
//!    header (as GRUB prefers Multiboot2).
//! 5. Else a Multiboot v1 header (magic and checksum) in the first 8 KiB makes it a Multiboot
//!    kernel, whether ELF or not: the header is the kernel's request to be entered that way.
//! 6. An ELF64 image without either is entered by its PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`)
//!    if it has one, in 32-bit protected mode with `hvm_start_info` in EBX; else in long mode
//!    at `e_entry` with RSI pointing at a Linux zero page (e820 map, command line, initrd),
//!    the 64-bit boot protocol a vmlinux without PVH boots by and that a bare-metal kernel
//!    can ignore. No guess of "is this Linux" is needed: every ELF64 gets both.
//! 7. An ELF32 image without either is entered by its PVH note as in step 6; without one it
//!    has no defined entry state: an error (a Multiboot2 or Multiboot magic with a bad
//!    checksum is reported as such).
//! 8. Anything else is an unknown format, named where we know it: a bad Multiboot2 or
//!    Multiboot checksum, a PE/COFF image without the Linux header (an EFI application), a
//!    16-bit boot sector (0x55AA at offset 510).
//!
//! Every format refuses segments that overlap each other, lie outside RAM or over the boot
//! structures or firmware areas in [`layout`], and an entry point outside what the image
//! loads. Every plan also writes the firmware data a PC kernel expects in memory, whatever
//! its format (`firmware.rs`: the BIOS Data Area and EBDA; `acpi.rs`: the ACPI tables;
//! `mptable.rs`: the Intel MultiProcessor table).
//!

mod acpi;
mod elf;
mod entry;
mod firmware;
pub mod layout;
mod linux;
mod mptable;
mod multiboot;
mod multiboot2;

pub use entry::{BOOT_CS, BOOT_DS};
pub use layout::{MemoryKind, MemoryRange};
pub use multiboot::MULTIBOOT_BOOTLOADER_MAGIC;
pub use multiboot2::MULTIBOOT2_BOOTLOADER_MAGIC;

use crate::memory::{GuestMem, ram_ranges};
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

/// Errors while planning the boot of a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The image is empty.
    #[error("the kernel image is empty")]
    Empty,
    /// The image is neither ELF nor a Multiboot kernel.
    #[error(
        "not a kernel kvmgdb can boot: expected an x86-64 ELF, a Linux bzImage or a Multiboot v1 kernel"
    )]
    UnknownFormat,
    /// The ELF headers are cut short or point outside the file.
    #[error("the ELF image is truncated or corrupt: {0}")]
    BadElf(&'static str),
    /// The ELF image is for another machine.
    #[error("the ELF image is for machine type {0}, not x86 or x86-64")]
    WrongMachine(u16),
    /// A 32-bit ELF without a Multiboot header has no defined entry state.
    #[error(
        "a 32-bit ELF kernel needs a Multiboot header (magic 0x1BADB002 in its first 8 KiB) or a PVH note"
    )]
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
    /// Two segments overlap in guest-physical memory.
    #[error(
        "the kernel segments at {:#x}..{:#x} and {:#x}..{:#x} overlap",
        first.0,
        first.1,
        second.0,
        second.1
    )]
    OverlappingSegments {
        /// The lower segment's range.
        first: (u64, u64),
        /// The segment that starts inside it.
        second: (u64, u64),
    },
    /// The entry point lies outside everything the image loads.
    #[error("the entry point {0:#x} lies outside the kernel's loaded segments")]
    EntryOutsideImage(u64),
    /// A Multiboot header magic with a checksum that does not add up.
    #[error(
        "the Multiboot header at file offset {0:#x} has a bad checksum (magic + flags + checksum must be 0)"
    )]
    BadMultibootChecksum(usize),
    /// A Linux kernel whose boot protocol is older than the one we implement.
    #[error(
        "the Linux kernel speaks boot protocol {}.{:02}; kvmgdb boots 2.06 (Linux 2.6.22) and later",
        .0 >> 8,
        .0 & 0xff
    )]
    BzImageProtocol(u16),
    /// A Linux zImage: loaded low by a real-mode boot loader.
    #[error(
        "the Linux kernel is a zImage (LOADED_HIGH clear): it loads below 1 MiB through a real-mode boot loader, which kvmgdb is not; build a bzImage"
    )]
    ZImage,
    /// A Linux image shorter than its setup header says.
    #[error("the Linux bzImage is truncated: {what} needs {need} bytes, the file has {have}")]
    BzImageTruncated {
        /// The part that is cut short.
        what: &'static str,
        /// Bytes the image would need for it.
        need: u64,
        /// Bytes the image has.
        have: u64,
    },
    /// A Linux setup header with values we cannot honour.
    #[error("the Linux bzImage header is invalid: {0}")]
    BadBzImage(&'static str),
    /// The command line is longer than the kernel takes.
    #[error("the kernel command line is {len} bytes long; this kernel takes at most {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The kernel's `cmdline_size` (or the command line's page).
        max: usize,
    },
    /// The initrd does not fit between the kernel and the limits of where it may go.
    #[error(
        "the initrd ({size} bytes) does not fit in guest RAM between the kernel's end at {floor:#x} and {limit:#x}: give more with --memory"
    )]
    InitrdDoesNotFit {
        /// Its size.
        size: u64,
        /// The lowest address it may take (the kernel's end).
        floor: u64,
        /// One past the highest byte it may take.
        limit: u64,
    },
    /// A PE/COFF image without a Linux setup header.
    #[error(
        "a PE/COFF image for {} without a Linux boot header (an EFI application): kvmgdb has no UEFI firmware to run it",
        linux::bzimage::pe_machine(*.0)
    )]
    PeImage(u16),
    /// A boot sector without a Linux setup header.
    #[error(
        "a 16-bit boot sector (signature 0x55AA at offset 510, no Linux boot header): kvmgdb has no BIOS to run it"
    )]
    BootSector,
    /// A segment or module overlaps the firmware areas every boot writes.
    #[error(
        "the kernel segment or module at {start:#x}..{end:#x} overlaps the firmware area at {area_start:#x}..{area_end:#x} (BIOS Data Area, EBDA or ACPI tables)"
    )]
    OverlapsFirmware {
        /// First guest-physical byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// The firmware area's first byte.
        area_start: u64,
        /// One past its last byte.
        area_end: u64,
    },
    /// The machine's CPU count cannot be described in the ACPI tables.
    #[error("the firmware tables describe 1 to {max} vCPUs, not {cpus}")]
    CpuCount {
        /// The vCPUs asked for.
        cpus: usize,
        /// The most the MADT's xAPIC entries number.
        max: usize,
    },
    /// A Multiboot2 header kvmgdb refuses, with the reason (naming the header tag).
    #[error("the Multiboot2 header is not bootable by kvmgdb: {0}")]
    Multiboot2(String),
    /// A Multiboot2 header magic whose checksum does not add up.
    #[error(
        "the Multiboot2 header at file offset {0:#x} has a bad checksum (magic + architecture + header_length + checksum must be 0)"
    )]
    BadMultiboot2Checksum(usize),
    /// The modules, or the information structure, do not fit where they go.
    #[error(
        "{what} at {start:#x}..{end:#x} does not fit in guest RAM ({ram} MiB): give more with --memory"
    )]
    BootDataDoesNotFit {
        /// What did not fit.
        what: &'static str,
        /// First guest-physical byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// RAM size in MiB.
        ram: u64,
    },
    /// The boot information outgrows the area kept for it.
    #[error("{what} takes {size} bytes, more than the {max} bytes kvmgdb keeps for it")]
    BootInfoTooLarge {
        /// What outgrew its area.
        what: &'static str,
        /// Its size in bytes.
        size: u64,
        /// The area's size.
        max: u64,
    },
    /// The ELF loader failed.
    #[error("loading the ELF image failed")]
    Elf(#[source] linux_loader::loader::Error),
    /// The scratch memory the ELF loader writes into could not be allocated.
    #[error("cannot allocate scratch memory to load the ELF image")]
    Scratch(#[source] vm_memory::mmap::FromRangesError),
    /// Reading back what the ELF loader wrote into scratch memory failed.
    #[error("cannot read back the loaded ELF image")]
    ScratchRead(#[source] vm_memory::GuestMemoryError),
}

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootFormat {
    /// 64-bit long mode at e_entry with an identity map and RSI = a Linux zero page (see
    /// README).
    Elf64,
    /// Multiboot v1: 32-bit protected mode, paging off, EAX=0x2BADB002, EBX=info.
    Multiboot,
    /// Linux bzImage by the 64-bit boot protocol: long mode at load address + 0x200,
    /// identity mapped, RSI = zero page.
    BzImage64,
    /// Linux bzImage by the 32-bit boot protocol: protected mode at `code32_start`, paging
    /// off, ESI = zero page.
    BzImage32,
    /// PVH: 32-bit protected mode at the ELF note's entry, paging off, EBX = hvm_start_info.
    Pvh,
    /// Multiboot2: 32-bit protected mode, paging off, EAX=0x36D76289, EBX=info.
    Multiboot2,
}

/// Where and how the kernel starts: what the rest of the program shows of the boot.
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

/// One write into guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemWrite {
    /// `data` at guest-physical `gpa`.
    Bytes {
        /// First guest-physical byte.
        gpa: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `len` zero bytes at guest-physical `gpa` (a bss, a cleared structure): RAM is zero
    /// when the machine is built, but a reset re-applies the plan over what the guest left.
    Zero {
        /// First guest-physical byte.
        gpa: u64,
        /// How many bytes.
        len: u64,
    },
}

/// The system registers a boot protocol sets; the rest (APIC base, CR2, CR8, the interrupt
/// bitmap) keep KVM's reset values.
#[derive(Clone, Copy, Debug)]
pub struct EntrySregs {
    /// Code segment.
    pub cs: kvm_segment,
    /// Data segment.
    pub ds: kvm_segment,
    /// Extra segment.
    pub es: kvm_segment,
    /// FS.
    pub fs: kvm_segment,
    /// GS.
    pub gs: kvm_segment,
    /// Stack segment.
    pub ss: kvm_segment,
    /// Task register.
    pub tr: kvm_segment,
    /// LDT register.
    pub ldt: kvm_segment,
    /// GDTR (base and limit).
    pub gdt: kvm_dtable,
    /// IDTR (base and limit).
    pub idt: kvm_dtable,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

impl EntrySregs {
    /// Writes these registers over `sregs` (KVM's reset state of the vCPU).
    pub fn apply(&self, sregs: &mut kvm_sregs) {
        sregs.cs = self.cs;
        sregs.ds = self.ds;
        sregs.es = self.es;
        sregs.fs = self.fs;
        sregs.gs = self.gs;
        sregs.ss = self.ss;
        sregs.tr = self.tr;
        sregs.ldt = self.ldt;
        sregs.gdt.base = self.gdt.base;
        sregs.gdt.limit = self.gdt.limit;
        sregs.idt.base = self.idt.base;
        sregs.idt.limit = self.idt.limit;
        sregs.cr0 = self.cr0;
        sregs.cr3 = self.cr3;
        sregs.cr4 = self.cr4;
        sregs.efer = self.efer;
    }
}

/// How a vCPU the boot protocol starts begins: at an entry point. Boot protocols start only
/// the boot processor; the machine's other vCPUs wait for the guest's INIT-SIPI-SIPI.
#[derive(Clone, Copy, Debug)]
pub struct VcpuEntry {
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// The system registers the protocol sets.
    pub sregs: EntrySregs,
}

/// Everything a boot needs, computed from the image bytes and the RAM size alone.
#[derive(Clone, Debug)]
pub struct BootPlan {
    /// Writes into guest RAM, applied in order (later ones win where they overlap).
    pub writes: Vec<MemWrite>,
    /// The entry state of each vCPU the protocol starts; index 0 is the boot processor.
    /// Every vCPU of the machine beyond these is an application processor that waits for
    /// the guest's INIT-SIPI-SIPI, as on real hardware.
    pub vcpus: Vec<VcpuEntry>,
    /// The guest-physical memory map the protocol reports (e820 style).
    pub memory_map: Vec<MemoryRange>,
    /// What the rest of the program shows of the boot.
    pub info: BootInfo,
}

impl BootPlan {
    /// Applies [`BootPlan::writes`] to guest RAM.
    pub fn write_memory(&self, mem: &GuestMem) -> Result<(), vm_memory::GuestMemoryError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        for w in &self.writes {
            match w {
                MemWrite::Bytes { gpa, data } => mem.write_slice(data, GuestAddress(*gpa))?,
                MemWrite::Zero { gpa, len } => {
                    let mut done = 0;
                    while done < *len {
                        let n = (len - done).min(ZEROS.len() as u64) as usize;
                        mem.write_slice(&ZEROS[..n], GuestAddress(gpa + done))?;
                        done += n as u64;
                    }
                }
            }
        }
        Ok(())
    }

    /// The boot processor's entry state.
    pub fn bsp(&self) -> &VcpuEntry {
        &self.vcpus[0]
    }
}

/// Guest RAM as the plan sees it: the ranges `memory::ram_ranges` lays out for a size.
struct RamMap {
    size: u64,
    /// (start, end) of each range.
    ranges: Vec<(u64, u64)>,
}

impl RamMap {
    fn new(size: u64) -> RamMap {
        let ranges = ram_ranges(size)
            .into_iter()
            .map(|(start, len)| (start.0, start.0 + len as u64))
            .collect();
        RamMap { size, ranges }
    }

    /// One past the highest RAM byte.
    fn top(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.1)
    }

    fn memory_map(&self) -> Vec<MemoryRange> {
        layout::memory_map(self.top())
    }

    /// Checks that `[start, end)` lies in one RAM range and clear of the boot structures.
    fn check_range(&self, start: u64, end: u64) -> Result<(), LoadError> {
        let fits = end >= start
            && self
                .ranges
                .iter()
                .any(|&(lo, hi)| start >= lo && start < hi && end <= hi);
        if !fits {
            return Err(LoadError::DoesNotFit {
                start,
                end,
                ram: self.size >> 20,
            });
        }
        if start < layout::RESERVED_END && end > layout::GDT {
            return Err(LoadError::OverlapsBootArea { start, end });
        }
        for (area_start, area_end) in layout::FIRMWARE_AREAS {
            if start < area_end && end > area_start {
                return Err(LoadError::OverlapsFirmware {
                    start,
                    end,
                    area_start,
                    area_end,
                });
            }
        }
        Ok(())
    }
}

/// How many leading bytes of an image [`check_prefix`] needs: every format's signature lies
/// in them (the ELF magic at 0, a Multiboot2 header in the first 32 KiB, a Multiboot v1
/// header in the first 8 KiB, the Linux setup header at 0x1f1..0x300, a PE header where a
/// DOS stub's offset at 0x3c points, which linkers put in the first KiB).
pub const PREFIX_LEN: usize = multiboot2::MULTIBOOT2_SEARCH;

/// Tells from the first [`PREFIX_LEN`] bytes of an image (all of it, if shorter) whether it
/// can be a kernel at all, so a reader can refuse a giant file of anything else without
/// reading the rest: an empty image or one with no format's signature is refused as
/// [`plan`] would refuse it.
pub fn check_prefix(prefix: &[u8]) -> Result<(), LoadError> {
    if prefix.is_empty() {
        return Err(LoadError::Empty);
    }
    if prefix.starts_with(elf::ELF_MAGIC) {
        return Ok(());
    }
    if linux::bzimage::has_setup_header(prefix) {
        return linux::bzimage::parse_header(prefix).map(|_| ());
    }
    if multiboot::find_multiboot(prefix).is_some() || multiboot2::find_header(prefix).is_some() {
        return Ok(());
    }
    Err(unknown_format(prefix))
}

/// The error for an image that has a Multiboot2 or Multiboot v1 magic but no header with a
/// valid checksum: it asks for Multiboot but would not be booted as such.
fn bad_checksum(image: &[u8]) -> Option<LoadError> {
    multiboot2::find_bad_checksum(image)
        .map(LoadError::BadMultiboot2Checksum)
        .or_else(|| multiboot::find_bad_checksum(image).map(LoadError::BadMultibootChecksum))
}

/// A file handed to the kernel beside it: a Linux initrd, or a Multiboot module. QEMU's
/// `-initrd "mod1 args,mod2"` gives one per comma-separated item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Module {
    /// The module's command line as the user wrote it: its path, then its arguments
    /// (Multiboot passes the whole string, as QEMU does).
    pub cmdline: String,
    /// The file's bytes.
    pub data: Vec<u8>,
}

/// Everything a boot is planned from: the image, what the user hands the kernel, and the
/// machine it boots on.
#[derive(Clone, Copy, Debug)]
pub struct BootRequest<'a> {
    /// The kernel image's bytes.
    pub image: &'a [u8],
    /// The image's name as a boot loader shows it (its path): Multiboot command lines start
    /// with it.
    pub image_name: &'a str,
    /// The kernel command line (`-append`).
    pub cmdline: &'a str,
    /// The initrd or Multiboot modules (`-initrd`), in order. A Linux kernel gets them
    /// concatenated as one initrd.
    pub modules: &'a [Module],
    /// Bytes of guest RAM, laid out as `memory::create_guest_memory` does.
    pub ram_size: u64,
    /// Number of vCPUs the machine has (the firmware tables list them).
    pub vcpus: usize,
}

impl<'a> BootRequest<'a> {
    /// A request for `image` alone on `ram_size` bytes of RAM and one vCPU: no name, no
    /// command line, no modules.
    pub fn new(image: &'a [u8], ram_size: u64) -> BootRequest<'a> {
        BootRequest {
            image,
            image_name: "",
            cmdline: "",
            modules: &[],
            ram_size,
            vcpus: 1,
        }
    }
}

/// Plans the boot that `req` asks for, telling the image's format apart as the module
/// documentation describes. Whatever the format, the plan writes the firmware areas first
/// (BIOS Data Area, EBDA, ACPI tables for `req.vcpus` CPUs).
pub fn plan(req: &BootRequest) -> Result<BootPlan, LoadError> {
    let (image, ram_size) = (req.image, req.ram_size);
    if image.is_empty() {
        return Err(LoadError::Empty);
    }
    let ram = RamMap::new(ram_size);
    let elf = elf::parse_elf(image)?;
    let (firmware, acpi) = firmware::writes(req.vcpus)?;
    // A 32-bit or unknown image can only be booted through Multiboot: a header that is
    // there but wrong is the error to report.
    let bad_checksum = || bad_checksum(image);
    let mut plan = if elf.is_none() && linux::bzimage::has_setup_header(image) {
        linux::bzimage::plan(req, &ram)
    } else {
        match (
            multiboot2::find_header(image),
            multiboot::find_multiboot(image),
            &elf,
        ) {
            (Some(mb2), _, elf) => multiboot2::plan(req, mb2, elf.as_ref(), &ram, &acpi),
            (None, Some(mb), elf) => multiboot::plan(req, mb, elf.as_ref(), &ram),
            (None, None, Some(elf)) if elf.is_64 => elf::plan_elf64(req, elf, &ram),
            (None, None, Some(elf)) => match elf::pvh_entry32(image, elf)? {
                Some(entry) => elf::plan_pvh32(req, elf, entry, &ram),
                None => Err(bad_checksum().unwrap_or(LoadError::Elf32WithoutMultiboot)),
            },
            (None, None, None) => Err(unknown_format(image)),
        }
    }?;
    plan.writes.splice(0..0, firmware);
    Ok(plan)
}

/// The error for an image that is neither ELF nor Linux nor Multiboot (step 8 of the
/// module documentation): what it is, when we recognise it.
fn unknown_format(image: &[u8]) -> LoadError {
    bad_checksum(image)
        .or_else(|| linux::bzimage::foreign_format(image))
        .unwrap_or(LoadError::UnknownFormat)
}

#[cfg(test)]
mod tests {
    use super::elf::{EM_X86_64, PT_LOAD};
    use super::multiboot::{INFO_AREA, MULTIBOOT_AOUT_KLUDGE, MULTIBOOT_HEADER_MAGIC};
    use super::*;
    use crate::memory::create_guest_memory;
    use crate::x86::{PTE_PRESENT, PTE_PS, PTE_WRITABLE};

    /// `image` with `cmdline` on `ram_size` bytes of RAM, nothing else.
    fn plan(image: &[u8], cmdline: &str, ram_size: u64) -> Result<BootPlan, LoadError> {
        super::plan(&BootRequest {
            cmdline,
            ..BootRequest::new(image, ram_size)
        })
    }

    /// A `len`-byte file that starts with an ELF64 x86-64 executable's header: entry
    /// `entry`, `phnum` program headers of 56 bytes right after it (at 64), left for the
    /// caller to fill.
    pub(in crate::boot) fn elf64_file(len: usize, entry: u64, phnum: u16) -> Vec<u8> {
        let mut f = vec![0u8; len];
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
        f[56..58].copy_from_slice(&phnum.to_le_bytes());
        f
    }

    pub(super) fn elf64(entry: u64, paddr: u64, filesz: u64, memsz: u64) -> Vec<u8> {
        let mut f = elf64_file(0x200, entry, 1);
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

    /// An a.out-kludge Multiboot image: 4 KiB of NOPs loaded at 1 MiB, bss to 1 MiB + 8 KiB,
    /// entered at 1 MiB + 0x40.
    pub(super) fn aout_kludge() -> Vec<u8> {
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
        img
    }

    /// Plans `image` for `size` bytes of RAM and applies the plan to fresh guest RAM.
    fn load_kernel(
        size: u64,
        image: &[u8],
        cmdline: &str,
    ) -> Result<(GuestMem, BootPlan), LoadError> {
        let mem = create_guest_memory(size).unwrap();
        let plan = plan(image, cmdline, size)?;
        plan.write_memory(&mem).unwrap();
        Ok((mem, plan))
    }

    pub(super) fn blob_at(plan: &BootPlan, at: u64) -> &[u8] {
        plan.writes
            .iter()
            .find_map(|w| match w {
                MemWrite::Bytes { gpa, data } if *gpa == at => Some(&data[..]),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no blob at {at:#x} in {:?}", plan.writes))
    }

    pub(super) fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    pub(super) fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn loads_elf64_and_builds_tables() {
        let img = elf64(0x10_0000, 0x10_0000, 0x40, 0x1000);
        let (mem, plan) = load_kernel(16 << 20, &img, "").unwrap();
        let info = plan.info;
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
        assert_eq!(pde, (2 << 20) | PTE_PRESENT | PTE_WRITABLE | PTE_PS);
    }

    #[test]
    fn rejects_bad_images() {
        let size = 16 << 20;
        assert!(matches!(plan(b"", "", size), Err(LoadError::Empty)));
        assert!(matches!(
            plan(b"hello world, not a kernel", "", size),
            Err(LoadError::UnknownFormat)
        ));
        let img = elf64(0x10_0000, 0x10_0000, 0x40, 0x1000);
        assert!(matches!(
            plan(&img[..0x60], "", size),
            Err(LoadError::BadElf(_))
        ));
        assert!(matches!(
            plan(&img[..0x120], "", size),
            Err(LoadError::BadElf(_))
        ));
        let big = elf64(0x10_0000, 0x10_0000, 0x40, 64 << 20);
        assert!(matches!(
            plan(&big, "", size),
            Err(LoadError::DoesNotFit { .. })
        ));
        let low = elf64(0x1000, 0x1000, 0x40, 0x1000);
        assert!(matches!(
            plan(&low, "", size),
            Err(LoadError::OverlapsBootArea { .. })
        ));
        let mut arm = img.clone();
        arm[18] = 183;
        assert!(matches!(
            plan(&arm, "", size),
            Err(LoadError::WrongMachine(183))
        ));
        // A note past the end of the file passes our checks (we read only PT_LOAD);
        // linux-loader's own reading of it fails, and the plan reports linux-loader's error.
        let mut note = img.clone();
        note[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = 64 + 56;
        note[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        note[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes());
        note[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes());
        assert!(matches!(plan(&note, "", size), Err(LoadError::Elf(_))));
    }

    #[test]
    fn aout_kludge_multiboot() {
        let (mem, plan) = load_kernel(16 << 20, &aout_kludge(), "k").unwrap();
        let info = plan.info;
        assert_eq!(info.format, BootFormat::Multiboot);
        assert_eq!(info.entry, 0x10_0040);
        assert!(info.image_is_32bit);
        let regs = plan.bsp().regs;
        assert_eq!(regs.rax, 0x2BAD_B002);
        let upper: u32 = mem
            .read_obj(GuestAddress(layout::MULTIBOOT_INFO + 8))
            .unwrap();
        assert_eq!(upper, (15 << 20) >> 10);
        let b: u8 = mem.read_obj(GuestAddress(0x10_0050)).unwrap();
        assert_eq!(b, 0x90);
    }

    #[test]
    fn elf64_plan_blobs_and_entry() {
        let img = elf64(0x10_0010, 0x10_0000, 0x40, 0x1000);
        let plan = plan(&img, "", 16 << 20).unwrap();
        // The segment's file bytes, then its bss tail.
        assert_eq!(blob_at(&plan, 0x10_0000), &img[0x100..0x140]);
        assert!(plan.writes.contains(&MemWrite::Zero {
            gpa: 0x10_0040,
            len: 0x1000 - 0x40
        }));
        // The zero page: a whole page (a reset rewrites all of it), the setup header magic.
        let zero_page = blob_at(&plan, layout::BOOT_PARAMS);
        assert_eq!(zero_page.len(), 4096);
        assert_eq!(&zero_page[0x202..0x206], b"HdrS");
        let gdt = blob_at(&plan, layout::GDT);
        assert_eq!(gdt.len(), 32);
        assert_eq!(
            u64_at(gdt, BOOT_CS as usize) >> 53 & 1,
            1,
            "64-bit code (L=1)"
        );
        // 4 GiB identity-mapped with 16 MiB of RAM: PML4, PDPT and four PDs.
        assert_eq!(blob_at(&plan, layout::PML4).len(), 6 * 4096);
        assert_eq!(plan.vcpus.len(), 1);
        let bsp = plan.bsp();
        assert_eq!(bsp.regs.rip, 0x10_0010);
        assert_eq!(bsp.regs.rsi, layout::BOOT_PARAMS);
        assert_eq!(bsp.regs.rsp, layout::STACK_TOP);
        assert_eq!(bsp.regs.rflags, 0x2);
        assert_eq!(bsp.sregs.cs.selector, BOOT_CS);
        assert_eq!(bsp.sregs.cs.l, 1);
        assert_eq!(bsp.sregs.ss.selector, BOOT_DS);
        assert_eq!(bsp.sregs.cr3, layout::PML4);
        assert_eq!(bsp.sregs.cr0 >> 31, 1, "paging on");
        assert_eq!(bsp.sregs.efer, (1 << 8) | (1 << 10), "LME and LMA");
        assert_eq!((bsp.sregs.gdt.base, bsp.sregs.gdt.limit), (layout::GDT, 31));
        assert_eq!(plan.memory_map, layout::memory_map(16 << 20));
    }

    #[test]
    fn identity_map_covers_ram_above_4g() {
        let img = elf64(0x10_0000, 0x10_0000, 0x40, 0x1000);
        // 5 GiB of RAM ends at 6 GiB (the hole moves 1 GiB up): PML4, PDPT and six PDs.
        let plan = plan(&img, "", 5 << 30).unwrap();
        let tables = blob_at(&plan, layout::PML4);
        assert_eq!(tables.len(), 8 * 4096);
        let last_pd = 2 * 4096 + 5 * 4096;
        assert_eq!(
            u64_at(tables, last_pd + 8 * 511),
            ((6 << 30) - (2 << 20)) | PTE_PRESENT | PTE_WRITABLE | PTE_PS
        );
    }

    #[test]
    fn multiboot_plan_info_block_and_entry() {
        let plan = plan(&aout_kludge(), "console=ttyS0", 16 << 20).unwrap();
        let bsp = plan.bsp();
        assert_eq!(bsp.regs.rax, u64::from(MULTIBOOT_BOOTLOADER_MAGIC));
        assert_eq!(bsp.regs.rbx, layout::MULTIBOOT_INFO);
        assert_eq!(bsp.regs.rip, 0x10_0040);
        assert_eq!((bsp.sregs.cs.db, bsp.sregs.cs.l), (1, 0), "32-bit code");
        assert_eq!(bsp.sregs.cr0, 0x11, "PE and ET, paging off");
        assert_eq!((bsp.sregs.cr3, bsp.sregs.efer), (0, 0));
        let gdt = blob_at(&plan, layout::GDT);
        assert_eq!(
            u64_at(gdt, BOOT_CS as usize) >> 53 & 1,
            0,
            "32-bit code (L=0)"
        );
        // The loaded image and its bss.
        assert_eq!(blob_at(&plan, 0x10_0000), &aout_kludge()[..]);
        assert!(plan.writes.contains(&MemWrite::Zero {
            gpa: 0x10_1000,
            len: 0x1000
        }));

        let mbi = blob_at(&plan, layout::MULTIBOOT_INFO);
        assert_eq!(mbi.len(), INFO_AREA);
        let at = |a: u64| (a - layout::MULTIBOOT_INFO) as usize;
        assert_eq!(u32_at(mbi, 0), 1 | 4 | 64 | 512, "mem, cmdline, mmap, name");
        assert_eq!(u32_at(mbi, 4), 640);
        assert_eq!(u32_at(mbi, 8), 15 << 10);
        // The command line opens the strings area (no modules).
        assert_eq!(u32_at(mbi, 16) as u64, layout::BOOT_INFO);
        assert_eq!(blob_at(&plan, layout::BOOT_INFO), b"console=ttyS0\0");
        let name = at(layout::MULTIBOOT_LOADER_NAME);
        assert_eq!(&mbi[name..name + 7], b"kvmgdb\0");
        // The mmap is the plan's memory map, 24 bytes an entry.
        assert_eq!(u32_at(mbi, 44) as usize, 24 * plan.memory_map.len());
        assert_eq!(u32_at(mbi, 48) as u64, layout::MULTIBOOT_MMAP);
        for (i, r) in plan.memory_map.iter().enumerate() {
            let e = at(layout::MULTIBOOT_MMAP) + 24 * i;
            assert_eq!(u32_at(mbi, e), 20);
            assert_eq!(u64_at(mbi, e + 4), r.addr);
            assert_eq!(u64_at(mbi, e + 12), r.size);
            assert_eq!(u32_at(mbi, e + 20), r.kind as u32);
        }
    }

    #[test]
    fn multiboot_cmdline_is_passed_whole() {
        let long = "x".repeat(2000);
        let plan = plan(&aout_kludge(), &long, 16 << 20).unwrap();
        let strings = blob_at(&plan, layout::BOOT_INFO);
        assert_eq!((&strings[..2000], strings[2000]), (long.as_bytes(), 0));
    }

    #[test]
    fn memory_map_below_and_above_the_hole() {
        use MemoryKind::{Ram, Reserved};
        let range = |addr, size, kind| MemoryRange { addr, size, kind };
        let low = [
            range(0, 0x9_fc00, Ram),
            range(0x9_fc00, 0x400, Reserved),
            range(0xe_0000, 0x1_0000, Reserved),
            range(0xf_0000, 0x1_0000, Reserved),
        ];
        let m128 = plan(&aout_kludge(), "", 128 << 20).unwrap().memory_map;
        let mut want = low.to_vec();
        want.push(range(1 << 20, (128 << 20) - (1 << 20), Ram));
        assert_eq!(m128, want);
        // 5 GiB: 3 GiB below the hole, the other 2 GiB from 4 GiB.
        let m5g = plan(&aout_kludge(), "", 5 << 30).unwrap().memory_map;
        let mut want = low.to_vec();
        want.push(range(1 << 20, (3 << 30) - (1 << 20), Ram));
        want.push(range(4 << 30, 2 << 30, Ram));
        assert_eq!(m5g, want);
        assert_eq!(
            layout::upper_memory_kib(&m5g),
            ((3 << 30) - (1 << 20)) >> 10
        );
    }

    #[test]
    fn reapplying_a_plan_restores_memory() {
        let img = elf64(0x10_0000, 0x10_0000, 0x40, 0x1000);
        let (mem, plan) = load_kernel(16 << 20, &img, "").unwrap();
        let snapshot = |mem: &GuestMem| {
            let mut b = vec![0u8; 2 << 20];
            mem.read_slice(&mut b, GuestAddress(0)).unwrap();
            b
        };
        let fresh = snapshot(&mem);
        // The guest scribbles over its bss, its code and the boot structures.
        for at in [
            0x10_0800u64,
            0x10_0004,
            layout::GDT,
            layout::BOOT_PARAMS + 8,
            layout::BDA + 0x0e,
            layout::EBDA_START,
            crate::platform::ACPI_RSDP,
            crate::platform::ACPI_RSDP + 0x1000,
        ] {
            mem.write_obj(0xdead_beef_u32, GuestAddress(at)).unwrap();
        }
        plan.write_memory(&mem).unwrap();
        assert!(snapshot(&mem) == fresh);
    }
}
