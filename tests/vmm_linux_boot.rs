//! The Linux boot protocols on real KVM, with hand-made kernels: a 64-bit bzImage, a 32-bit
//! bzImage and a PVH ELF each echo the command line they are handed (found through the
//! register the protocol names) on COM1, then exit through isa-debug-exit with the number
//! of memory-map entries they were given. Debian's real kernel is booted by the tests of
//! the Linux tier; these pin the entry registers and the structures they point to.

mod vmm_support;

use kvmgdb::boot::{self, BootRequest};
use kvmgdb::vmm::stop::VcpuStop;
use vmm_support::*;

/// RAM of these machines: enough for a kernel at 16 MiB and the initrd above it.
const RAM: u64 = 64 << 20;
const CMDLINE: &str = "console=ttyS0 nokaslr";

/// 64-bit entry: RSI = zero page.
#[rustfmt::skip]
const ECHO64: &[u8] = &[
    0x8b, 0x9e, 0x28, 0x02, 0x00, 0x00,       // mov 0x228(%rsi), %ebx  (cmd_line_ptr)
    0x66, 0xba, 0xf8, 0x03,                   // mov $0x3f8, %dx
    0x8a, 0x03,                               // 1: mov (%rbx), %al
    0x84, 0xc0,                               //    test %al, %al
    0x74, 0x06,                               //    jz 2f
    0xee,                                     //    out %al, (%dx)
    0x48, 0xff, 0xc3,                         //    inc %rbx
    0xeb, 0xf4,                               //    jmp 1b
    0x0f, 0xb6, 0x86, 0xe8, 0x01, 0x00, 0x00, // 2: movzbl 0x1e8(%rsi), %eax (e820_entries)
    0xe6, 0xf4,                               //    out %al, $0xf4
];

/// 32-bit entry: ESI = zero page.
#[rustfmt::skip]
const ECHO32: &[u8] = &[
    0x8b, 0x9e, 0x28, 0x02, 0x00, 0x00,       // mov 0x228(%esi), %ebx  (cmd_line_ptr)
    0x66, 0xba, 0xf8, 0x03,                   // mov $0x3f8, %dx
    0x8a, 0x03,                               // 1: mov (%ebx), %al
    0x84, 0xc0,                               //    test %al, %al
    0x74, 0x04,                               //    jz 2f
    0xee,                                     //    out %al, (%dx)
    0x43,                                     //    inc %ebx
    0xeb, 0xf6,                               //    jmp 1b
    0x0f, 0xb6, 0x86, 0xe8, 0x01, 0x00, 0x00, // 2: movzbl 0x1e8(%esi), %eax (e820_entries)
    0xe6, 0xf4,                               //    out %al, $0xf4
];

/// PVH entry (32-bit): EBX = hvm_start_info.
#[rustfmt::skip]
const ECHO_PVH: &[u8] = &[
    0x8b, 0x73, 0x18,                         // mov 0x18(%ebx), %esi   (cmdline_paddr)
    0x66, 0xba, 0xf8, 0x03,                   // mov $0x3f8, %dx
    0x8a, 0x06,                               // 1: mov (%esi), %al
    0x84, 0xc0,                               //    test %al, %al
    0x74, 0x04,                               //    jz 2f
    0xee,                                     //    out %al, (%dx)
    0x46,                                     //    inc %esi
    0xeb, 0xf6,                               //    jmp 1b
    0x8b, 0x43, 0x30,                         // 2: mov 0x30(%ebx), %eax (memmap_entries)
    0xe6, 0xf4,                               //    out %al, $0xf4
];

