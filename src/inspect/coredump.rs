//! `dump FILE`: an ELF core file of the guest that `gdb kernel.elf FILE` opens like a Linux
//! process core (System V gABI chapter 4 and 5; Linux `fs/binfmt_elf.c` and
//! `include/uapi/linux/elfcore.h` for the notes).
//!
//! gdb reads core memory by virtual address, so there is one `PT_LOAD` per run of the
//! guest's current mappings (`p_vaddr` virtual, `p_paddr` guest-physical); with paging off
//! the runs are the RAM regions, identity mapped. Virtual aliases of the same RAM (a
//! higher-half kernel maps its RAM twice) share the bytes in the file: each physical range
//! is stored once and every `PT_LOAD` that maps it points there. The registers go in one
//! `NT_PRSTATUS` note per vCPU, in Linux's `elf_prstatus` layout, so gdb's Linux core
//! support shows them; the FXSAVE area goes in `NT_FPREGSET` (x86-64) or `NT_PRXFPREG`
//! (i386).

use crate::x86::PAGE_SIZE;
use crate::x86::paging::leaves::Segment;
use kvm_bindings::{kvm_regs, kvm_sregs};
use std::io::{self, Write};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// ELF identification and header constants (gABI, "ELF Header").
mod elf {
    pub const MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
    pub const CLASS32: u8 = 1;
    pub const CLASS64: u8 = 2;
    pub const DATA_LSB: u8 = 1;
    pub const VERSION: u8 = 1;
    pub const OSABI_NONE: u8 = 0;
    pub const ET_CORE: u16 = 4;
    pub const EM_386: u16 = 3;
    pub const EM_X86_64: u16 = 62;
    pub const PT_LOAD: u32 = 1;
    pub const PT_NOTE: u32 = 4;
    pub const PF_X: u32 = 1;
    pub const PF_W: u32 = 2;
    pub const PF_R: u32 = 4;
    /// e_phnum value meaning "the real count is in section header 0's sh_info".
    pub const PN_XNUM: u16 = 0xffff;
    /// NT_PRSTATUS: struct elf_prstatus.
    pub const NT_PRSTATUS: u32 = 1;
    /// NT_FPREGSET: struct user_fpregs_struct (FXSAVE format on x86-64).
    pub const NT_FPREGSET: u32 = 2;
    /// NT_PRXFPREG: struct user_fxsr_struct (FXSAVE format) on i386, owner "LINUX".
    pub const NT_PRXFPREG: u32 = 0x46e6_2b7f;
}

/// Size of the FXSAVE area in the FP notes.
pub const FX_SIZE: usize = crate::x86::xsave::LEGACY_SIZE;
/// Bytes of guest RAM copied per write.
const CHUNK: usize = 1 << 20;

/// Errors writing a core file.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Writing the file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A segment's guest-physical range is not guest RAM.
    #[error("guest-physical range {0:#x}..{1:#x} is not guest RAM")]
    NotRam(u64, u64),
}

/// ELF class and machine of the core: the guest image's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreClass {
    /// ELFCLASS64, EM_X86_64.
    Elf64,
    /// ELFCLASS32, EM_386.
    Elf32,
}

impl CoreClass {
    fn ehdr_size(self) -> u64 {
        match self {
            CoreClass::Elf64 => 64,
            CoreClass::Elf32 => 52,
        }
    }

    fn phdr_size(self) -> u64 {
        match self {
            CoreClass::Elf64 => 56,
            CoreClass::Elf32 => 32,
        }
    }

    fn shdr_size(self) -> u64 {
        match self {
            CoreClass::Elf64 => 64,
            CoreClass::Elf32 => 40,
        }
    }
}

/// One vCPU's state for the core.
#[derive(Clone, Copy)]
pub struct CoreCpu {
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment registers (selectors, FS/GS base).
    pub sregs: kvm_sregs,
    /// The FXSAVE area, if it could be read.
    pub fx: Option<[u8; FX_SIZE]>,
    /// The signal gdb reports for this thread (SIGTRAP after a breakpoint or step, or 0).
    pub signal: u16,
}

/// A run of guest-physical RAM stored once in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Blob {
    pa: u64,
    len: u64,
    offset: u64,
}

