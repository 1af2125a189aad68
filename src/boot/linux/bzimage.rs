//! Linux bzImage by the x86 boot protocol (Documentation/arch/x86/boot.rst): the setup
//! header's checks, the protected-mode kernel loaded at 1 MiB or its preferred address,
//! the zero page, and the 64-bit entry (load address + 0x200, identity mapped, RSI = zero
//! page) or, for a kernel without XLF_KERNEL_64, the 32-bit entry at `code32_start`
//! (paging off, ESI = zero page). memtest86+ ships as such a bzImage and boots the same way.
//!
//! linux-loader's `BzImage` loader is not used: it copies the protected-mode kernel into
//! guest memory, while a plan is data re-applied on reset, and it checks neither the
//! protocol version nor `xloadflags`. Its `bootparam` structures are.

use super::super::elf::{rd16, rd32};
use super::super::entry::{self, CpuMode};
use super::super::{BootFormat, BootInfo, BootPlan, BootRequest, LoadError, MemWrite, RamMap};
use super::{HDRS_MAGIC, boot_params, kernel_args};
use crate::boot::layout;
use linux_loader::loader::bootparam::{LOADED_HIGH, XLF_KERNEL_64, setup_header};
use vm_memory::ByteValued;

/// Where the setup header starts in the image (and in the zero page).
const SETUP_HEADER: usize = 0x1f1;
/// Where the "HdrS" magic sits.
pub(in crate::boot) const HDRS_OFFSET: usize = 0x202;
/// The byte whose value, plus 0x202, is the end of the setup header (the jump at 0x200).
const HEADER_END_BYTE: usize = 0x201;
/// Oldest protocol we boot: 2.06 (Linux 2.6.22) has `cmdline_size`, and the 32-bit entry
/// with its zero page is documented from 2.02 on.
const MIN_PROTOCOL: u16 = 0x0206;
/// `syssize` is meaningful from protocol 2.04.
const PROTOCOL_SYSSIZE: u16 = 0x0204;
/// `relocatable_kernel` exists from protocol 2.05.
const PROTOCOL_RELOCATABLE: u16 = 0x0205;
/// `pref_address` and `init_size` exist from protocol 2.10.
const PROTOCOL_INIT_SIZE: u16 = 0x020a;
/// `xloadflags` exists from protocol 2.12.
const PROTOCOL_XLOADFLAGS: u16 = 0x020c;
/// `initrd_addr_max` before protocol 2.03 was fixed (boot.rst).
const OLD_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;
/// Where a bzImage's protected-mode kernel is loaded, unless it is relocatable.
const HIGH_LOAD: u64 = 0x10_0000;
/// setup_sects 0 means 4 (boot.rst, setup_sects).
const DEFAULT_SETUP_SECTS: usize = 4;
const SECTOR: usize = 512;
/// The 64-bit entry's offset from the protected-mode kernel's load address (boot.rst,
/// "64-bit Boot Protocol").
const ENTRY64_OFFSET: u64 = 0x200;
/// How much memory a kernel before protocol 2.10 (which has no `init_size`) is assumed to
/// need, as a multiple of its protected-mode image: room to decompress itself.
const OLD_INIT_SIZE_FACTOR: u64 = 4;

/// True when the image carries a Linux setup header ("HdrS" at 0x202).
pub(in crate::boot) fn has_setup_header(image: &[u8]) -> bool {
    rd32(image, HDRS_OFFSET) == Some(HDRS_MAGIC)
}

/// Reads and checks the setup header of an image that [`has_setup_header`]: all of it must
/// be in `image`, the protocol at least 2.06 and the kernel a bzImage (LOADED_HIGH).
/// Everything it looks at lies in the first 0x300 bytes, so `check_prefix` calls it too.
pub(in crate::boot) fn parse_header(image: &[u8]) -> Result<setup_header, LoadError> {
    let end = HDRS_OFFSET + usize::from(image.get(HEADER_END_BYTE).copied().unwrap_or(0));
    if image.len() < end {
        return Err(LoadError::BzImageTruncated {
            what: "its setup header",
            need: end as u64,
            have: image.len() as u64,
        });
    }
    let mut hdr = setup_header::default();
    let dst = hdr.as_mut_slice();
    // A header longer than the struct (a newer protocol) has fields we do not know; one
    // shorter leaves the fields it lacks zero, as boot.rst asks.
    let n = dst.len().min(end - SETUP_HEADER);
    dst[..n].copy_from_slice(&image[SETUP_HEADER..SETUP_HEADER + n]);
    if hdr.version < MIN_PROTOCOL {
        return Err(LoadError::BzImageProtocol(hdr.version));
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err(LoadError::ZImage);
    }
    Ok(hdr)
}

