//! The CPU state a boot protocol enters the kernel in: 64-bit long mode with an identity
//! map, or 32-bit protected mode with paging off; the GDT both use, and the identity page
//! tables of long mode. Formats pick a mode here and add their own registers (RSI, EAX/EBX).

use super::layout;
use super::{EntrySregs, MemWrite, VcpuEntry};
use crate::x86::descriptors::{SegmentDescriptor, system_type};
use crate::x86::{
    Cr0, Cr4, Efer, PAGE_SIZE, PAGE_SIZE_1G, PAGE_SIZE_2M, PTE_PRESENT, PTE_PS, PTE_WRITABLE,
    Rflags,
};
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment};

/// The mode the boot vCPU starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CpuMode {
    /// 64-bit long mode, paging on with the identity map of [`identity_page_tables`].
    Long,
    /// 32-bit protected mode, paging off.
    Protected,
}

/// GDT selectors at entry, as in the Linux boot protocol (`__BOOT_CS`, `__BOOT_DS`).
pub const BOOT_CS: u16 = 0x10;
/// Data selector at entry.
pub const BOOT_DS: u16 = 0x18;

/// Descriptors in the GDT: null, unused, code ([`BOOT_CS`]), data ([`BOOT_DS`]).
const GDT_ENTRIES: usize = 4;

/// The flat ring-0 code segment `mode` runs in: 64-bit for long mode, 32-bit otherwise.
/// Both the GDT entry and the cached CS come from it, so the two cannot disagree.
fn code_descriptor(mode: CpuMode) -> SegmentDescriptor {
    match mode {
        CpuMode::Long => SegmentDescriptor::flat_code64(),
        CpuMode::Protected => SegmentDescriptor::flat_code32(),
    }
}

/// The GDT for `mode`, at [`layout::GDT`].
pub(super) fn gdt(mode: CpuMode) -> MemWrite {
    let gdt: [u64; GDT_ENTRIES] = [
        0,
        0,
        code_descriptor(mode).encode(),
        SegmentDescriptor::flat_data().encode(),
    ];
    MemWrite::Bytes {
        gpa: layout::GDT,
        data: gdt.iter().flat_map(|d| d.to_le_bytes()).collect(),
    }
}

/// How much the long-mode entry identity-maps: at least 4 GiB, and all RAM up to `ram_top`.
fn identity_map_size(ram_top: u64) -> u64 {
    ram_top.max(4 * PAGE_SIZE_1G).next_multiple_of(PAGE_SIZE_1G)
}