/// Where everything goes in the file.
struct Layout {
    phnum: usize,
    /// Offset of the section header that carries a program-header count past PN_XNUM.
    xnum_shdr: Option<u64>,
    notes_offset: u64,
    notes: Vec<u8>,
    blobs: Vec<Blob>,
    /// p_offset of each segment.
    offsets: Vec<u64>,
    size: u64,
}

/// Stores each physical range the segments use once, in ascending order, page aligned.
fn plan_blobs(segments: &[Segment], start: u64) -> (Vec<Blob>, Vec<u64>, u64) {
    let mut ranges: Vec<(u64, u64)> = segments
        .iter()
        .filter(|s| s.len > 0)
        .map(|s| (s.pa, s.pa + s.len))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let mut offset = start.next_multiple_of(PAGE_SIZE);
    let mut blobs = Vec::with_capacity(merged.len());
    for (lo, hi) in merged {
        // Keep p_offset ≡ p_vaddr (mod page size): start each blob at its page offset.
        offset = offset.next_multiple_of(PAGE_SIZE) + lo % PAGE_SIZE;
        blobs.push(Blob {
            pa: lo,
            len: hi - lo,
            offset,
        });
        offset += hi - lo;
    }
    let offsets = segments
        .iter()
        .map(|s| {
            let i = blobs.partition_point(|b| b.pa + b.len <= s.pa);
            blobs.get(i).map_or(0, |b| b.offset + (s.pa - b.pa))
        })
        .collect();
    (blobs, offsets, offset)
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
/// An address-sized field: 8 bytes in ELF64, 4 in ELF32.
fn put_addr(v: &mut Vec<u8>, class: CoreClass, x: u64) {
    match class {
        CoreClass::Elf64 => put64(v, x),
        CoreClass::Elf32 => put32(v, x as u32),
    }
}

/// One note: header, name and descriptor, each padded to 4 bytes (gABI "Note Section").
fn note(out: &mut Vec<u8>, name: &str, kind: u32, desc: &[u8]) {
    let namesz = name.len() + 1;
    put32(out, namesz as u32);
    put32(out, desc.len() as u32);
    put32(out, kind);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// x86-64 `struct elf_prstatus` (336 bytes): pr_cursig at 12, pr_pid at 32, pr_reg (a
/// `user_regs_struct`, 27 × 8 bytes in Linux's order) at 112, pr_fpvalid at 328.
fn prstatus64(cpu: &CoreCpu, pid: u32) -> Vec<u8> {
    let (r, s) = (&cpu.regs, &cpu.sregs);
    let mut d = vec![0u8; 112];
    d[0..4].copy_from_slice(&u32::from(cpu.signal).to_le_bytes());
    d[12..14].copy_from_slice(&cpu.signal.to_le_bytes());
    d[32..36].copy_from_slice(&pid.to_le_bytes());
    let user_regs = [
        r.r15,
        r.r14,
        r.r13,
        r.r12,
        r.rbp,
        r.rbx,
        r.r11,
        r.r10,
        r.r9,
        r.r8,
        r.rax,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        u64::MAX, // orig_rax: not in a system call
        r.rip,
        s.cs.selector.into(),
        r.rflags,
        r.rsp,
        s.ss.selector.into(),
        s.fs.base,
        s.gs.base,
        s.ds.selector.into(),
        s.es.selector.into(),
        s.fs.selector.into(),
        s.gs.selector.into(),
    ];
    for v in user_regs {
        put64(&mut d, v);
    }
    put32(&mut d, u32::from(cpu.fx.is_some()));
    d.resize(336, 0);
    d
}

/// i386 `struct elf_prstatus` (144 bytes): pr_cursig at 12, pr_pid at 24, pr_reg (the i386
/// `user_regs_struct`, 17 × 4 bytes) at 72, pr_fpvalid at 140.
fn prstatus32(cpu: &CoreCpu, pid: u32) -> Vec<u8> {
    let (r, s) = (&cpu.regs, &cpu.sregs);
    let mut d = vec![0u8; 72];
    d[0..4].copy_from_slice(&u32::from(cpu.signal).to_le_bytes());
    d[12..14].copy_from_slice(&cpu.signal.to_le_bytes());
    d[24..28].copy_from_slice(&pid.to_le_bytes());
    let user_regs: [u64; 17] = [
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp,
        r.rax,
        s.ds.selector.into(),
        s.es.selector.into(),
        s.fs.selector.into(),
        s.gs.selector.into(),
        u64::from(u32::MAX), // orig_eax
        r.rip,
        s.cs.selector.into(),
        r.rflags,
        r.rsp,
        s.ss.selector.into(),
    ];
    for v in user_regs {
        put32(&mut d, v as u32);
    }
    put32(&mut d, u32::from(cpu.fx.is_some()));
    d
}

fn build_notes(class: CoreClass, cpus: &[CoreCpu]) -> Vec<u8> {
    let mut notes = Vec::new();
    for (i, cpu) in cpus.iter().enumerate() {
        // gdb names threads after pr_pid; vCPU n is gdb thread n + 1, as in the live stub.
        let pid = i as u32 + 1;
        match class {
            CoreClass::Elf64 => {
                note(&mut notes, "CORE", elf::NT_PRSTATUS, &prstatus64(cpu, pid));
                if let Some(fx) = &cpu.fx {
                    note(&mut notes, "CORE", elf::NT_FPREGSET, fx);
                }
            }
            CoreClass::Elf32 => {
                note(&mut notes, "CORE", elf::NT_PRSTATUS, &prstatus32(cpu, pid));
                if let Some(fx) = &cpu.fx {
                    note(&mut notes, "LINUX", elf::NT_PRXFPREG, fx);
                }
            }
        }
    }
    notes
}

fn plan(class: CoreClass, cpus: &[CoreCpu], segments: &[Segment]) -> Layout {
    let phnum = segments.len() + 1;
    let headers_end = class.ehdr_size() + class.phdr_size() * phnum as u64;
    let (xnum_shdr, notes_offset) = if phnum >= usize::from(elf::PN_XNUM) {
        (Some(headers_end), headers_end + class.shdr_size())
    } else {
        (None, headers_end)
    };
    let notes = build_notes(class, cpus);
    let (blobs, offsets, size) = plan_blobs(segments, notes_offset + notes.len() as u64);
    Layout {
        phnum,
        xnum_shdr,
        notes_offset,
        notes,
        blobs,
        offsets,
        size: size.max(notes_offset),
    }
}

fn headers(class: CoreClass, segments: &[Segment], layout: &Layout) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&elf::MAGIC);
    h.push(match class {
        CoreClass::Elf64 => elf::CLASS64,
        CoreClass::Elf32 => elf::CLASS32,
    });
    h.extend_from_slice(&[elf::DATA_LSB, elf::VERSION, elf::OSABI_NONE]);
    h.resize(16, 0);
    put16(&mut h, elf::ET_CORE);
    put16(
        &mut h,
        match class {
            CoreClass::Elf64 => elf::EM_X86_64,
            CoreClass::Elf32 => elf::EM_386,
        },
    );
    put32(&mut h, elf::VERSION.into());
    put_addr(&mut h, class, 0); // e_entry
    put_addr(&mut h, class, class.ehdr_size()); // e_phoff
    put_addr(&mut h, class, layout.xnum_shdr.unwrap_or(0)); // e_shoff
    put32(&mut h, 0); // e_flags
    put16(&mut h, class.ehdr_size() as u16);
    put16(&mut h, class.phdr_size() as u16);
    let xnum = layout.xnum_shdr.is_some();
    put16(
        &mut h,
        if xnum {
            elf::PN_XNUM
        } else {
            layout.phnum as u16
        },
    );
    put16(&mut h, if xnum { class.shdr_size() as u16 } else { 0 });
    put16(&mut h, u16::from(xnum)); // e_shnum
    put16(&mut h, 0); // e_shstrndx: SHN_UNDEF

    let phdr = |h: &mut Vec<u8>, kind: u32, flags: u32, off: u64, va: u64, pa: u64, len: u64| {
        let align = if kind == elf::PT_LOAD { PAGE_SIZE } else { 4 };
        match class {
            CoreClass::Elf64 => {
                put32(h, kind);
                put32(h, flags);
                put64(h, off);
                put64(h, va);
                put64(h, pa);
                put64(h, len);
                put64(h, len);
                put64(h, align);
            }
            CoreClass::Elf32 => {
                put32(h, kind);
                put32(h, off as u32);
                put32(h, va as u32);
                // p_paddr is 32 bits wide here; RAM above 4 GiB cannot be named.
                put32(h, u32::try_from(pa).unwrap_or(0));
                put32(h, len as u32);
                put32(h, len as u32);
                put32(h, flags);
                put32(h, align as u32);
            }
        }
    };
    phdr(
        &mut h,
        elf::PT_NOTE,
        0,
        layout.notes_offset,
        0,
        0,
        layout.notes.len() as u64,
    );
    for (s, &off) in segments.iter().zip(&layout.offsets) {
        let flags = elf::PF_R
            | if s.perms.writable { elf::PF_W } else { 0 }
            | if s.perms.executable { elf::PF_X } else { 0 };
        phdr(&mut h, elf::PT_LOAD, flags, off, s.va, s.pa, s.len);
    }
    if layout.xnum_shdr.is_some() {
        // Section header 0 (SHT_NULL): sh_info carries the program-header count.
        match class {
            CoreClass::Elf64 => {
                h.extend_from_slice(&[0; 44]);
                put32(&mut h, layout.phnum as u32);
                h.extend_from_slice(&[0; 16]);
            }
            CoreClass::Elf32 => {
                h.extend_from_slice(&[0; 28]);
                put32(&mut h, layout.phnum as u32);
                h.extend_from_slice(&[0; 8]);
            }
        }
    }
    h
}

