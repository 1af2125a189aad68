//! Segment and gate descriptors as the CPU reads them from the GDT, the LDT and the IDT
//! (Intel SDM Vol. 3A, 3.4.5 "Segment Descriptors", 3.5 "System Descriptor Types", 5.8.3
//! "Call Gates", 6.11 "IDT Descriptors", 6.14.1 "64-Bit Mode IDT"): decoded for the monitor
//! and encoded for the boot GDT. Showing them to a user is `inspect/descriptors.rs`'s job.

use super::{Cr0, Efer};

/// The largest 20-bit segment limit: with G set, 4 GiB (SDM 3.4.5).
pub const MAX_RAW_LIMIT: u32 = 0xf_ffff;

/// Descriptor bit 44, S: 1 for code and data segments, 0 for system descriptors (SDM 3.4.5).
pub const DESC_S: u64 = 1 << 44;
/// Descriptor bit 47, P: segment present (SDM 3.4.5).
pub const DESC_P: u64 = 1 << 47;
/// Descriptor bit 52, AVL: available to software (SDM 3.4.5).
pub const DESC_AVL: u64 = 1 << 52;
/// Descriptor bit 53, L: 64-bit code segment (SDM 3.4.5).
pub const DESC_L: u64 = 1 << 53;
/// Descriptor bit 54, D/B: default operation size / big (SDM 3.4.5).
pub const DESC_DB: u64 = 1 << 54;
/// Descriptor bit 55, G: limit in 4 KiB units (SDM 3.4.5).
pub const DESC_G: u64 = 1 << 55;

/// Type bit 3 of a code/data descriptor: code (SDM 3.4.5.1, Table 3-1).
pub const TYPE_CODE: u8 = 0x8;
/// Type bit 2: conforming (code) or expand-down (data).
pub const TYPE_CONFORMING_OR_DOWN: u8 = 0x4;
/// Type bit 1: readable (code) or writable (data).
pub const TYPE_READ_OR_WRITE: u8 = 0x2;
/// Type bit 0: accessed.
pub const TYPE_ACCESSED: u8 = 0x1;

/// System-descriptor types (SDM 3.5, Table 3-2). Types 4–7 only exist outside IA-32e mode.
pub mod system_type {
    /// 16-bit TSS, available.
    pub const TSS16_AVAIL: u8 = 0x1;
    /// LDT.
    pub const LDT: u8 = 0x2;
    /// 16-bit TSS, busy.
    pub const TSS16_BUSY: u8 = 0x3;
    /// 16-bit call gate.
    pub const CALL_GATE16: u8 = 0x4;
    /// Task gate.
    pub const TASK_GATE: u8 = 0x5;
    /// 16-bit interrupt gate.
    pub const INT_GATE16: u8 = 0x6;
    /// 16-bit trap gate.
    pub const TRAP_GATE16: u8 = 0x7;
    /// 32-bit TSS (64-bit in IA-32e mode), available.
    pub const TSS_AVAIL: u8 = 0x9;
    /// 32-bit TSS (64-bit in IA-32e mode), busy.
    pub const TSS_BUSY: u8 = 0xb;
    /// 32-bit call gate (64-bit in IA-32e mode).
    pub const CALL_GATE: u8 = 0xc;
    /// 32-bit interrupt gate (64-bit in IA-32e mode).
    pub const INT_GATE: u8 = 0xe;
    /// 32-bit trap gate (64-bit in IA-32e mode).
    pub const TRAP_GATE: u8 = 0xf;
}

/// How descriptors are laid out, which follows the CPU mode (SDM 3.5, 6.10, 6.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableMode {
    /// Real mode (CR0.PE clear): the IDTR points to 4-byte segment:offset vectors.
    Real,
    /// Protected mode: 8-byte descriptors and gates.
    Protected,
    /// IA-32e mode (EFER.LMA): system descriptors and gates take 16 bytes.
    Long,
}

impl TableMode {
    /// The table layout selected by CR0 and EFER.
    pub fn from_regs(cr0: u64, efer: u64) -> TableMode {
        if !Cr0::from_bits_retain(cr0).contains(Cr0::PE) {
            TableMode::Real
        } else if Efer::from_bits_retain(efer).contains(Efer::LMA) {
            TableMode::Long
        } else {
            TableMode::Protected
        }
    }
}

/// A code, data, LDT or TSS segment descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentDescriptor {
    /// Base address (64 bits for system descriptors in IA-32e mode).
    pub base: u64,
    /// The 20-bit limit field as stored.
    pub raw_limit: u32,
    /// The 4-bit type field.
    pub type_: u8,
    /// S: code/data rather than system.
    pub code_data: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// P.
    pub present: bool,
    /// AVL.
    pub avl: bool,
    /// L: 64-bit code.
    pub long: bool,
    /// D/B.
    pub db: bool,
    /// G: the limit counts 4 KiB units.
    pub granularity: bool,
}

