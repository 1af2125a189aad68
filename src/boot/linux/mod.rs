//! Linux's boot protocols (Documentation/arch/x86/boot.rst): what the bzImage loader
//! ([`bzimage`]), the PVH entry of a vmlinux ([`pvh`]) and the 64-bit entry of any ELF64
//! share: the command line, the initrd and the `boot_params` "zero page" with its e820 map.
//!
//! Where they go: `boot_params` (or PVH's `hvm_start_info`) in the page at
//! [`layout::BOOT_PARAMS`], the command line in the page after it ([`CMDLINE`]), the initrd
//! as high in RAM below 4 GiB as the kernel allows, as boot loaders place it.

pub(super) mod bzimage;
pub(super) mod pvh;

use super::layout::{self, MemoryRange};
use super::{BootRequest, LoadError, MemWrite, RamMap};
use crate::platform;
use crate::x86::PAGE_SIZE;
use linux_loader::loader::bootparam::{
    E820_MAX_ENTRIES_ZEROPAGE, LOADED_HIGH, boot_e820_entry, boot_params, setup_header,
};
use vm_memory::ByteValued;

/// Size of `boot_params`, the "zero page" (boot.rst, "The zero page").
pub(super) const BOOT_PARAMS_SIZE: usize = 4096;
const _: () = assert!(std::mem::size_of::<boot_params>() == BOOT_PARAMS_SIZE);

/// The kernel command line's page: between the zero page and the identity page tables.
/// (A candidate for `layout`, which another part of the boot owns; kept here with the
/// assertion below until it moves.)
pub(super) const CMDLINE: u64 = 0x8000;
/// Bytes the command line's page holds, its terminating NUL included.
pub(super) const CMDLINE_SLOT: usize = 4096;
const _: () = assert!(
    layout::BOOT_PARAMS + BOOT_PARAMS_SIZE as u64 <= CMDLINE
        && CMDLINE + CMDLINE_SLOT as u64 <= layout::PML4
);

/// The setup header's magic at offset 0x202 of a bzImage: "HdrS".
pub(super) const HDRS_MAGIC: u32 = 0x5372_6448;
/// The boot sector signature in `boot_flag` (offset 0x1fe).
const BOOT_FLAG: u16 = 0xaa55;
/// `type_of_loader` for a boot loader without an assigned id (boot.rst, type_of_loader).
pub(super) const LOADER_UNDEFINED: u8 = 0xff;
/// The highest address a 64-bit kernel lets its initrd occupy when no setup header says
/// otherwise: the value x86-64 kernels put in `initrd_addr_max`.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
/// The boot protocol kvmgdb implements, put in the header it makes up for an ELF kernel.
const PROTOCOL_VERSION: u16 = 0x020f;

/// The initrd: every module in order, each padded with zeros to a multiple of 4 bytes.
/// Linux unpacks concatenated cpio archives (compressed or not) and skips zero padding
/// between them, but a cpio header must start 4-byte aligned (init/initramfs.c), so the
/// padding keeps every archive after the first readable. `None` without modules.
pub(super) fn initrd_image(req: &BootRequest) -> Option<Vec<u8>> {
    if req.modules.is_empty() {
        return None;
    }
    let total: usize = req
        .modules
        .iter()
        .map(|m| m.data.len().next_multiple_of(4))
        .sum();
    let mut data = Vec::with_capacity(total);
    for m in req.modules {
        data.extend_from_slice(&m.data);
        data.resize(data.len().next_multiple_of(4), 0);
    }
    Some(data)
}

/// Where the initrd went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Initrd {
    /// First guest-physical byte.
    pub(super) addr: u64,
    /// Its length in bytes.
    pub(super) size: u64,
}

/// What every Linux entry hands the kernel besides its image: the command line (always
/// written, empty or not, so `cmd_line_ptr` is never 0) and the initrd.
pub(super) struct KernelArgs {
    /// The writes that put them in RAM.
    pub(super) writes: Vec<MemWrite>,
    /// The initrd, if there are modules.
    pub(super) initrd: Option<Initrd>,
}

