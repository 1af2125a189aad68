//! The SMP guest as both stubs can boot it: `guests/smp.elf` wrapped in a Multiboot ELF32.
//!
//! `smp.elf` is an ELF64 entered in long mode, which kvmgdb does but QEMU's `-kernel` does
//! not (QEMU's Multiboot loader refuses ELF64 without the a.out kludge, and the file has
//! no PVH note). So the benchmark writes one image that both boot the same way, through
//! Multiboot v1 (Multiboot Specification 0.6.96, 3.1 and 3.2): an ELF32 whose segments are
//! `smp.elf`'s own, at their own addresses, plus a small boot segment after them. The
//! boot segment holds the Multiboot header, identity page tables for the first 4 GiB
//! (2 MiB pages, so the local APIC at 0xfee00000 is mapped) and 32-bit code that enters
//! long mode (PAE, EFER.LME, CR0.PG, a far jump: Intel SDM Vol. 3, 9.8.5) and jumps to
//! `smp.elf`'s entry with the state `start64.S` expects. The guest itself is unchanged.

use std::path::{Path, PathBuf};

/// Errors building the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// smp.elf could not be read.
    #[error("cannot read the SMP guest {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// smp.elf is not the ELF64 the wrapper expects.
    #[error("the SMP guest {0} cannot be wrapped: {1}")]
    Format(PathBuf, &'static str),
    /// The image could not be written.
    #[error("cannot write the Multiboot SMP image {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// Multiboot v1 header magic (Multiboot Specification 3.1.2).
const MULTIBOOT_MAGIC: u32 = 0x1bad_b002;
/// Header flags: none (no memory map or module alignment asked for; ELF32, no a.out kludge).
const MULTIBOOT_FLAGS: u32 = 0;

/// Page-table entry bits (Intel SDM Vol. 3, 4.5): present, writable, 2 MiB page.
const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_PS: u64 = 0x80;
const PAGE: u32 = 0x1000;
const TWO_MIB: u64 = 2 << 20;

/// The boot segment's layout, as offsets from its base.
const OFF_HEADER: u32 = 0;
const OFF_GDT: u32 = 0x10;
const OFF_GDT_DESC: u32 = 0x30;
const OFF_CODE: u32 = 0x40;
const OFF_PML4: u32 = PAGE;
const OFF_PDPT: u32 = 2 * PAGE;
const OFF_PD: u32 = 3 * PAGE;
/// Four page directories map 4 GiB.
const PDS: u32 = 4;
const BOOT_SIZE: u32 = OFF_PD + PDS * PAGE;

/// Selectors of the boot GDT.
const SEL_CODE64: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
/// Flat descriptors: 64-bit ring-0 code (L=1), and ring-0 data.
const GDT: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// One loadable segment of smp.elf.
struct Segment {
    paddr: u32,
    memsz: u32,
    flags: u32,
    data: Vec<u8>,
}

fn field(data: &[u8], o: usize, n: usize) -> Result<u64, &'static str> {
    let b = o
        .checked_add(n)
        .and_then(|e| data.get(o..e))
        .ok_or("truncated")?;
    let mut w = [0u8; 8];
    w[..n].copy_from_slice(b);
    Ok(u64::from_le_bytes(w))
}

/// smp.elf's entry and PT_LOAD segments; all must lie below 4 GiB.
fn segments(data: &[u8]) -> Result<(u32, Vec<Segment>), &'static str> {
    const PT_LOAD: u64 = 1;
    if data.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a little-endian ELF64 file");
    }
    let low = |v: u64| u32::try_from(v).map_err(|_| "an address above 4 GiB");
    let entry = low(field(data, 0x18, 8)?)?;
    let phoff = field(data, 0x20, 8)? as usize;
    let phentsize = field(data, 0x36, 2)? as usize;
    let phnum = field(data, 0x38, 2)? as usize;
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if field(data, ph, 4)? != PT_LOAD {
            continue;
        }
        let offset = field(data, ph + 8, 8)? as usize;
        let paddr = low(field(data, ph + 0x18, 8)?)?;
        let filesz = field(data, ph + 0x20, 8)? as usize;
        let memsz = low(field(data, ph + 0x28, 8)?)?;
        let bytes = offset
            .checked_add(filesz)
            .and_then(|e| data.get(offset..e))
            .ok_or("a segment runs past the end of the file")?;
        out.push(Segment {
            paddr,
            memsz,
            flags: field(data, ph + 4, 4)? as u32,
            data: bytes.to_vec(),
        });
    }
    if out.is_empty() {
        return Err("no PT_LOAD segment");
    }
    Ok((entry, out))
}