impl SegmentDescriptor {
    /// The limit in bytes: with G set, the 20-bit field counts 4 KiB units (SDM 3.4.5).
    pub fn byte_limit(&self) -> u32 {
        if self.granularity {
            (self.raw_limit << 12) | 0xfff
        } else {
            self.raw_limit
        }
    }

    /// A flat 4 GiB ring-0 code segment for 64-bit mode: L set, D clear, execute/read,
    /// accessed (SDM 3.4.5, 5.2.1). The boot GDT's code descriptor for an ELF64 entry.
    pub const fn flat_code64() -> SegmentDescriptor {
        SegmentDescriptor {
            long: true,
            db: false,
            ..SegmentDescriptor::flat_code32()
        }
    }

    /// A flat 4 GiB ring-0 32-bit code segment: D set, execute/read, accessed. The boot
    /// GDT's code descriptor for a Multiboot entry.
    pub const fn flat_code32() -> SegmentDescriptor {
        SegmentDescriptor {
            type_: TYPE_CODE | TYPE_READ_OR_WRITE | TYPE_ACCESSED,
            ..SegmentDescriptor::flat_data()
        }
    }

    /// A flat 4 GiB ring-0 data segment: B set, read/write, accessed. The boot GDT's data
    /// descriptor.
    pub const fn flat_data() -> SegmentDescriptor {
        SegmentDescriptor {
            base: 0,
            raw_limit: MAX_RAW_LIMIT,
            type_: TYPE_READ_OR_WRITE | TYPE_ACCESSED,
            code_data: true,
            dpl: 0,
            present: true,
            avl: false,
            long: false,
            db: true,
            granularity: true,
        }
    }

    /// The descriptor's low 8 bytes as the CPU reads them from a GDT or LDT (SDM 3.4.5,
    /// Figure 3-8): base bits 31:0, the 20-bit limit, type and flags. Base bits 63:32 of a
    /// 16-byte system descriptor are [`SegmentDescriptor::encode_high`]'s; limit bits above
    /// 19 and DPL bits above 1 are dropped.
    pub const fn encode(&self) -> u64 {
        let (base, limit) = (self.base, self.raw_limit as u64);
        (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | ((self.type_ & 0xf) as u64) << 40
            | (self.code_data as u64) << 44
            | ((self.dpl & 3) as u64) << 45
            | (self.present as u64) << 47
            | ((limit >> 16) & 0xf) << 48
            | (self.avl as u64) << 52
            | (self.long as u64) << 53
            | (self.db as u64) << 54
            | (self.granularity as u64) << 55
            | ((base >> 24) & 0xff) << 56
    }

    /// Bytes 8–15 of a 16-byte IA-32e system descriptor (LDT, TSS): base bits 63:32, the
    /// rest reserved as zero (SDM 8.2.3, Figure 8-4).
    pub const fn encode_high(&self) -> u64 {
        self.base >> 32
    }
}

/// The kind of a gate descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateKind {
    /// Call gate (SDM 5.8.3).
    Call,
    /// Task gate; the selector names a TSS (SDM 6.11).
    Task,
    /// Interrupt gate: IF is cleared on entry (SDM 6.11).
    Interrupt,
    /// Trap gate: IF is left alone (SDM 6.11).
    Trap,
}

/// A call, task, interrupt or trap gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// What kind of gate.
    pub kind: GateKind,
    /// 16, 32 or 64: the operand size the gate's type selects.
    pub bits: u8,
    /// The target code segment (or TSS, for a task gate).
    pub selector: u16,
    /// The entry point's offset in that segment (0 for a task gate).
    pub offset: u64,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// P.
    pub present: bool,
    /// Interrupt stack table index (64-bit interrupt and trap gates).
    pub ist: u8,
    /// Parameter count (call gates outside IA-32e mode).
    pub params: u8,
    /// The 4-bit type field.
    pub type_: u8,
}

/// One decoded descriptor-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// All zero: the null descriptor, or an unused slot.
    Null,
    /// A code, data, LDT or TSS segment.
    Segment(SegmentDescriptor),
    /// A gate.
    Gate(Gate),
    /// A system descriptor whose type is reserved in this mode.
    Reserved {
        /// The low 8 bytes.
        raw: u64,
        /// The 4-bit type field.
        type_: u8,
    },
}

/// The little-endian u64 at `off`, or 0 past the end of `bytes`.
fn le64(bytes: &[u8], off: usize) -> u64 {
    let mut raw = [0u8; 8];
    if let Some(b) = bytes.get(off..off + 8) {
        raw.copy_from_slice(b);
    }
    u64::from_le_bytes(raw)
}

