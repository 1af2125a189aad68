//! PVH: a vmlinux (or any ELF) whose `XEN_ELFNOTE_PHYS32_ENTRY` note names a 32-bit
//! entry point (Xen's docs/misc/pvh.pandoc, "x86/HVM direct boot ABI"). The kernel starts
//! there in 32-bit protected mode with paging off and EBX pointing at an `hvm_start_info`
//! (xen/include/public/arch-x86/hvm/start_info.h) of version 1: command line, the initrd
//! as module 0, the memory map, and the ACPI RSDP. linux-loader's ELF loader finds the
//! note; its `start_info` structures give the layout.

use super::super::entry::{self, CpuMode};
use super::super::{BootFormat, BootInfo, BootPlan, BootRequest, LoadError, MemWrite, RamMap};
use super::{CMDLINE, elf_kernel_args};
use crate::boot::layout::{self, MemoryRange};
use crate::platform;
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use std::mem::size_of;

/// `hvm_start_info.magic`: "xEn3" with the 0x80 bit of the "E" set.
pub(in crate::boot) const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Version 1 has the memory map; a kernel given version 0 asks Xen for it by hypercall.
const START_INFO_VERSION: u32 = 1;
/// Where the start info goes: the zero page's page (a PVH boot has no zero page).
pub(in crate::boot) const START_INFO: u64 = layout::BOOT_PARAMS;
/// The module list follows it.
const MODLIST: u64 = START_INFO + 0x40;
/// The memory map follows the (one-entry) module list.
const MEMMAP: u64 = MODLIST + 0x40;
/// End of the page.
const START_INFO_END: u64 = START_INFO + super::BOOT_PARAMS_SIZE as u64;
const _: () = assert!(
    size_of::<hvm_start_info>() as u64 <= MODLIST - START_INFO
        && size_of::<hvm_modlist_entry>() as u64 <= MEMMAP - MODLIST
);

/// The plan for an ELF whose segments `writes` already loads (ending at `kernel_end`),
/// entered at its PVH note's `entry`; `image_is_32bit` for an ELF32.
pub(in crate::boot) fn plan(
    req: &BootRequest,
    ram: &RamMap,
    mut writes: Vec<MemWrite>,
    entry: u64,
    kernel_end: u64,
    image_is_32bit: bool,
) -> Result<BootPlan, LoadError> {
    let memory_map = ram.memory_map();
    let args = elf_kernel_args(req, ram, kernel_end)?;
    writes.push(entry::gdt(CpuMode::Protected));
    writes.push(start_info(args.initrd, &memory_map));
    writes.extend(args.writes);
    // pvh.pandoc: CR0.PE only, CR4 0, flat 32-bit CS/DS/ES, an active 32-bit TSS of limit
    // 0x67, IF/TF/VM clear — the protected-mode entry state, whose TR is a busy TSS
    // (type 11) of that limit.
    let mut bsp = entry::entry_state(CpuMode::Protected, entry);
    bsp.regs.rbx = START_INFO;
    Ok(BootPlan {
        writes,
        vcpus: vec![bsp],
        memory_map,
        info: BootInfo {
            format: BootFormat::Pvh,
            entry,
            // An ELF64 keeps gdb on the x86-64 registers even while the kernel runs its
            // 32-bit entry, as on QEMU; an ELF32 kernel is i386 throughout.
            image_is_32bit,
            kernel_end,
        },
    })
}

/// The start info page: `hvm_start_info`, the module list and the memory map, the command
/// line being at [`CMDLINE`].
fn start_info(initrd: Option<super::Initrd>, memory_map: &[MemoryRange]) -> MemWrite {
    let max_entries = (START_INFO_END - MEMMAP) as usize / size_of::<hvm_memmap_table_entry>();
    let entries = memory_map.len().min(max_entries);
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() { MODLIST } else { 0 },
        cmdline_paddr: CMDLINE,
        rsdp_paddr: platform::ACPI_RSDP,
        memmap_paddr: MEMMAP,
        memmap_entries: entries as u32,
        reserved: 0,
    };
    let mut page = vec![0u8; super::BOOT_PARAMS_SIZE];
    let mut put = |at: u64, fields: &[u64], widths: &[usize]| {
        let mut off = (at - START_INFO) as usize;
        for (&v, &w) in fields.iter().zip(widths) {
            page[off..off + w].copy_from_slice(&v.to_le_bytes()[..w]);
            off += w;
        }
    };
    put(
        START_INFO,
        &[
            info.magic.into(),
            info.version.into(),
            info.flags.into(),
            info.nr_modules.into(),
            info.modlist_paddr,
            info.cmdline_paddr,
            info.rsdp_paddr,
            info.memmap_paddr,
            info.memmap_entries.into(),
            info.reserved.into(),
        ],
        &[4, 4, 4, 4, 8, 8, 8, 8, 4, 4],
    );
    if let Some(i) = initrd {
        let m = hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            cmdline_paddr: 0,
            reserved: 0,
        };
        put(
            MODLIST,
            &[m.paddr, m.size, m.cmdline_paddr, m.reserved],
            &[8; 4],
        );
    }
    let entry_size = size_of::<hvm_memmap_table_entry>() as u64;
    for (i, r) in memory_map[..entries].iter().enumerate() {
        // The memory map types are e820's (XEN_HVM_MEMMAP_TYPE_RAM = 1, ...).
        let e = hvm_memmap_table_entry {
            addr: r.addr,
            size: r.size,
            type_: r.kind as u32,
            reserved: 0,
        };
        put(
            MEMMAP + i as u64 * entry_size,
            &[e.addr, e.size, e.type_.into(), e.reserved.into()],
            &[8, 8, 4, 4],
        );
    }
    MemWrite::Bytes {
        gpa: START_INFO,
        data: page,
    }
}