/// A bzImage (protocol 2.15, one setup sector after the boot sector) whose protected-mode
/// kernel has `entry64` at offset 0x200 when given (XLF_KERNEL_64 set), else `entry32` at 0.
fn bzimage(entry32: &[u8], entry64: Option<&[u8]>) -> Vec<u8> {
    let setup = 2 * 512;
    let kernel_len = 0x1000;
    let mut img = vec![0u8; setup + kernel_len];
    let put = |img: &mut Vec<u8>, off: usize, v: &[u8]| img[off..off + v.len()].copy_from_slice(v);
    img[0x1f1] = 1; // setup_sects
    put(&mut img, 0x1f4, &((kernel_len / 16) as u32).to_le_bytes()); // syssize
    put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut img, 0x200, &[0xeb, 0x6a]);
    put(&mut img, 0x202, b"HdrS");
    put(&mut img, 0x206, &0x020fu16.to_le_bytes());
    img[0x211] = 1; // LOADED_HIGH
    put(&mut img, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(&mut img, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut img, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    img[0x234] = 1; // relocatable
    let xloadflags: u16 = if entry64.is_some() { 1 } else { 0 };
    put(&mut img, 0x236, &xloadflags.to_le_bytes());
    put(&mut img, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut img, 0x258, &0x100_0000u64.to_le_bytes()); // pref_address
    put(&mut img, 0x260, &0x10_0000u32.to_le_bytes()); // init_size
    put(&mut img, setup, entry32);
    if let Some(code) = entry64 {
        put(&mut img, setup + 0x200, code);
    }
    img
}

/// An ELF64 (or, not `elf64`, an ELF32) with `code` in one PT_LOAD at 16 MiB and a PVH
/// note naming its start.
fn pvh_elf(code: &[u8], elf64: bool) -> Vec<u8> {
    const LOAD: u64 = 0x100_0000;
    // Field width, header size and program header size of the class (gABI, ch. 4 and 5).
    let (w, ehsize, phsize) = if elf64 { (8, 64, 56) } else { (4, 52, 32) };
    let mut f = vec![0u8; 0x200];
    let put = |f: &mut Vec<u8>, at: usize, v: u64, w: usize| {
        f[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
    };
    f[..4].copy_from_slice(b"\x7fELF");
    f[4..7].copy_from_slice(&[if elf64 { 2 } else { 1 }, 1, 1]); // class, LE, version 1
    f[16] = 2; // ET_EXEC
    f[18] = if elf64 { 62 } else { 3 }; // EM_X86_64, EM_386
    put(&mut f, 24, LOAD, w); // e_entry
    put(&mut f, 24 + w, ehsize as u64, w); // e_phoff
    let counts = 24 + 3 * w + 4 + 2; // e_ehsize, then e_phentsize, e_phnum
    put(&mut f, counts - 2, ehsize as u64, 2);
    put(&mut f, counts, phsize as u64, 2);
    put(&mut f, counts + 2, 2, 2);
    let mut ph = |i: usize, p_type: u32, offset: u64, addr: u64, size: u64| {
        let at = ehsize + phsize * i;
        put(&mut f, at, p_type.into(), 4);
        // ELF64 puts p_flags after p_type; ELF32 after p_memsz.
        let fields = at + if elf64 { 8 } else { 4 };
        for (k, v) in [offset, addr, addr, size, size].iter().enumerate() {
            put(&mut f, fields + w * k, *v, w);
        }
    };
    // The note: namesz 4, descsz 4, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), "Xen\0", entry.
    ph(0, 4, 0x180, 0, 20);
    ph(1, 1, 0x200, LOAD, code.len() as u64);
    let mut note = Vec::new();
    for v in [4u32, 4, 18] {
        note.extend_from_slice(&v.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(LOAD as u32).to_le_bytes());
    f[0x180..0x180 + note.len()].copy_from_slice(&note);
    f.extend_from_slice(code);
    f
}

/// Boots `image` with [`CMDLINE`] and one initrd, runs it to its exit and checks it echoed
/// the command line and counted the plan's memory map.
fn echoes_cmdline_and_counts_the_map(image: &[u8], format: boot::BootFormat) {
    let modules = [boot::Module {
        cmdline: "initrd.cpio".into(),
        data: b"070701".to_vec(),
    }];
    let req = BootRequest {
        cmdline: CMDLINE,
        modules: &modules,
        ..BootRequest::new(image, RAM)
    };
    let entries = boot::plan(&req).unwrap().memory_map.len() as u32;
    let mut guest = boot_request(&req);
    assert_eq!(guest.vm.boot_info().format, format);
    let ev = guest.cont();
    assert_eq!(
        ev.stop,
        VcpuStop::Exit(exit_status(entries)),
        "serial: {:?}",
        guest.serial.text()
    );
    assert_eq!(guest.serial.text(), CMDLINE);
}

#[test]
fn bzimage_64bit_entry_gets_the_zero_page_in_rsi() {
    let img = bzimage(&[0xf4], Some(ECHO64));
    echoes_cmdline_and_counts_the_map(&img, boot::BootFormat::BzImage64);
}

#[test]
fn bzimage_32bit_entry_gets_the_zero_page_in_esi() {
    let img = bzimage(ECHO32, None);
    echoes_cmdline_and_counts_the_map(&img, boot::BootFormat::BzImage32);
}

#[test]
fn pvh_entry_gets_start_info_in_ebx() {
    echoes_cmdline_and_counts_the_map(&pvh_elf(ECHO_PVH, true), boot::BootFormat::Pvh);
}

#[test]
fn elf32_pvh_entry_gets_start_info_in_ebx() {
    echoes_cmdline_and_counts_the_map(&pvh_elf(ECHO_PVH, false), boot::BootFormat::Pvh);
}