/// The plan for a bzImage, entered by the 64-bit boot protocol when the kernel has one
/// (XLF_KERNEL_64), else by the 32-bit one.
pub(in crate::boot) fn plan(req: &BootRequest, ram: &RamMap) -> Result<BootPlan, LoadError> {
    let image = req.image;
    let mut hdr = parse_header(image)?;
    let version = hdr.version;
    let sects = match usize::from(hdr.setup_sects) {
        0 => DEFAULT_SETUP_SECTS,
        n => n,
    };
    let setup_size = (sects + 1) * SECTOR;
    let kernel =
        image
            .get(setup_size..)
            .filter(|k| !k.is_empty())
            .ok_or(LoadError::BzImageTruncated {
                what: "its setup code and protected-mode kernel",
                need: setup_size as u64 + 1,
                have: image.len() as u64,
            })?;
    // syssize counts 16-byte paragraphs, rounded up: memtest86+ does not pad its file to
    // the last paragraph (its x64.bin ends 8 bytes short of syssize * 16).
    let syssize = u64::from(hdr.syssize) * 16;
    if version >= PROTOCOL_SYSSIZE && syssize > (kernel.len() as u64).next_multiple_of(16) {
        return Err(LoadError::BzImageTruncated {
            what: "its protected-mode kernel (syssize)",
            need: (setup_size as u64) + syssize,
            have: image.len() as u64,
        });
    }
    let relocatable = version >= PROTOCOL_RELOCATABLE && hdr.relocatable_kernel != 0;
    let (pref, init_size) = if version >= PROTOCOL_INIT_SIZE {
        (hdr.pref_address, u64::from(hdr.init_size))
    } else {
        (HIGH_LOAD, kernel.len() as u64 * OLD_INIT_SIZE_FACTOR)
    };
    // A relocatable kernel would move itself to pref_address anyway (its decompressor
    // starts at the larger of the aligned load address and LOAD_PHYSICAL_ADDR, which
    // pref_address is), so loading it there saves that copy; a fixed one runs where
    // code32_start says.
    let load = if relocatable && pref >= HIGH_LOAD {
        pref
    } else {
        u64::from(hdr.code32_start)
    };
    if load < HIGH_LOAD {
        return Err(LoadError::BadBzImage(
            "its load address (code32_start) lies below 1 MiB",
        ));
    }
    // code32_start and the zero page's pointers are 32-bit: a kernel loaded above 4 GiB
    // would need the EFI handover's 64-bit fields, which this loader does not fill.
    if load >= 1 << 32 {
        return Err(LoadError::BadBzImage(
            "its preferred load address (pref_address) lies above 4 GiB",
        ));
    }
    // What the kernel occupies once it has decompressed: init_size bytes from where the
    // decompressor puts it.
    let align = u64::from(hdr.kernel_alignment).max(1);
    let runs_at = if relocatable {
        load.checked_next_multiple_of(align)
            .unwrap_or(load)
            .max(pref)
    } else {
        load
    };
    // (load is below 4 GiB and the image's length is far from u64::MAX: no overflow.)
    let kernel_end = (load + kernel.len() as u64).max(runs_at.saturating_add(init_size));
    ram.check_range(load, kernel_end)?;

    let cmdline_max = hdr.cmdline_size as usize;
    let initrd_addr_max = match hdr.initrd_addr_max {
        0 => OLD_INITRD_ADDR_MAX,
        n => n,
    };
    let args = kernel_args(req, ram, cmdline_max, initrd_addr_max.into(), kernel_end)?;
    hdr.code32_start = load as u32;
    // A setup_data list is the loader's to build (boot.rst: "write (special)"); we give none,
    // whatever the image's header held.
    hdr.setup_data = 0;
    let memory_map = ram.memory_map();
    let kernel64 = version >= PROTOCOL_XLOADFLAGS && hdr.xloadflags & XLF_KERNEL_64 != 0;
    let mode = if kernel64 {
        CpuMode::Long
    } else {
        CpuMode::Protected
    };
    let mut writes = vec![
        MemWrite::Bytes {
            gpa: load,
            data: kernel.to_vec(),
        },
        entry::gdt(mode),
        boot_params(hdr, &args, &memory_map),
    ];
    if kernel64 {
        writes.push(entry::identity_page_tables(ram.top()));
    }
    writes.extend(args.writes);
    let entry = if kernel64 {
        load + ENTRY64_OFFSET
    } else {
        load
    };
    let mut bsp = entry::entry_state(mode, entry);
    // Both protocols: the zero page in RSI / ESI; the 32-bit one also wants EBP, EDI and
    // EBX zero, which entry_state leaves them.
    bsp.regs.rsi = layout::BOOT_PARAMS;
    Ok(BootPlan {
        writes,
        vcpus: vec![bsp],
        memory_map,
        info: BootInfo {
            format: if kernel64 {
                BootFormat::BzImage64
            } else {
                BootFormat::BzImage32
            },
            entry,
            image_is_32bit: !kernel64,
            kernel_end,
        },
    })
}