/// Bits `lo..lo + len` of `v`.
fn bits(v: u64, lo: u32, len: u32) -> u64 {
    (v >> lo) & ((1 << len) - 1)
}

/// Decodes a code/data or system segment descriptor from its low 8 bytes (SDM 3.4.5,
/// Figure 3-8); `high` holds bytes 8–15 of a 16-byte system descriptor (base 63:32).
fn segment(raw: u64, high: Option<u64>) -> SegmentDescriptor {
    let base_low = bits(raw, 16, 24) | (bits(raw, 56, 8) << 24);
    SegmentDescriptor {
        base: base_low | high.map_or(0, |h| bits(h, 0, 32) << 32),
        raw_limit: (bits(raw, 0, 16) | (bits(raw, 48, 4) << 16)) as u32,
        type_: bits(raw, 40, 4) as u8,
        code_data: raw & DESC_S != 0,
        dpl: bits(raw, 45, 2) as u8,
        present: raw & DESC_P != 0,
        avl: raw & DESC_AVL != 0,
        long: raw & DESC_L != 0,
        db: raw & DESC_DB != 0,
        granularity: raw & DESC_G != 0,
    }
}

/// Decodes a gate from its low 8 bytes (SDM Figures 5-8, 6-2) and, for 64-bit gates, bytes
/// 8–15 (offset 63:32, SDM Figures 5-9, 6-8).
fn gate(raw: u64, high: Option<u64>, kind: GateKind, bits_: u8, type_: u8) -> Gate {
    let offset_low = if kind == GateKind::Task {
        0
    } else if bits_ == 16 {
        bits(raw, 0, 16)
    } else {
        bits(raw, 0, 16) | (bits(raw, 48, 16) << 16)
    };
    Gate {
        kind,
        bits: bits_,
        selector: bits(raw, 16, 16) as u16,
        offset: offset_low | high.map_or(0, |h| bits(h, 0, 32) << 32),
        dpl: bits(raw, 45, 2) as u8,
        present: raw & DESC_P != 0,
        ist: if bits_ == 64 && kind != GateKind::Call {
            bits(raw, 32, 3) as u8
        } else {
            0
        },
        params: if kind == GateKind::Call && bits_ != 64 {
            bits(raw, 32, 5) as u8
        } else {
            0
        },
        type_,
    }
}

/// Decodes the descriptor at the start of `bytes` in a table laid out for `mode`; returns it
/// and how many bytes it occupies (16 for IA-32e system descriptors and gates, else 8).
/// Bytes past the end of `bytes` read as zero. Real mode has no descriptors: use
/// [`ivt_entry`] for its interrupt table.
pub fn decode(bytes: &[u8], mode: TableMode) -> (Descriptor, usize) {
    let raw = le64(bytes, 0);
    if raw == 0 {
        return (Descriptor::Null, 8);
    }
    let type_ = bits(raw, 40, 4) as u8;
    if raw & DESC_S != 0 {
        return (Descriptor::Segment(segment(raw, None)), 8);
    }
    if mode == TableMode::Long {
        let high = Some(le64(bytes, 8));
        let d = match type_ {
            system_type::LDT | system_type::TSS_AVAIL | system_type::TSS_BUSY => {
                Descriptor::Segment(segment(raw, high))
            }
            system_type::CALL_GATE => Descriptor::Gate(gate(raw, high, GateKind::Call, 64, type_)),
            system_type::INT_GATE => {
                Descriptor::Gate(gate(raw, high, GateKind::Interrupt, 64, type_))
            }
            system_type::TRAP_GATE => Descriptor::Gate(gate(raw, high, GateKind::Trap, 64, type_)),
            _ => Descriptor::Reserved { raw, type_ },
        };
        return (d, 16);
    }
    let d = match type_ {
        system_type::TSS16_AVAIL
        | system_type::LDT
        | system_type::TSS16_BUSY
        | system_type::TSS_AVAIL
        | system_type::TSS_BUSY => Descriptor::Segment(segment(raw, None)),
        system_type::CALL_GATE16 => Descriptor::Gate(gate(raw, None, GateKind::Call, 16, type_)),
        system_type::TASK_GATE => Descriptor::Gate(gate(raw, None, GateKind::Task, 32, type_)),
        system_type::INT_GATE16 => {
            Descriptor::Gate(gate(raw, None, GateKind::Interrupt, 16, type_))
        }
        system_type::TRAP_GATE16 => Descriptor::Gate(gate(raw, None, GateKind::Trap, 16, type_)),
        system_type::CALL_GATE => Descriptor::Gate(gate(raw, None, GateKind::Call, 32, type_)),
        system_type::INT_GATE => Descriptor::Gate(gate(raw, None, GateKind::Interrupt, 32, type_)),
        system_type::TRAP_GATE => Descriptor::Gate(gate(raw, None, GateKind::Trap, 32, type_)),
        _ => Descriptor::Reserved { raw, type_ },
    };
    (d, 8)
}