#[cfg(test)]
pub(in crate::boot) mod tests {
    use super::super::tests::{INITRD, blob, modules};
    use super::*;
    use crate::boot::elf::PT_LOAD;
    use crate::boot::tests::elf64_file;
    use crate::boot::tests::{u32_at, u64_at};

    /// An ELF64 vmlinux in miniature: one PT_LOAD of 0x100 bytes at 16 MiB (virtual
    /// 0xffffffff81000000, e_entry its physical start) and a PT_NOTE holding a GNU note
    /// then, when `pvh` is given, the Xen PHYS32_ENTRY note with that address.
    pub(in crate::boot) fn vmlinux(pvh: Option<u32>) -> Vec<u8> {
        let mut f = elf64_file(0x300, 0x100_0000, 2);
        let ph = |f: &mut Vec<u8>, i: usize, fields: [u64; 6], p_type: u32| {
            let at = 64 + 56 * i;
            f[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
            for (k, v) in fields.iter().enumerate() {
                f[at + 8 + 8 * k..at + 16 + 8 * k].copy_from_slice(&v.to_le_bytes());
            }
        };
        let load = [0x200, 0xffff_ffff_8100_0000, 0x100_0000, 0x100, 0x1000, 0];
        ph(&mut f, 0, load, PT_LOAD);
        // Notes: (namesz, descsz, type, name, desc), 4-byte aligned.
        let mut notes = Vec::new();
        let mut note = |name: &[u8], ty: u32, desc: &[u8]| {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&ty.to_le_bytes());
            notes.extend_from_slice(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        };
        note(b"GNU\0", 3, &[0xab; 20]);
        if let Some(entry) = pvh {
            note(b"Xen\0", 18, &u64::from(entry).to_le_bytes());
        }
        let n = notes.len() as u64;
        ph(&mut f, 1, [0x180, 0, 0, n, n, 0], 4);
        f[0x180..0x180 + notes.len()].copy_from_slice(&notes);
        for (i, b) in f[0x200..0x300].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    #[test]
    fn pvh_note_gives_the_32bit_entry_with_start_info() {
        let img = vmlinux(Some(0x100_0040));
        let mods = modules();
        let req = BootRequest {
            cmdline: "console=ttyS0",
            modules: &mods,
            ..BootRequest::new(&img, 64 << 20)
        };
        let plan = crate::boot::plan(&req).unwrap();
        assert_eq!(plan.info.format, BootFormat::Pvh);
        assert_eq!(plan.info.entry, 0x100_0040);
        assert!(!plan.info.image_is_32bit);
        assert_eq!(blob(&plan, 0x100_0000), &img[0x200..0x300]);
        let bsp = plan.bsp();
        assert_eq!(bsp.regs.rip, 0x100_0040);
        assert_eq!(bsp.regs.rbx, START_INFO);
        assert_eq!(bsp.regs.rflags, 0x2);
        assert_eq!(
            (bsp.sregs.cr0, bsp.sregs.cr4, bsp.sregs.efer),
            (0x11, 0, 0),
            "PE (and the fixed ET), no paging"
        );
        assert_eq!((bsp.sregs.cs.db, bsp.sregs.cs.l), (1, 0), "32-bit code");
        assert_eq!((bsp.sregs.cs.base, bsp.sregs.cs.limit), (0, 0xffff_ffff));
        assert_eq!((bsp.sregs.ds.base, bsp.sregs.ds.limit), (0, 0xffff_ffff));
        assert_eq!(
            (bsp.sregs.tr.type_, bsp.sregs.tr.base, bsp.sregs.tr.limit),
            (11, 0, 0x67),
            "an active 32-bit TSS"
        );

        let page = blob(&plan, START_INFO);
        let at = |a: u64| (a - START_INFO) as usize;
        assert_eq!(u32_at(page, 0), 0x336e_c578, "magic");
        assert_eq!(u32_at(page, 4), 1, "version");
        assert_eq!(u32_at(page, 12), 1, "nr_modules");
        assert_eq!(u64_at(page, 16), MODLIST);
        assert_eq!(u64_at(page, 24), CMDLINE);
        assert_eq!(u64_at(page, 32), platform::ACPI_RSDP);
        assert_eq!(u64_at(page, 40), MEMMAP);
        let map = layout::memory_map(64 << 20);
        assert_eq!(u32_at(page, 48) as usize, map.len());
        assert_eq!(blob(&plan, CMDLINE), b"console=ttyS0\0");
        // Module 0: the initrd, at the top of RAM.
        let initrd = u64_at(page, at(MODLIST));
        assert_eq!(initrd, (64 << 20) - 0x1000);
        assert_eq!(u64_at(page, at(MODLIST) + 8), 16);
        assert_eq!(blob(&plan, initrd), INITRD);
        for (i, r) in map.iter().enumerate() {
            let e = at(MEMMAP) + 24 * i;
            assert_eq!(u64_at(page, e), r.addr);
            assert_eq!(u64_at(page, e + 8), r.size);
            assert_eq!(u32_at(page, e + 16), r.kind as u32);
        }
        assert_eq!(plan.memory_map, map);
    }

    #[test]
    fn pvh_without_modules_has_no_module_list() {
        let img = vmlinux(Some(0x100_0040));
        let plan = crate::boot::plan(&BootRequest::new(&img, 64 << 20)).unwrap();
        let page = blob(&plan, START_INFO);
        assert_eq!((u32_at(page, 12), u64_at(page, 16)), (0, 0));
        assert_eq!(blob(&plan, CMDLINE), b"\0");
    }

    /// An ELF32 in the same shape as [`vmlinux`]: one PT_LOAD of 0x100 bytes at 16 MiB and
    /// a PT_NOTE of `notes`.
    fn elf32(notes: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x300];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4..7].copy_from_slice(&[1, 1, 1]);
        f[16] = 2;
        f[18] = 3; // EM_386
        let put32 =
            |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut f, 24, 0x100_0000); // e_entry
        put32(&mut f, 28, 52); // e_phoff
        f[42..44].copy_from_slice(&32u16.to_le_bytes());
        f[44..46].copy_from_slice(&2u16.to_le_bytes());
        // PT_LOAD: offset, vaddr, paddr, filesz, memsz.
        put32(&mut f, 52, PT_LOAD);
        for (k, v) in [0x200, 0x100_0000, 0x100_0000, 0x100, 0x1000]
            .iter()
            .enumerate()
        {
            put32(&mut f, 56 + 4 * k, *v);
        }
        put32(&mut f, 84, 4); // PT_NOTE
        put32(&mut f, 88, 0x180);
        put32(&mut f, 100, notes.len() as u32);
        f[0x180..0x180 + notes.len()].copy_from_slice(notes);
        f
    }

    #[test]
    fn elf32_pvh_note_is_read_here() {
        let mut note = Vec::new();
        for v in [4u32, 4, 18] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&0x100_0010u32.to_le_bytes());
        let plan = crate::boot::plan(&BootRequest::new(&elf32(&note), 64 << 20)).unwrap();
        assert_eq!(plan.info.format, BootFormat::Pvh);
        assert!(plan.info.image_is_32bit);
        assert_eq!(plan.bsp().regs.rip, 0x100_0010);
        assert_eq!(plan.bsp().regs.rbx, START_INFO);
        // A note whose descriptor runs past its segment is a corrupt ELF.
        let cut = crate::boot::plan(&BootRequest::new(&elf32(&note[..18]), 64 << 20));
        assert!(matches!(cut, Err(LoadError::BadElf(_))), "{cut:?}");
        // Another vendor's note of type 18 is not the PVH entry.
        note[12..16].copy_from_slice(b"GNU\0");
        let other = crate::boot::plan(&BootRequest::new(&elf32(&note), 64 << 20));
        assert!(
            matches!(other, Err(LoadError::Elf32WithoutMultiboot)),
            "{other:?}"
        );
    }

    #[test]
    fn a_pvh_entry_outside_the_image_is_refused() {
        let img = vmlinux(Some(0x200_0000));
        let err = crate::boot::plan(&BootRequest::new(&img, 64 << 20)).unwrap_err();
        assert!(matches!(err, LoadError::EntryOutsideImage(0x200_0000)));
    }
}