/// The 32-bit code of the boot segment at `base`: Multiboot's entry state (protected
/// mode, paging off) to long mode, then a jump to `entry`.
fn boot_code(base: u32, entry: u32) -> Vec<u8> {
    let mut c = Vec::new();
    let imm = |c: &mut Vec<u8>, v: u32| c.extend_from_slice(&v.to_le_bytes());
    c.push(0xfa); // cli
    c.push(0xb8); // mov $PML4, %eax
    imm(&mut c, base + OFF_PML4);
    c.extend_from_slice(&[0x0f, 0x22, 0xd8]); // mov %eax, %cr3
    c.extend_from_slice(&[0x0f, 0x20, 0xe0]); // mov %cr4, %eax
    c.extend_from_slice(&[0x83, 0xc8, 0x20]); // or $0x20 (CR4.PAE), %eax
    c.extend_from_slice(&[0x0f, 0x22, 0xe0]); // mov %eax, %cr4
    c.push(0xb9); // mov $MSR_EFER, %ecx
    imm(&mut c, 0xc000_0080);
    c.extend_from_slice(&[0x0f, 0x32]); // rdmsr
    c.push(0x0d); // or $0x100 (EFER.LME), %eax
    imm(&mut c, 0x100);
    c.extend_from_slice(&[0x0f, 0x30]); // wrmsr
    c.extend_from_slice(&[0x0f, 0x01, 0x15]); // lgdt GDT_DESC
    imm(&mut c, base + OFF_GDT_DESC);
    c.extend_from_slice(&[0x0f, 0x20, 0xc0]); // mov %cr0, %eax
    c.push(0x0d); // or $0x80000001 (CR0.PG | CR0.PE), %eax
    imm(&mut c, 0x8000_0001);
    c.extend_from_slice(&[0x0f, 0x22, 0xc0]); // mov %eax, %cr0
    // ljmp $SEL_CODE64, $lm64: the 7-byte far jump, lm64 right after it.
    let lm64 = base + OFF_CODE + c.len() as u32 + 7;
    c.push(0xea);
    imm(&mut c, lm64);
    c.extend_from_slice(&SEL_CODE64.to_le_bytes());
    // 64-bit code from here.
    c.push(0xb8); // mov $SEL_DATA, %eax
    imm(&mut c, u32::from(SEL_DATA));
    c.extend_from_slice(&[0x8e, 0xd8]); // mov %eax, %ds
    c.extend_from_slice(&[0x8e, 0xc0]); // mov %eax, %es
    c.extend_from_slice(&[0x8e, 0xd0]); // mov %eax, %ss
    c.extend_from_slice(&[0x31, 0xf6]); // xor %esi, %esi: no boot_params (smp.c ignores it)
    c.push(0xb8); // mov $entry, %eax (zero-extends into %rax)
    imm(&mut c, entry);
    c.extend_from_slice(&[0xff, 0xe0]); // jmp *%rax
    c
}

/// The boot segment at `base`.
fn boot_segment(base: u32, entry: u32) -> Vec<u8> {
    let mut b = vec![0u8; BOOT_SIZE as usize];
    let put32 = |b: &mut [u8], at: u32, v: u32| {
        b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes())
    };
    let put64 = |b: &mut [u8], at: u32, v: u64| {
        b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes())
    };
    put32(&mut b, OFF_HEADER, MULTIBOOT_MAGIC);
    put32(&mut b, OFF_HEADER + 4, MULTIBOOT_FLAGS);
    put32(
        &mut b,
        OFF_HEADER + 8,
        0u32.wrapping_sub(MULTIBOOT_MAGIC.wrapping_add(MULTIBOOT_FLAGS)),
    );
    for (i, d) in GDT.iter().enumerate() {
        put64(&mut b, OFF_GDT + 8 * i as u32, *d);
    }
    let limit = (GDT.len() * 8 - 1) as u16;
    b[OFF_GDT_DESC as usize..OFF_GDT_DESC as usize + 2].copy_from_slice(&limit.to_le_bytes());
    put32(&mut b, OFF_GDT_DESC + 2, base + OFF_GDT);
    let code = boot_code(base, entry);
    b[OFF_CODE as usize..OFF_CODE as usize + code.len()].copy_from_slice(&code);
    put64(
        &mut b,
        OFF_PML4,
        u64::from(base + OFF_PDPT) | PTE_P | PTE_RW,
    );
    for pd in 0..PDS {
        put64(
            &mut b,
            OFF_PDPT + 8 * pd,
            u64::from(base + OFF_PD + pd * PAGE) | PTE_P | PTE_RW,
        );
        for e in 0..512u32 {
            let phys = (u64::from(pd) * 512 + u64::from(e)) * TWO_MIB;
            put64(
                &mut b,
                OFF_PD + pd * PAGE + 8 * e,
                phys | PTE_P | PTE_RW | PTE_PS,
            );
        }
    }
    b
}