/// What a non-ELF image without a Linux setup header or Multiboot header is, when it is
/// something we recognise but cannot boot: an EFI (PE/COFF) application, or a 16-bit boot
/// sector.
pub(in crate::boot) fn foreign_format(image: &[u8]) -> Option<LoadError> {
    const MZ: &[u8] = b"MZ";
    const PE_OFFSET_FIELD: usize = 0x3c;
    const PE_MAGIC: u32 = 0x0000_4550; // "PE\0\0"
    const BOOT_SIGNATURE_OFFSET: usize = 510;
    const BOOT_SIGNATURE: u16 = 0xaa55;
    if image.starts_with(MZ) {
        let pe = rd32(image, PE_OFFSET_FIELD).and_then(|o| usize::try_from(o).ok());
        if let Some(pe) = pe.filter(|&pe| rd32(image, pe) == Some(PE_MAGIC)) {
            let machine = rd16(image, pe + 4).unwrap_or(0);
            return Some(LoadError::PeImage(machine));
        }
    }
    if rd16(image, BOOT_SIGNATURE_OFFSET) == Some(BOOT_SIGNATURE) {
        return Some(LoadError::BootSector);
    }
    None
}

/// The name of a PE/COFF machine type (PE Format, "Machine Types").
pub(in crate::boot) fn pe_machine(machine: u16) -> &'static str {
    match machine {
        0x8664 => "x86-64",
        0x014c => "i386",
        0xaa64 => "ARM64",
        0x01c4 => "ARM",
        0x5064 => "RISC-V 64",
        0x6264 => "LoongArch 64",
        0x0ebc => "EFI byte code",
        _ => "an unknown machine",
    }
}

#[cfg(test)]
pub(in crate::boot) mod tests {
    use super::super::CMDLINE;
    use super::super::tests::{INITRD, blob, e820, modules, zero_page};
    use super::*;
    use crate::platform;