/// PML4 → PDPT → PDs mapping `[0, identity_map_size)` with 2 MiB pages, at [`layout::PML4`]:
/// one blob holding every table page, the unused entries zero.
pub(super) fn identity_page_tables(ram_top: u64) -> MemWrite {
    let pml4 = layout::PML4;
    let pdpt = pml4 + PAGE_SIZE;
    let gib = identity_map_size(ram_top) / PAGE_SIZE_1G;
    let mut tables = vec![0u8; ((2 + gib) * PAGE_SIZE) as usize];
    let mut put = |at: u64, v: u64| {
        let off = (at - pml4) as usize;
        tables[off..off + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(pml4, pdpt | PTE_PRESENT | PTE_WRITABLE);
    for g in 0..gib {
        let pd = pdpt + PAGE_SIZE * (g + 1);
        put(pdpt + 8 * g, pd | PTE_PRESENT | PTE_WRITABLE);
        for i in 0..512u64 {
            let addr = g * PAGE_SIZE_1G + i * PAGE_SIZE_2M;
            put(pd + 8 * i, addr | PTE_PRESENT | PTE_WRITABLE | PTE_PS);
        }
    }
    MemWrite::Bytes {
        gpa: pml4,
        data: tables,
    }
}

/// The segment register loaded from `desc` through `selector`: what the CPU caches from
/// the GDT entry (SDM Vol. 3, 3.4.3), byte limit and all.
fn segment(selector: u16, desc: SegmentDescriptor) -> kvm_segment {
    kvm_segment {
        base: desc.base,
        limit: desc.byte_limit(),
        selector,
        type_: desc.type_,
        present: desc.present.into(),
        dpl: desc.dpl,
        db: desc.db.into(),
        s: desc.code_data.into(),
        l: desc.long.into(),
        g: desc.granularity.into(),
        avl: desc.avl.into(),
        unusable: 0,
        padding: 0,
    }
}

/// The boot vCPU at `entry` in `mode`: flat segments from the GDT, the stack at
/// [`layout::STACK_TOP`], interrupts off. The format adds its own argument registers.
pub(super) fn entry_state(mode: CpuMode, entry: u64) -> VcpuEntry {
    let regs = kvm_regs {
        rip: entry,
        // Only the always-one bit: interrupts off.
        rflags: Rflags::FIXED1.bits(),
        rsp: layout::STACK_TOP,
        ..Default::default()
    };
    let data = segment(BOOT_DS, SegmentDescriptor::flat_data());
    let cs = segment(BOOT_CS, code_descriptor(mode));
    let (cr0, cr3, cr4, efer) = match mode {
        CpuMode::Long => (
            Cr0::PE | Cr0::MP | Cr0::ET | Cr0::NE | Cr0::WP | Cr0::PG,
            layout::PML4,
            Cr4::PAE | Cr4::OSFXSR | Cr4::OSXMMEXCPT,
            Efer::LME | Efer::LMA,
        ),
        CpuMode::Protected => (Cr0::PE | Cr0::ET, 0, Cr4::empty(), Efer::empty()),
    };
    let sregs = EntrySregs {
        cs,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        // A 64-bit busy TSS and an LDT marked unusable: what VM entry checks demand
        // (SDM Vol. 3, 28.3.1.2); the guest loads its own before it needs them.
        tr: kvm_segment {
            base: 0,
            limit: 0x67,
            selector: 0,
            type_: system_type::TSS_BUSY,
            present: 1,
            s: 0,
            ..Default::default()
        },
        ldt: kvm_segment {
            limit: 0xffff,
            type_: system_type::LDT,
            present: 1,
            unusable: 1,
            ..Default::default()
        },
        gdt: kvm_dtable {
            base: layout::GDT,
            limit: (GDT_ENTRIES * 8 - 1) as u16,
            ..Default::default()
        },
        idt: kvm_dtable::default(),
        cr0: cr0.bits(),
        cr3,
        cr4: cr4.bits(),
        efer: efer.bits(),
    };
    VcpuEntry { regs, sregs }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GDT's bytes, pinned as raw descriptors (SDM Vol. 3, 3.4.5): null, unused, then
    /// code (L=1 or D=1; G, P, DPL 0, execute/read, accessed) and data (B, G, P, DPL 0,
    /// read/write, accessed).
    #[test]
    fn gdt_bytes_are_the_flat_boot_descriptors() {
        for (mode, code) in [
            (CpuMode::Long, 0x00af_9b00_0000_ffff_u64),
            (CpuMode::Protected, 0x00cf_9b00_0000_ffff),
        ] {
            let MemWrite::Bytes { gpa, data } = gdt(mode) else {
                panic!("the GDT is a byte blob")
            };
            assert_eq!(gpa, layout::GDT);
            let want: Vec<u8> = [0, 0, code, 0x00cf_9300_0000_ffff]
                .iter()
                .flat_map(|d: &u64| d.to_le_bytes())
                .collect();
            assert_eq!(data, want, "{mode:?}");
        }
    }

    /// The entry state's segment caches and control registers, as raw values.
    #[test]
    fn entry_state_is_pinned() {
        let flat = |selector, type_, db, l| kvm_segment {
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
        };
        let long = entry_state(CpuMode::Long, 0x10_0000);
        assert_eq!(long.regs.rflags, 0x2);
        assert_eq!(long.sregs.cs, flat(BOOT_CS, 0xb, 0, 1));
        for s in [
            long.sregs.ds,
            long.sregs.es,
            long.sregs.fs,
            long.sregs.gs,
            long.sregs.ss,
        ] {
            assert_eq!(s, flat(BOOT_DS, 0x3, 1, 0));
        }
        assert_eq!(
            (long.sregs.cr0, long.sregs.cr4, long.sregs.efer),
            (0x8001_0033, 0x620, 0x500)
        );
        assert_eq!((long.sregs.tr.type_, long.sregs.ldt.type_), (0xb, 0x2));
        let prot = entry_state(CpuMode::Protected, 0x10_0000);
        assert_eq!(prot.sregs.cs, flat(BOOT_CS, 0xb, 1, 0));
        assert_eq!(prot.sregs.ds, flat(BOOT_DS, 0x3, 1, 0));
        assert_eq!(
            (
                prot.sregs.cr0,
                prot.sregs.cr3,
                prot.sregs.cr4,
                prot.sregs.efer
            ),
            (0x11, 0, 0, 0)
        );
    }
}