/// The Multiboot ELF32 image of the ELF64 `smp`: its segments plus the boot segment.
pub fn wrap(smp: &[u8]) -> Result<Vec<u8>, &'static str> {
    let (entry, mut segs) = segments(smp)?;
    let end = segs
        .iter()
        .map(|s| u64::from(s.paddr) + u64::from(s.memsz))
        .max()
        .unwrap_or(0);
    // The boot segment goes on the next 64 KiB boundary after the guest.
    let base = u32::try_from(end.div_ceil(0x1_0000) * 0x1_0000)
        .map_err(|_| "the guest ends above 4 GiB")?;
    const PF_RWX: u32 = 7;
    segs.insert(
        0,
        Segment {
            paddr: base,
            memsz: BOOT_SIZE,
            flags: PF_RWX,
            data: boot_segment(base, entry),
        },
    );
    const EHDR: usize = 52;
    const PHDR: usize = 32;
    // File data starts on a page boundary, keeping each offset congruent to its address
    // modulo the page size; the boot segment comes first, so the Multiboot header is
    // within the first 8 KiB, as the specification requires.
    let mut offsets = Vec::new();
    let mut at = PAGE as usize;
    for s in &segs {
        let want = s.paddr as usize % PAGE as usize;
        at = at.next_multiple_of(PAGE as usize) + want;
        offsets.push(at);
        at += s.data.len();
    }
    let mut f = vec![0u8; at];
    f[..16].copy_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    let put16 = |f: &mut [u8], o: usize, v: u16| f[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |f: &mut [u8], o: usize, v: u32| f[o..o + 4].copy_from_slice(&v.to_le_bytes());
    const ET_EXEC: u16 = 2;
    const EM_386: u16 = 3;
    put16(&mut f, 16, ET_EXEC);
    put16(&mut f, 18, EM_386);
    put32(&mut f, 20, 1); // e_version
    put32(&mut f, 24, base + OFF_CODE); // e_entry
    put32(&mut f, 28, EHDR as u32); // e_phoff
    put16(&mut f, 40, EHDR as u16); // e_ehsize
    put16(&mut f, 42, PHDR as u16); // e_phentsize
    put16(&mut f, 44, segs.len() as u16); // e_phnum
    for (i, (s, &off)) in segs.iter().zip(&offsets).enumerate() {
        let ph = EHDR + i * PHDR;
        const PT_LOAD: u32 = 1;
        put32(&mut f, ph, PT_LOAD);
        put32(&mut f, ph + 4, off as u32);
        put32(&mut f, ph + 8, s.paddr);
        put32(&mut f, ph + 12, s.paddr);
        put32(&mut f, ph + 16, s.data.len() as u32);
        put32(&mut f, ph + 20, s.memsz);
        put32(&mut f, ph + 24, s.flags);
        put32(&mut f, ph + 28, PAGE);
        f[off..off + s.data.len()].copy_from_slice(&s.data);
    }
    if EHDR + segs.len() * PHDR > PAGE as usize {
        return Err("too many segments");
    }
    Ok(f)
}

/// Writes the Multiboot image of `smp` to a file in the temporary directory.
pub fn write(smp: &Path) -> Result<PathBuf, ImageError> {
    let data = std::fs::read(smp).map_err(|e| ImageError::Read(smp.to_path_buf(), e))?;
    let image = wrap(&data).map_err(|m| ImageError::Format(smp.to_path_buf(), m))?;
    let path = std::env::temp_dir().join(format!(
        "kvmgdb-bench-smp-multiboot-{}.elf",
        std::process::id()
    ));
    std::fs::write(&path, image).map_err(|e| ImageError::Write(path.clone(), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_and_tables_are_where_multiboot_and_the_code_expect() {
        let smp = std::fs::read(kvmgdb::guests::guest_dir().join("smp.elf")).unwrap();
        let img = wrap(&smp).unwrap();
        // The Multiboot header: in the first 8 KiB, 4-byte aligned, checksum zero.
        let at = (0..8192 - 12)
            .step_by(4)
            .find(|&o| img[o..o + 4] == MULTIBOOT_MAGIC.to_le_bytes())
            .unwrap();
        let w = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap());
        assert_eq!(w(at).wrapping_add(w(at + 4)).wrapping_add(w(at + 8)), 0);
        // The entry is the boot code, whose first instruction is cli.
        let entry = w(24);
        let base = entry - OFF_CODE;
        assert_eq!(base % 0x1_0000, 0);
        assert_eq!(img[at + OFF_CODE as usize], 0xfa);
        // The last 2 MiB page maps the top of 4 GiB, where the local APIC is.
        let last = at + (OFF_PD + 3 * PAGE + 511 * 8) as usize;
        let pte = u64::from_le_bytes(img[last..last + 8].try_into().unwrap());
        assert_eq!(pte & !0xfff, 0xffe0_0000);
    }
}
