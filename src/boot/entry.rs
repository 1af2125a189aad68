//! The CPU state a boot protocol enters the kernel in: 64-bit long mode with an identity
//! map, or 32-bit protected mode with paging off; the GDT both use, and the identity page
//! tables of long mode. Formats pick a mode here and add their own registers (RSI, EAX/EBX).

use super::layout;
use super::{EntrySregs, MemWrite, VcpuEntry};
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

/// Segment-descriptor access bytes and flags (SDM Vol. 3, 3.4.5).
const CODE64_DESC: u64 = 0x00af_9b00_0000_ffff; // L=1, P, DPL0, exec/read, accessed
const CODE32_DESC: u64 = 0x00cf_9b00_0000_ffff; // D=1, G=1, P, DPL0, exec/read, accessed
const DATA_DESC: u64 = 0x00cf_9300_0000_ffff; // D/B=1, G=1, P, DPL0, read/write, accessed

/// Descriptors in the GDT: null, unused, code ([`BOOT_CS`]), data ([`BOOT_DS`]).
const GDT_ENTRIES: usize = 4;

/// The GDT for `mode`, at [`layout::GDT`].
pub(super) fn gdt(mode: CpuMode) -> MemWrite {
    let code = match mode {
        CpuMode::Long => CODE64_DESC,
        CpuMode::Protected => CODE32_DESC,
    };
    let gdt: [u64; GDT_ENTRIES] = [0, 0, code, DATA_DESC];
    MemWrite::Bytes {
        gpa: layout::GDT,
        data: gdt.iter().flat_map(|d| d.to_le_bytes()).collect(),
    }
}

/// Page-table entry bits (SDM Vol. 3, 4.5).
pub(super) const PTE_PRESENT: u64 = 1 << 0;
pub(super) const PTE_WRITABLE: u64 = 1 << 1;
pub(super) const PTE_HUGE: u64 = 1 << 7;

const PAGE: u64 = 0x1000;
const GIB: u64 = 1 << 30;

/// How much the long-mode entry identity-maps: at least 4 GiB, and all RAM up to `ram_top`.
fn identity_map_size(ram_top: u64) -> u64 {
    ram_top.max(4 * GIB).next_multiple_of(GIB)
}

/// PML4 → PDPT → PDs mapping `[0, identity_map_size)` with 2 MiB pages, at [`layout::PML4`]:
/// one blob holding every table page, the unused entries zero.
pub(super) fn identity_page_tables(ram_top: u64) -> MemWrite {
    let pml4 = layout::PML4;
    let pdpt = pml4 + PAGE;
    let gib = identity_map_size(ram_top) / GIB;
    let mut tables = vec![0u8; ((2 + gib) * PAGE) as usize];
    let mut put = |at: u64, v: u64| {
        let off = (at - pml4) as usize;
        tables[off..off + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(pml4, pdpt | PTE_PRESENT | PTE_WRITABLE);
    for g in 0..gib {
        let pd = pdpt + PAGE * (g + 1);
        put(pdpt + 8 * g, pd | PTE_PRESENT | PTE_WRITABLE);
        for i in 0..512u64 {
            let addr = (g << 30) | (i << 21);
            put(pd + 8 * i, addr | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE);
        }
    }
    MemWrite::Bytes {
        gpa: pml4,
        data: tables,
    }
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

/// The boot vCPU at `entry` in `mode`: flat segments from the GDT, the stack at
/// [`layout::STACK_TOP`], interrupts off. The format adds its own argument registers.
pub(super) fn entry_state(mode: CpuMode, entry: u64) -> VcpuEntry {
    let regs = kvm_regs {
        rip: entry,
        rflags: RFLAGS_RESERVED1,
        rsp: layout::STACK_TOP,
        ..Default::default()
    };
    let data = segment(BOOT_DS, 0x3, 1, 0);
    let (cs, cr0, cr3, cr4, efer) = match mode {
        CpuMode::Long => (
            segment(BOOT_CS, 0xb, 0, 1),
            CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            layout::PML4,
            CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
            EFER_LME | EFER_LMA,
        ),
        CpuMode::Protected => (segment(BOOT_CS, 0xb, 1, 0), CR0_PE | CR0_ET, 0, 0, 0),
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
            type_: 0xb,
            present: 1,
            s: 0,
            ..Default::default()
        },
        ldt: kvm_segment {
            limit: 0xffff,
            type_: 0x2,
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
        cr0,
        cr3,
        cr4,
        efer,
    };
    VcpuEntry { regs, sregs }
}