/// Writes a core file of `cpus` and the guest memory behind `segments` (whose physical
/// ranges must be guest RAM, e.g. from [`crate::x86::paging::leaves::clip_to_ram`]) to `out`. In an
/// ELF32 core, segments must have 32-bit virtual addresses. Returns the file size.
pub fn write_core<M: GuestMemory + ?Sized, W: Write>(
    out: &mut W,
    class: CoreClass,
    cpus: &[CoreCpu],
    segments: &[Segment],
    mem: &M,
) -> Result<u64, CoreError> {
    let layout = plan(class, cpus, segments);
    let mut pos = 0u64;
    let head = headers(class, segments, &layout);
    out.write_all(&head)?;
    pos += head.len() as u64;
    debug_assert_eq!(pos, layout.notes_offset);
    out.write_all(&layout.notes)?;
    pos += layout.notes.len() as u64;
    let zeros = [0u8; PAGE_SIZE as usize];
    let mut buf = vec![0u8; CHUNK];
    for b in &layout.blobs {
        while pos < b.offset {
            let n = (b.offset - pos).min(PAGE_SIZE) as usize;
            out.write_all(&zeros[..n])?;
            pos += n as u64;
        }
        let mut done = 0u64;
        while done < b.len {
            let n = (b.len - done).min(CHUNK as u64) as usize;
            mem.read_slice(&mut buf[..n], GuestAddress(b.pa + done))
                .map_err(|_| CoreError::NotRam(b.pa + done, b.pa + done + n as u64))?;
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
        pos += b.len;
    }
    out.flush()?;
    Ok(pos.max(layout.size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::paging::leaves::Perms;
    use vm_memory::GuestMemoryMmap;

    /// The parts of an ELF core the tests check, read back independently of the writer.
    struct Parsed {
        class: u8,
        machine: u16,
        kind: u16,
        /// (type, flags, offset, vaddr, paddr, filesz)
        phdrs: Vec<(u32, u32, u64, u64, u64, u64)>,
        /// (owner, type, desc)
        notes: Vec<(String, u32, Vec<u8>)>,
    }

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"))
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
    }

    fn parse(b: &[u8]) -> Parsed {
        assert_eq!(&b[..4], b"\x7fELF");
        let class = b[4];
        let wide = class == 2;
        let kind = u16_at(b, 16);
        let machine = u16_at(b, 18);
        let (phoff, shoff, phentsize, mut phnum) = if wide {
            (
                u64_at(b, 32) as usize,
                u64_at(b, 40) as usize,
                u16_at(b, 54),
                u32::from(u16_at(b, 56)),
            )
        } else {
            (
                u32_at(b, 28) as usize,
                u32_at(b, 32) as usize,
                u16_at(b, 42),
                u32::from(u16_at(b, 44)),
            )
        };
        if phnum == 0xffff {
            phnum = u32_at(b, shoff + if wide { 44 } else { 28 });
        }
        let mut phdrs = Vec::new();
        for i in 0..phnum as usize {
            let p = phoff + i * usize::from(phentsize);
            phdrs.push(if wide {
                (
                    u32_at(b, p),
                    u32_at(b, p + 4),
                    u64_at(b, p + 8),
                    u64_at(b, p + 16),
                    u64_at(b, p + 24),
                    u64_at(b, p + 32),
                )
            } else {
                (
                    u32_at(b, p),
                    u32_at(b, p + 24),
                    u32_at(b, p + 4).into(),
                    u32_at(b, p + 8).into(),
                    u32_at(b, p + 12).into(),
                    u32_at(b, p + 16).into(),
                )
            });
        }
        let mut notes = Vec::new();
        for &(t, _, off, _, _, size) in &phdrs {
            if t != 4 {
                continue;
            }
            let (mut o, end) = (off as usize, (off + size) as usize);
            while o < end {
                let (namesz, descsz, ty) = (
                    u32_at(b, o) as usize,
                    u32_at(b, o + 4) as usize,
                    u32_at(b, o + 8),
                );
                let name =
                    String::from_utf8(b[o + 12..o + 12 + namesz - 1].to_vec()).expect("name");
                let d = o + 12 + namesz.next_multiple_of(4);
                notes.push((name, ty, b[d..d + descsz].to_vec()));
                o = d + descsz.next_multiple_of(4);
            }
        }
        Parsed {
            class,
            machine,
            kind,
            phdrs,
            notes,
        }
    }

    fn ram() -> GuestMemoryMmap<()> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("RAM");
        for page in 0..256u64 {
            mem.write_obj(page * 0x1000 + 0xabc, GuestAddress(page * 0x1000))
                .expect("write");
        }
        mem
    }

    fn cpu() -> CoreCpu {
        let mut cpu = CoreCpu {
            regs: kvm_regs {
                rax: 0x1111,
                rbx: 0x2222,
                rsp: 0x8_0000,
                rbp: 0x8_0010,
                rip: 0xffff_ffff_8010_0056,
                rflags: 0x246,
                r15: 0xf15,
                ..Default::default()
            },
            sregs: kvm_sregs::default(),
            fx: Some([0x5a; FX_SIZE]),
            signal: 5,
        };
        cpu.sregs.cs.selector = 0x10;
        cpu.sregs.ss.selector = 0x18;
        cpu.sregs.fs.base = 0xf5f5;
        cpu
    }

    fn seg(va: u64, pa: u64, len: u64, writable: bool) -> Segment {
        Segment {
            va,
            pa,
            len,
            perms: Perms {
                writable,
                ..Perms::ALL
            },
        }
    }

    #[test]
    fn elf64_core_layout_registers_and_aliases() {
        let mem = ram();
        // Low identity run and a higher-half alias of the same RAM, plus a 4 KiB page.
        let segs = [
            seg(0, 0, 0x8_0000, true),
            seg(0xffff_ffff_8000_0000, 0x1_0000, 0x4_0000, true),
            seg(0xffff_ffff_c000_0000, 0xa_b000, 0x1000, false),
        ];
        let mut file = Vec::new();
        let size = write_core(&mut file, CoreClass::Elf64, &[cpu()], &segs, &mem).expect("core");
        assert_eq!(size, file.len() as u64);
        let p = parse(&file);
        assert_eq!((p.class, p.machine, p.kind), (2, 62, 4));
        assert_eq!(p.phdrs.len(), 4);
        assert_eq!(p.phdrs[0].0, 4, "PT_NOTE first");
        for (ph, s) in p.phdrs[1..].iter().zip(&segs) {
            let (ty, flags, off, va, pa, len) = *ph;
            assert_eq!((ty, va, pa, len), (1, s.va, s.pa, s.len));
            assert_eq!(flags & 2 != 0, s.perms.writable);
            assert_eq!(
                off % PAGE_SIZE,
                va % PAGE_SIZE,
                "p_offset ≡ p_vaddr mod page size"
            );
            // Each page in the file holds what guest RAM holds at its physical address.
            for page in (0..len).step_by(PAGE_SIZE as usize) {
                let o = (off + page) as usize;
                assert_eq!(u64_at(&file, o), pa + page + 0xabc);
            }
        }
        // The alias shares bytes with the identity run: RAM is stored once.
        assert!(
            file.len() < 0x8_0000 + 0x2000 + 2 * PAGE_SIZE as usize,
            "{}",
            file.len()
        );

        assert_eq!(p.notes.len(), 2);
        let (owner, ty, desc) = &p.notes[0];
        assert_eq!((owner.as_str(), *ty, desc.len()), ("CORE", 1, 336));
        assert_eq!(u16_at(desc, 12), 5, "pr_cursig");
        assert_eq!(u32_at(desc, 32), 1, "pr_pid");
        let reg = |i: usize| u64_at(desc, 112 + 8 * i);
        assert_eq!(reg(0), 0xf15, "r15 first");
        assert_eq!(reg(4), 0x8_0010, "rbp");
        assert_eq!(reg(5), 0x2222, "rbx");
        assert_eq!(reg(10), 0x1111, "rax");
        assert_eq!(reg(16), 0xffff_ffff_8010_0056, "rip");
        assert_eq!(reg(17), 0x10, "cs");
        assert_eq!(reg(18), 0x246, "eflags");
        assert_eq!(reg(19), 0x8_0000, "rsp");
        assert_eq!(reg(21), 0xf5f5, "fs_base");
        assert_eq!(u32_at(desc, 328), 1, "pr_fpvalid");
        assert_eq!(
            (p.notes[1].0.as_str(), p.notes[1].1, p.notes[1].2.len()),
            ("CORE", 2, 512)
        );
    }

    #[test]
    fn elf32_core() {
        let mem = ram();
        let segs = [seg(0, 0, 0x10_0000, true)];
        let mut c = cpu();
        c.regs.rip = 0x10_0123;
        let mut file = Vec::new();
        write_core(&mut file, CoreClass::Elf32, &[c], &segs, &mem).expect("core");
        let p = parse(&file);
        assert_eq!((p.class, p.machine, p.kind), (1, 3, 4));
        let (_, _, off, va, _, len) = p.phdrs[1];
        assert_eq!((va, len), (0, 0x10_0000));
        assert_eq!(u64_at(&file, off as usize + 0x5000), 0x5abc);
        let (owner, ty, desc) = &p.notes[0];
        assert_eq!((owner.as_str(), *ty, desc.len()), ("CORE", 1, 144));
        let reg = |i: usize| u32_at(desc, 72 + 4 * i);
        assert_eq!(reg(0), 0x2222, "ebx first");
        assert_eq!(reg(6), 0x1111, "eax");
        assert_eq!(reg(12), 0x10_0123, "eip");
        assert_eq!(reg(15), 0x8_0000, "esp");
        assert_eq!(u32_at(desc, 140), 1, "pr_fpvalid");
        assert_eq!(
            (p.notes[1].0.as_str(), p.notes[1].1),
            ("LINUX", elf::NT_PRXFPREG)
        );
    }

    #[test]
    fn more_than_65534_segments_use_pn_xnum() {
        let mem = ram();
        // 70 000 one-page segments, all aliases of two physical pages.
        let segs: Vec<Segment> = (0..70_000u64)
            .map(|i| {
                seg(
                    i * 2 * PAGE_SIZE,
                    (i % 2) * PAGE_SIZE,
                    PAGE_SIZE,
                    i % 2 == 0,
                )
            })
            .collect();
        let mut file = Vec::new();
        write_core(&mut file, CoreClass::Elf64, &[cpu()], &segs, &mem).expect("core");
        assert_eq!(u16_at(&file, 56), 0xffff);
        let p = parse(&file);
        assert_eq!(p.phdrs.len(), 70_001);
        let (_, _, off, va, pa, _) = p.phdrs[70_000];
        assert_eq!((va, pa), (69_999 * 2 * PAGE_SIZE, PAGE_SIZE));
        assert_eq!(u64_at(&file, off as usize), 0x1abc);
    }

    #[test]
    fn segments_outside_ram_are_an_error() {
        let mem = ram();
        let segs = [seg(0, 0x20_0000, PAGE_SIZE, true)];
        let err = write_core(&mut Vec::new(), CoreClass::Elf64, &[cpu()], &segs, &mem)
            .expect_err("not RAM");
        assert!(matches!(err, CoreError::NotRam(0x20_0000, _)), "{err}");
    }
}