    /// A bzImage as `make bzImage` lays it out, with the fields a loader reads set like
    /// Debian's 6.1 kernel: protocol 2.15, relocatable, 64-bit, pref_address 16 MiB.
    /// `setup_sects` 3, then a protected-mode kernel of `kernel_len` bytes filled with a
    /// pattern.
    pub(in crate::boot) fn bzimage(kernel_len: usize) -> Vec<u8> {
        let setup = 4 * SECTOR;
        let mut img = vec![0u8; setup + kernel_len];
        img[..2].copy_from_slice(b"MZ");
        img[0x1f1] = 3; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x200] = 0xeb; // jmp
        img[0x201] = 0x6a; // header ends at 0x26c
        let put = |img: &mut Vec<u8>, off: usize, v: &[u8]| {
            img[off..off + v.len()].copy_from_slice(v);
        };
        put(&mut img, 0x1f4, &((kernel_len / 16) as u32).to_le_bytes()); // syssize
        put(&mut img, 0x202, b"HdrS");
        put(&mut img, 0x206, &0x020fu16.to_le_bytes());
        img[0x211] = LOADED_HIGH;
        put(&mut img, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
        put(&mut img, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        put(&mut img, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
        img[0x234] = 1; // relocatable_kernel
        put(&mut img, 0x236, &0x7fu16.to_le_bytes()); // xloadflags
        put(&mut img, 0x238, &2047u32.to_le_bytes()); // cmdline_size
        put(&mut img, 0x258, &0x100_0000u64.to_le_bytes()); // pref_address
        put(&mut img, 0x260, &0x40_0000u32.to_le_bytes()); // init_size
        for (i, b) in img[setup..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        img
    }

    fn plan_for(img: &[u8], cmdline: &str, ram: u64) -> Result<BootPlan, LoadError> {
        let mods = modules();
        let req = BootRequest {
            cmdline,
            modules: &mods,
            ..BootRequest::new(img, ram)
        };
        crate::boot::plan(&req)
    }

    #[test]
    fn bzimage64_loads_at_pref_address_with_a_filled_zero_page() {
        let img = bzimage(0x3000);
        let plan = plan_for(&img, "console=ttyS0 nokaslr", 64 << 20).unwrap();
        assert_eq!(plan.info.format, BootFormat::BzImage64);
        assert!(!plan.info.image_is_32bit);
        // The protected-mode kernel, at pref_address.
        assert_eq!(blob(&plan, 0x100_0000), &img[0x800..]);
        assert_eq!(plan.info.kernel_end, 0x140_0000, "pref_address + init_size");

        let bp = zero_page(&plan);
        let hdr = bp.hdr;
        // The setup header is the image's, with the loader's fields filled in.
        let mut want = setup_header::default();
        want.as_mut_slice()
            .copy_from_slice(&img[0x1f1..0x1f1 + std::mem::size_of::<setup_header>()]);
        want.type_of_loader = 0xff;
        want.code32_start = 0x100_0000;
        want.cmd_line_ptr = CMDLINE as u32;
        want.ramdisk_image = (64 << 20) - 0x1000;
        want.ramdisk_size = 16;
        assert_eq!(hdr, want);
        assert_eq!(blob(&plan, CMDLINE), b"console=ttyS0 nokaslr\0");
        assert_eq!(
            blob(&plan, (64 << 20) - 0x1000),
            INITRD,
            "the initrd: both modules"
        );
        assert_eq!({ bp.acpi_rsdp_addr }, platform::ACPI_RSDP);
        assert_eq!(e820(&bp), layout::memory_map(64 << 20));
        assert_eq!(plan.memory_map, layout::memory_map(64 << 20));

        // The 64-bit entry: load + 0x200, long mode, RSI = zero page, the identity map
        // covering the kernel, the zero page, the command line and the initrd (4 GiB).
        let bsp = plan.bsp();
        assert_eq!(bsp.regs.rip, 0x100_0200);
        assert_eq!(bsp.regs.rsi, layout::BOOT_PARAMS);
        assert_eq!(bsp.regs.rflags, 0x2, "interrupts off");
        assert_eq!((bsp.sregs.cs.selector, bsp.sregs.cs.l), (0x10, 1));
        assert_eq!((bsp.sregs.ds.selector, bsp.sregs.ss.selector), (0x18, 0x18));
        assert_eq!(bsp.sregs.cr3, layout::PML4);
        assert_eq!(
            blob(&plan, layout::PML4).len(),
            6 * 4096,
            "PML4, PDPT, 4 PDs"
        );
    }

    #[test]
    fn bzimage_without_kernel64_gets_the_32bit_entry() {
        let mut img = bzimage(0x3000);
        img[0x236] = 0; // xloadflags: no XLF_KERNEL_64 (memtest86+'s 32-bit build)
        img[0x234] = 0; // not relocatable: runs at code32_start
        let plan = plan_for(&img, "", 64 << 20).unwrap();
        assert_eq!(plan.info.format, BootFormat::BzImage32);
        assert!(plan.info.image_is_32bit);
        assert_eq!(blob(&plan, 0x10_0000), &img[0x800..]);
        let bsp = plan.bsp();
        assert_eq!(bsp.regs.rip, 0x10_0000, "code32_start");
        assert_eq!(bsp.regs.rsi, layout::BOOT_PARAMS);
        assert_eq!((bsp.regs.rbx, bsp.regs.rbp, bsp.regs.rdi), (0, 0, 0));
        assert_eq!((bsp.sregs.cs.selector, bsp.sregs.cs.db), (0x10, 1));
        assert_eq!(bsp.sregs.ds.selector, 0x18);
        assert_eq!(bsp.sregs.cr0 & (1 << 31), 0, "paging off");
        assert_eq!({ zero_page(&plan).hdr.code32_start }, 0x10_0000);
        assert_eq!(blob(&plan, CMDLINE), b"\0", "an empty command line");
    }

    #[test]
    fn memtest86plus_style_header_boots_at_1mib() {
        // memtest86+ v6/v7 x86-64: protocol 2.12, not relocatable, alignment 4 KiB,
        // XLF_KERNEL_64 | XLF_EFI_HANDOVER_64, cmdline_size 255, initrd_addr_max ~0.
        let mut img = bzimage(0x3000);
        img[0x206..0x208].copy_from_slice(&0x020cu16.to_le_bytes());
        img[0x22c..0x230].copy_from_slice(&u32::MAX.to_le_bytes());
        img[0x230..0x234].copy_from_slice(&4096u32.to_le_bytes());
        img[0x234] = 0;
        img[0x236..0x238].copy_from_slice(&0x9u16.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes());
        img[0x258..0x260].copy_from_slice(&0x10_0000u64.to_le_bytes());
        // Its file ends 8 bytes short of syssize's last paragraph (memtest86+ 6.10 x64.bin).
        img.truncate(img.len() - 8);
        let plan = plan_for(&img, "console=ttyS0,115200", 64 << 20).unwrap();
        assert_eq!(plan.info.format, BootFormat::BzImage64);
        assert_eq!(plan.bsp().regs.rip, 0x10_0200);
        assert_eq!(blob(&plan, 0x10_0000), &img[0x800..]);
        // Protocol 2.12 predates acpi_rsdp_addr.
        assert_eq!({ zero_page(&plan).acpi_rsdp_addr }, 0);
        let long = "x".repeat(256);
        assert!(matches!(
            plan_for(&img, &long, 64 << 20),
            Err(LoadError::CmdlineTooLong { len: 256, max: 255 })
        ));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let msg = |img: &[u8]| plan_for(img, "", 64 << 20).unwrap_err().to_string();
        let mut old = bzimage(0x3000);
        old[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
        assert_eq!(
            msg(&old),
            "the Linux kernel speaks boot protocol 2.04; kvmgdb boots 2.06 (Linux 2.6.22) and later"
        );
        let mut zimage = bzimage(0x3000);
        zimage[0x211] = 0;
        assert!(msg(&zimage).contains("zImage"), "{}", msg(&zimage));
        let img = bzimage(0x3000);
        assert_eq!(
            msg(&img[..0x240]),
            "the Linux bzImage is truncated: its setup header needs 620 bytes, the file has 576"
        );
        assert_eq!(
            msg(&img[..0x800]),
            "the Linux bzImage is truncated: its setup code and protected-mode kernel needs 2049 bytes, the file has 2048"
        );
        assert_eq!(
            msg(&img[..0x2000]),
            "the Linux bzImage is truncated: its protected-mode kernel (syssize) needs 14336 bytes, the file has 8192"
        );
        // init_size beyond RAM.
        assert!(matches!(
            plan_for(&img, "", 16 << 20),
            Err(LoadError::DoesNotFit {
                start: 0x100_0000,
                end: 0x140_0000,
                ..
            })
        ));
        let mut low = bzimage(0x3000);
        low[0x234] = 0;
        low[0x214..0x218].copy_from_slice(&0x9_0000u32.to_le_bytes());
        assert!(msg(&low).contains("below 1 MiB"), "{}", msg(&low));
    }

    /// Hostile header values: every byte of the setup header set to 0, 0x80 and 0xff in
    /// turn gives a plan or an error, never a panic (and never a kernel below 1 MiB or a
    /// zero page pointing outside it).
    #[test]
    fn every_header_byte_mutated_plans_or_refuses() {
        let good = bzimage(0x3000);
        for off in 0x1f1..0x270 {
            for v in [0u8, 0x80, 0xff] {
                let mut img = good.clone();
                img[off] = v;
                if let Ok(plan) = plan_for(&img, "", 64 << 20) {
                    let hdr = zero_page(&plan).hdr;
                    assert!(hdr.code32_start >= 0x10_0000, "byte {off:#x} = {v:#x}");
                    assert_eq!(hdr.cmd_line_ptr as u64, CMDLINE);
                    assert_eq!({ hdr.setup_data }, 0);
                }
            }
        }
    }

    #[test]
    fn images_we_cannot_boot_are_named() {
        // An EFI application: MZ, PE\0\0 at e_lfanew, machine x86-64, no HdrS.
        let mut pe = vec![0u8; 0x400];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        let err = plan_for(&pe, "", 64 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a PE/COFF image for x86-64 without a Linux boot header (an EFI application): kvmgdb has no UEFI firmware to run it"
        );
        assert!(matches!(
            crate::boot::check_prefix(&pe),
            Err(LoadError::PeImage(0x8664))
        ));
        // A boot sector.
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        let err = plan_for(&mbr, "", 64 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a 16-bit boot sector (signature 0x55AA at offset 510, no Linux boot header): kvmgdb has no BIOS to run it"
        );
        assert!(matches!(
            crate::boot::check_prefix(&mbr),
            Err(LoadError::BootSector)
        ));
        // A bzImage is both, and boots: its header decides.
        assert!(crate::boot::check_prefix(&bzimage(0x3000)).is_ok());
        let mut old = bzimage(0x3000);
        old[0x206..0x208].copy_from_slice(&0x0201u16.to_le_bytes());
        assert!(matches!(
            crate::boot::check_prefix(&old),
            Err(LoadError::BzImageProtocol(0x0201))
        ));
    }
}