/// A real-mode interrupt vector (SDM 20.1.4): (segment, offset).
pub fn ivt_entry(bytes: &[u8]) -> Option<(u16, u16)> {
    let b = bytes.get(..4)?;
    Some((
        u16::from_le_bytes([b[2], b[3]]),
        u16::from_le_bytes([b[0], b[1]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boot GDT's descriptors as raw words (`boot/entry.rs` builds them from the
    /// constructors): 64-bit code, 32-bit code, flat data.
    const BOOT_CODE64: u64 = 0x00af_9b00_0000_ffff;
    const BOOT_CODE32: u64 = 0x00cf_9b00_0000_ffff;
    const BOOT_DATA: u64 = 0x00cf_9300_0000_ffff;

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn flat_constructors_encode_the_boot_gdt() {
        assert_eq!(SegmentDescriptor::flat_code64().encode(), BOOT_CODE64);
        assert_eq!(SegmentDescriptor::flat_code32().encode(), BOOT_CODE32);
        assert_eq!(SegmentDescriptor::flat_data().encode(), BOOT_DATA);
        for (raw, s) in [
            (BOOT_CODE64, SegmentDescriptor::flat_code64()),
            (BOOT_CODE32, SegmentDescriptor::flat_code32()),
            (BOOT_DATA, SegmentDescriptor::flat_data()),
        ] {
            assert_eq!(
                decode(&raw.to_le_bytes(), TableMode::Long),
                (Descriptor::Segment(s), 8)
            );
        }
    }

    #[test]
    fn encode_round_trips_through_decode() {
        // Every field at an unusual value: scattered base and limit bits, DPL 3, AVL.
        let s = SegmentDescriptor {
            base: 0x1234_5678,
            raw_limit: 0xa_bcde,
            type_: TYPE_CONFORMING_OR_DOWN | TYPE_ACCESSED,
            code_data: true,
            dpl: 3,
            present: false,
            avl: true,
            long: false,
            db: true,
            granularity: false,
        };
        let raw = s.encode();
        assert_eq!(raw, 0x125a_7534_5678_bcde);
        assert_eq!(
            decode(&raw.to_le_bytes(), TableMode::Protected).0,
            Descriptor::Segment(s)
        );
        // A 64-bit busy TSS takes 16 bytes in IA-32e mode; the high half holds base 63:32.
        let tss = SegmentDescriptor {
            base: 0xffff_8880_1234_5000,
            raw_limit: 0x67,
            type_: system_type::TSS_BUSY,
            code_data: false,
            dpl: 0,
            present: true,
            avl: false,
            long: false,
            db: false,
            granularity: false,
        };
        let table = bytes(&[tss.encode(), tss.encode_high()]);
        assert_eq!(
            decode(&table, TableMode::Long),
            (Descriptor::Segment(tss), 16)
        );
    }

    #[test]
    fn protected_mode_gates() {
        // 32-bit interrupt gate to 0x0008:0xc0101234 (SDM Figure 6-2).
        let raw: u64 = 0xc010 << 48 | (0x8e00) << 32 | 0x0008 << 16 | 0x1234;
        let Descriptor::Gate(g) = decode(&raw.to_le_bytes(), TableMode::Protected).0 else {
            panic!()
        };
        assert_eq!(g.kind, GateKind::Interrupt);
        assert_eq!(g.bits, 32);
        assert_eq!((g.selector, g.offset), (8, 0xc010_1234));
        // Task gate to TSS selector 0x28.
        let raw: u64 = (0x8500) << 32 | 0x28 << 16;
        let Descriptor::Gate(g) = decode(&raw.to_le_bytes(), TableMode::Protected).0 else {
            panic!()
        };
        assert_eq!((g.kind, g.selector, g.offset), (GateKind::Task, 0x28, 0));
        // 32-bit call gate with 3 parameters, DPL 3.
        let raw: u64 = 0x0010 << 48 | (0xec03) << 32 | 0x0008 << 16 | 0x2000;
        let Descriptor::Gate(g) = decode(&raw.to_le_bytes(), TableMode::Protected).0 else {
            panic!()
        };
        assert_eq!((g.kind, g.params, g.dpl), (GateKind::Call, 3, 3));
        assert_eq!(g.offset, 0x0010_2000);
        // Type 0xe is not valid as a 16-byte descriptor type 0x6 in long mode: reserved.
        let raw: u64 = (0x8600) << 32 | 0x0008 << 16;
        assert!(matches!(
            decode(&bytes(&[raw, 0]), TableMode::Long).0,
            Descriptor::Reserved { type_: 6, .. }
        ));
    }
}