/// Lays out `req`'s command line (at most `cmdline_max` bytes, the kernel's
/// `cmdline_size`) and initrd (page aligned, as high as possible with its last byte at or
/// below `initrd_addr_max`, below the 4 GiB hole and above `kernel_end`, the end of what
/// the kernel occupies).
pub(super) fn kernel_args(
    req: &BootRequest,
    ram: &RamMap,
    cmdline_max: usize,
    initrd_addr_max: u64,
    kernel_end: u64,
) -> Result<KernelArgs, LoadError> {
    let max = cmdline_max.min(CMDLINE_SLOT - 1);
    let cmdline = req.cmdline.as_bytes();
    if cmdline.len() > max {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut line = cmdline.to_vec();
    line.push(0);
    let mut writes = vec![MemWrite::Bytes {
        gpa: CMDLINE,
        data: line,
    }];
    let initrd = match initrd_image(req) {
        None => None,
        Some(data) => {
            let size = data.len() as u64;
            let addr = place_initrd(size, kernel_end, initrd_addr_max, ram)?;
            writes.push(MemWrite::Bytes { gpa: addr, data });
            Some(Initrd { addr, size })
        }
    };
    Ok(KernelArgs { writes, initrd })
}

/// [`kernel_args`] for an ELF kernel, which has no setup header to state its limits: the
/// command line may fill its page, the initrd end at [`DEFAULT_INITRD_ADDR_MAX`].
pub(super) fn elf_kernel_args(
    req: &BootRequest,
    ram: &RamMap,
    kernel_end: u64,
) -> Result<KernelArgs, LoadError> {
    kernel_args(
        req,
        ram,
        CMDLINE_SLOT - 1,
        DEFAULT_INITRD_ADDR_MAX,
        kernel_end,
    )
}

/// The highest page-aligned address for `size` bytes of initrd that ends within RAM below
/// the 4 GiB hole, has its last byte at or below `addr_max`, and starts at or above `floor`.
fn place_initrd(size: u64, floor: u64, addr_max: u64, ram: &RamMap) -> Result<u64, LoadError> {
    let low_end = ram
        .ranges
        .first()
        .map_or(0, |r| r.1)
        .min(crate::memory::MMIO_HOLE_START);
    let limit = low_end.min(addr_max.saturating_add(1));
    let floor = floor.next_multiple_of(PAGE_SIZE);
    limit
        .checked_sub(size)
        .map(|top| top & !(PAGE_SIZE - 1))
        .filter(|&addr| addr >= floor)
        .ok_or(LoadError::InitrdDoesNotFit { size, floor, limit })
}

/// The zero page for `hdr` (the kernel's setup header, already adjusted by the loader): the
/// fields boot.rst says a boot loader fills for the 32- and 64-bit protocols — loader type,
/// command line, initrd, the e820 map — and the ACPI RSDP where the kernel reads it
/// (protocol 2.14 and later).
pub(super) fn boot_params(
    mut hdr: setup_header,
    args: &KernelArgs,
    memory_map: &[MemoryRange],
) -> MemWrite {
    hdr.type_of_loader = LOADER_UNDEFINED;
    hdr.cmd_line_ptr = CMDLINE as u32;
    let (image, size) = args.initrd.map_or((0, 0), |i| (i.addr, i.size));
    // place_initrd keeps the initrd below 4 GiB, so the ext_ fields stay 0.
    hdr.ramdisk_image = image as u32;
    hdr.ramdisk_size = size as u32;
    let mut bp = boot_params {
        hdr,
        ..Default::default()
    };
    if hdr.version >= 0x020e {
        bp.acpi_rsdp_addr = platform::ACPI_RSDP;
    }
    // The map has a handful of entries; the zero page holds 128 (more would go in a
    // SETUP_E820_EXT setup_data, which no map of ours needs).
    let entries = memory_map.len().min(E820_MAX_ENTRIES_ZEROPAGE);
    for (slot, r) in bp.e820_table.iter_mut().zip(&memory_map[..entries]) {
        *slot = boot_e820_entry {
            addr: r.addr,
            size: r.size,
            r#type: r.kind as u32,
        };
    }
    bp.e820_entries = entries as u8;
    MemWrite::Bytes {
        gpa: layout::BOOT_PARAMS,
        data: bp.as_slice().to_vec(),
    }
}

/// The zero page an ELF64 kernel entered at `e_entry` gets in RSI: a Linux vmlinux reads it
/// by the 64-bit boot protocol, and a bare-metal kernel that ignores RSI loses nothing. It
/// has no setup header to copy, so it gets the one a bzImage of [`PROTOCOL_VERSION`] would
/// carry, reduced to the fields a kernel reads: magic, version, LOADED_HIGH, and the
/// command line and initrd (the command line's limit is its page; the initrd stays at or
/// below [`DEFAULT_INITRD_ADDR_MAX`]).
pub(super) fn elf64_boot_params(
    req: &BootRequest,
    ram: &RamMap,
    kernel_end: u64,
) -> Result<Vec<MemWrite>, LoadError> {
    let args = elf_kernel_args(req, ram, kernel_end)?;
    let hdr = setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        version: PROTOCOL_VERSION,
        loadflags: LOADED_HIGH,
        cmdline_size: (CMDLINE_SLOT - 1) as u32,
        initrd_addr_max: DEFAULT_INITRD_ADDR_MAX as u32,
        ..Default::default()
    };
    let mut writes = vec![boot_params(hdr, &args, &ram.memory_map())];
    writes.extend(args.writes);
    Ok(writes)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::boot::{BootPlan, Module};

    /// The bytes of the write at `at` in `plan`.
    pub(crate) fn blob(plan: &BootPlan, at: u64) -> &[u8] {
        plan.writes
            .iter()
            .find_map(|w| match w {
                MemWrite::Bytes { gpa, data } if *gpa == at => Some(&data[..]),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no write at {at:#x}"))
    }

    /// The zero page of `plan`.
    pub(crate) fn zero_page(plan: &BootPlan) -> boot_params {
        let mut bp = boot_params::default();
        bp.as_mut_slice()
            .copy_from_slice(blob(plan, layout::BOOT_PARAMS));
        bp
    }

    /// The initrd [`modules`] make: each padded to 4 bytes.
    pub(crate) const INITRD: &[u8] = b"07070\x00\x00\x000707010\x00";

    /// Two modules for `-initrd a,b`.
    pub(crate) fn modules() -> Vec<Module> {
        vec![
            Module {
                cmdline: "a.cpio".into(),
                data: b"07070".to_vec(),
            },
            Module {
                cmdline: "b.cpio".into(),
                data: b"0707010".to_vec(),
            },
        ]
    }

    /// The e820 table of `bp` as the memory map it came from.
    pub(crate) fn e820(bp: &boot_params) -> Vec<MemoryRange> {
        let table = bp.e820_table;
        table[..bp.e820_entries as usize]
            .iter()
            .map(|e| MemoryRange {
                addr: e.addr,
                size: e.size,
                kind: match e.r#type {
                    1 => layout::MemoryKind::Ram,
                    _ => layout::MemoryKind::Reserved,
                },
            })
            .collect()
    }

    #[test]
    fn initrd_is_the_modules_each_padded_to_four_bytes() {
        let mods = modules();
        let req = BootRequest {
            modules: &mods,
            ..BootRequest::new(b"", 64 << 20)
        };
        assert_eq!(initrd_image(&req).unwrap(), INITRD.to_vec());
        assert_eq!(initrd_image(&BootRequest::new(b"", 64 << 20)), None);
    }

    #[test]
    fn initrd_goes_high_below_every_limit() {
        let ram = RamMap::new(64 << 20);
        // Top of RAM, page aligned down.
        assert_eq!(
            place_initrd(0x1800, 0x20_0000, u64::MAX, &ram).ok(),
            Some((64 << 20) - 0x2000)
        );
        // initrd_addr_max is the last byte it may occupy.
        assert_eq!(
            place_initrd(0x1000, 0x20_0000, 0x1ff_ffff, &ram).ok(),
            Some(0x1ff_f000)
        );
        // Above 3 GiB of RAM, it stays below the hole.
        let big = RamMap::new(5 << 30);
        assert_eq!(
            place_initrd(0x1000, 0x20_0000, u64::MAX, &big).ok(),
            Some((3 << 30) - 0x1000)
        );
        assert!(matches!(
            place_initrd(63 << 20, 2 << 20, u64::MAX, &ram),
            Err(LoadError::InitrdDoesNotFit {
                size: 0x3f0_0000,
                floor: 0x20_0000,
                limit: 0x400_0000
            })
        ));
        let msg = place_initrd(63 << 20, 2 << 20, u64::MAX, &ram)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("give more with --memory"), "{msg}");
    }

    #[test]
    fn elf64_zero_page_has_cmdline_initrd_and_e820() {
        let mods = modules();
        let ram = RamMap::new(64 << 20);
        let req = BootRequest {
            cmdline: "console=ttyS0",
            modules: &mods,
            ..BootRequest::new(b"", 64 << 20)
        };
        let writes = elf64_boot_params(&req, &ram, 0x20_0000).unwrap();
        let plan = BootPlan {
            writes,
            vcpus: Vec::new(),
            memory_map: Vec::new(),
            info: crate::boot::BootInfo {
                format: crate::boot::BootFormat::Elf64,
                entry: 0,
                image_is_32bit: false,
                kernel_end: 0,
            },
        };
        let bp = zero_page(&plan);
        let hdr = bp.hdr;
        assert_eq!(
            (hdr.header, hdr.version, hdr.boot_flag),
            (HDRS_MAGIC, 0x020f, 0xaa55)
        );
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!(hdr.cmd_line_ptr as u64, CMDLINE);
        assert_eq!(blob(&plan, CMDLINE), b"console=ttyS0\0");
        let (image, size) = (hdr.ramdisk_image as u64, hdr.ramdisk_size);
        assert_eq!(size, 16);
        assert_eq!(image, (64 << 20) - 0x1000);
        assert_eq!(blob(&plan, image), INITRD);
        assert_eq!({ bp.acpi_rsdp_addr }, platform::ACPI_RSDP);
        assert_eq!(e820(&bp), layout::memory_map(64 << 20));
    }

    #[test]
    fn cmdline_longer_than_the_kernel_takes_is_refused() {
        let ram = RamMap::new(64 << 20);
        let long = "x".repeat(300);
        let req = BootRequest {
            cmdline: &long,
            ..BootRequest::new(b"", 64 << 20)
        };
        let err = kernel_args(&req, &ram, 255, u64::MAX, 0x20_0000)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "the kernel command line is 300 bytes long; this kernel takes at most 255"
        );
        assert!(kernel_args(&req, &ram, 2047, u64::MAX, 0x20_0000).is_ok());
    }
}
