//! Segment and gate descriptors shown to a user: `info gdt`, `info idt` and the segment
//! registers' hidden parts in `info registers`. The decoding itself is
//! [`crate::x86::descriptors`]'s (Intel SDM Vol. 3A, 3.4.5, 3.5, 5.8.3, 6.11, 6.14.1).

pub use crate::x86::descriptors::TableMode;
use crate::x86::descriptors::{
    Descriptor, Gate, GateKind, SegmentDescriptor, TYPE_ACCESSED, TYPE_CODE,
    TYPE_CONFORMING_OR_DOWN, TYPE_READ_OR_WRITE, decode, ivt_entry, system_type,
};
use kvm_bindings::kvm_segment;
use std::fmt::Write as _;

/// The exception names of vectors 0–21 (SDM 6.3.1, Table 6-1); 15 is reserved.
const EXCEPTIONS: [&str; 22] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
];

/// How many table entries `info gdt` and `info idt` print at most.
pub const MAX_TABLE_LINES: usize = 300;

/// A short name for a segment: `code64`, `code32`, `code16`, `data`, `LDT`, `TSS64` …
pub fn segment_kind(s: &SegmentDescriptor, mode: TableMode) -> &'static str {
    if s.code_data {
        if s.type_ & TYPE_CODE == 0 {
            "data"
        } else if s.long && mode == TableMode::Long {
            "code64"
        } else if s.db {
            "code32"
        } else {
            "code16"
        }
    } else {
        match (s.type_, mode) {
            (system_type::LDT, _) => "LDT",
            (system_type::TSS_AVAIL, TableMode::Long) => "TSS64",
            (system_type::TSS_BUSY, TableMode::Long) => "TSS64-busy",
            (system_type::TSS_AVAIL, _) => "TSS32",
            (system_type::TSS_BUSY, _) => "TSS32-busy",
            (system_type::TSS16_AVAIL, _) => "TSS16",
            (system_type::TSS16_BUSY, _) => "TSS16-busy",
            _ => "system",
        }
    }
}

/// The type field in words, e.g. `execute/read, accessed` (SDM Table 3-1).
pub fn type_words(s: &SegmentDescriptor) -> String {
    if !s.code_data {
        return match s.type_ {
            system_type::LDT => "local descriptor table",
            system_type::TSS_BUSY | system_type::TSS16_BUSY => "busy task",
            system_type::TSS_AVAIL | system_type::TSS16_AVAIL => "available task",
            _ => "system",
        }
        .into();
    }
    let t = s.type_;
    let mut w = Vec::new();
    if t & TYPE_CODE != 0 {
        w.push(if t & TYPE_READ_OR_WRITE != 0 {
            "execute/read"
        } else {
            "execute-only"
        });
        if t & TYPE_CONFORMING_OR_DOWN != 0 {
            w.push("conforming");
        }
    } else {
        w.push(if t & TYPE_READ_OR_WRITE != 0 {
            "read/write"
        } else {
            "read-only"
        });
        if t & TYPE_CONFORMING_OR_DOWN != 0 {
            w.push("expand-down");
        }
    }
    if t & TYPE_ACCESSED != 0 {
        w.push("accessed");
    }
    w.join(", ")
}

/// QEMU's `[CRA]`-style type letters: for code C(onforming) R(eadable) A(ccessed), for data
/// E(xpand-down) W(ritable) A(ccessed).
fn type_letters(s: &SegmentDescriptor) -> String {
    let t = s.type_;
    let letter = |bit: u8, c: char| if t & bit != 0 { c } else { '-' };
    if t & TYPE_CODE != 0 {
        format!(
            "[{}{}{}]",
            letter(TYPE_CONFORMING_OR_DOWN, 'C'),
            letter(TYPE_READ_OR_WRITE, 'R'),
            letter(TYPE_ACCESSED, 'A')
        )
    } else {
        format!(
            "[{}{}{}]",
            letter(TYPE_CONFORMING_OR_DOWN, 'E'),
            letter(TYPE_READ_OR_WRITE, 'W'),
            letter(TYPE_ACCESSED, 'A')
        )
    }
}

/// The attribute flags of a segment as they sit in descriptor bits 63:32 with the base and
/// limit bits cleared (QEMU's `info registers` column): the high half of the descriptor's
/// encoding with base and limit zero.
pub fn attribute_word(s: &SegmentDescriptor) -> u32 {
    let flags_only = SegmentDescriptor {
        base: 0,
        raw_limit: 0,
        ..*s
    };
    (flags_only.encode() >> 32) as u32
}

/// A gate's kind as printed: `int-gate64`, `trap-gate32`, `call-gate64`, `task-gate`.
pub fn gate_name(g: &Gate) -> String {
    match g.kind {
        GateKind::Task => "task-gate".into(),
        GateKind::Call => format!("call-gate{}", g.bits),
        GateKind::Interrupt => format!("int-gate{}", g.bits),
        GateKind::Trap => format!("trap-gate{}", g.bits),
    }
}

/// The hidden part of a segment register, as KVM reports it, in descriptor form.
pub fn from_kvm(k: &kvm_segment) -> SegmentDescriptor {
    SegmentDescriptor {
        base: k.base,
        // KVM reports the byte limit; store it so that byte_limit() gives it back.
        raw_limit: k.limit,
        type_: k.type_ & 0xf,
        code_data: k.s != 0,
        dpl: k.dpl & 3,
        present: k.present != 0,
        avl: k.avl != 0,
        long: k.l != 0,
        db: k.db != 0,
        granularity: false,
    }
}

/// One segment register in QEMU's `info registers` form: selector, base, byte limit, the
/// attribute word, then decoded: `CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 code64 [-RA]`.
pub fn format_segment_register(name: &str, k: &kvm_segment, mode: TableMode) -> String {
    let mut s = from_kvm(k);
    let attr = attribute_word(&SegmentDescriptor {
        granularity: k.g != 0,
        ..s
    });
    s.granularity = false;
    let mut line = format!(
        "{name:<3}={:04x} {:016x} {:08x} {attr:08x} DPL={} {}",
        k.selector,
        s.base,
        s.byte_limit(),
        s.dpl,
        segment_kind(&s, mode),
    );
    if s.code_data {
        let _ = write!(line, " {}", type_letters(&s));
    } else {
        let _ = write!(line, " ({})", type_words(&s));
    }
    if k.present == 0 {
        line.push_str(" not-present");
    }
    if k.unusable != 0 {
        line.push_str(" unusable");
    }
    line
}

fn format_segment_entry(s: &SegmentDescriptor, mode: TableMode) -> String {
    let mut line = format!(
        "{:<10} base={:#018x} limit={:#010x} DPL={} {}",
        segment_kind(s, mode),
        s.base,
        s.byte_limit(),
        s.dpl,
        if s.present { "P" } else { "not-present" },
    );
    // L and D/B mean nothing in LDT and TSS descriptors (SDM 3.5).
    if s.code_data {
        let _ = write!(line, " L={} D={}", u8::from(s.long), u8::from(s.db));
    }
    let _ = write!(
        line,
        " G={} AVL={} type={:#x} ({})",
        u8::from(s.granularity),
        u8::from(s.avl),
        s.type_,
        type_words(s)
    );
    line
}

fn format_gate(g: &Gate) -> String {
    let mut line = if g.kind == GateKind::Task {
        format!("{:<12} TSS selector {:#06x}", gate_name(g), g.selector)
    } else {
        format!(
            "{:<12} {:#06x}:{:#018x}",
            gate_name(g),
            g.selector,
            g.offset
        )
    };
    let _ = write!(
        line,
        " DPL={} {}",
        g.dpl,
        if g.present { "P" } else { "not-present" }
    );
    if g.bits == 64 && g.kind != GateKind::Call {
        let _ = write!(line, " IST={}", g.ist);
    }
    if g.kind == GateKind::Call && g.bits != 64 {
        let _ = write!(line, " params={}", g.params);
    }
    line
}

/// The lines of `info gdt` for the table bytes `table` read from linear address `base`
/// with limit `limit`; `table` is shorter than `limit + 1` when part of the table is not
/// mapped to guest RAM. Null descriptors are counted, not listed.
pub fn format_gdt(table: &[u8], base: u64, limit: u16, mode: TableMode) -> Vec<String> {
    let size = usize::from(limit) + 1;
    let mut lines = vec![format!(
        "GDT at {base:#x}, limit {limit:#x}: {} 8-byte slots{}",
        size / 8,
        match mode {
            TableMode::Long => " (long mode: system descriptors take two)",
            _ => "",
        }
    )];
    if table.len() < size {
        lines.push(format!(
            "only {} bytes of the table are mapped to guest RAM",
            table.len()
        ));
    }
    let mut off = 0;
    let mut nulls = 0;
    let mut shown = 0;
    let mut more = 0;
    while off + 8 <= table.len() {
        let (d, len) = decode(&table[off..], mode);
        if d == Descriptor::Null {
            nulls += 1;
        } else if shown >= MAX_TABLE_LINES {
            more += 1;
        } else {
            let what = match d {
                Descriptor::Segment(s) => format_segment_entry(&s, mode),
                Descriptor::Gate(g) => format_gate(&g),
                Descriptor::Reserved { raw, type_ } => {
                    format!("reserved system type {type_:#x} (raw {raw:#018x})")
                }
                Descriptor::Null => unreachable!("skipped above"),
            };
            lines.push(format!("{off:#06x}  {what}"));
            shown += 1;
        }
        off += len;
    }
    if more > 0 {
        lines.push(format!("… ({more} more descriptors)"));
    }
    if nulls > 0 {
        lines.push(format!("({nulls} null descriptors not shown)"));
    }
    lines
}

/// The name of exception vector `v`, or "" for others.
pub fn vector_name(v: usize) -> &'static str {
    EXCEPTIONS.get(v).copied().unwrap_or("")
}

/// The lines of `info idt` for the table bytes `table` read from linear address `base`
/// with limit `limit`. Vectors whose gate is not present (or all zero) are counted, not
/// listed.
pub fn format_idt(table: &[u8], base: u64, limit: u16, mode: TableMode) -> Vec<String> {
    let size = usize::from(limit) + 1;
    let entry = match mode {
        TableMode::Real => 4,
        TableMode::Protected => 8,
        TableMode::Long => 16,
    };
    let mut lines = Vec::new();
    if limit == 0 {
        lines.push(format!(
            "IDT at {base:#x}, limit 0: empty, so any interrupt or exception shuts the guest down (triple fault)"
        ));
        return lines;
    }
    lines.push(format!(
        "IDT at {base:#x}, limit {limit:#x}: {} vectors of {entry}-byte {}",
        size.div_ceil(entry).min(256),
        match mode {
            TableMode::Real => "real-mode segment:offset entries",
            TableMode::Protected => "protected-mode gates",
            TableMode::Long => "64-bit gates",
        }
    ));
    if table.len() < size {
        lines.push(format!(
            "only {} bytes of the table are mapped to guest RAM",
            table.len()
        ));
    }
    let mut empty = 0;
    let mut shown = 0;
    for (v, chunk) in table.chunks(entry).enumerate().take(256) {
        if chunk.len() < entry {
            break;
        }
        let name = vector_name(v);
        let what = if mode == TableMode::Real {
            match ivt_entry(chunk) {
                Some((0, 0)) | None => None,
                Some((seg, off)) => Some(format!("{seg:04x}:{off:04x}")),
            }
        } else {
            match decode(chunk, mode).0 {
                Descriptor::Null => None,
                Descriptor::Gate(g) if !g.present => None,
                Descriptor::Gate(g) => Some(format_gate(&g)),
                Descriptor::Segment(s) => Some(format!(
                    "not a gate: a {} segment descriptor (the guest would take #GP)",
                    segment_kind(&s, mode)
                )),
                Descriptor::Reserved { type_, .. } => Some(format!(
                    "not a gate: reserved type {type_:#x} (the guest would take #GP)"
                )),
            }
        };
        match what {
            None => empty += 1,
            Some(_) if shown >= MAX_TABLE_LINES => empty += 1,
            Some(w) => {
                lines.push(format!("{v:#04x} {name:<4} {w}"));
                shown += 1;
            }
        }
    }
    if empty > 0 {
        lines.push(format!(
            "({empty} vectors without a present gate not shown)"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kvmgdb boot GDT's descriptors: 64-bit code, 32-bit code, flat data (their bytes
    /// are checked in `x86::descriptors`).
    const CODE64: u64 = SegmentDescriptor::flat_code64().encode();
    const CODE32: u64 = SegmentDescriptor::flat_code32().encode();
    const DATA: u64 = SegmentDescriptor::flat_data().encode();

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn flat_code_and_data_segments() {
        let (d, len) = decode(&CODE64.to_le_bytes(), TableMode::Long);
        assert_eq!(len, 8);
        let Descriptor::Segment(s) = d else {
            panic!("{d:?}")
        };
        assert_eq!(s.base, 0);
        assert_eq!(s.raw_limit, 0xfffff);
        assert_eq!(s.byte_limit(), 0xffff_ffff);
        assert_eq!(s.type_, 0xb);
        assert!(s.code_data && s.present && s.long && !s.db && s.granularity);
        assert_eq!(s.dpl, 0);
        assert_eq!(segment_kind(&s, TableMode::Long), "code64");
        assert_eq!(type_words(&s), "execute/read, accessed");
        assert_eq!(attribute_word(&s), 0x00a0_9b00);

        let Descriptor::Segment(s) = decode(&CODE32.to_le_bytes(), TableMode::Protected).0 else {
            panic!()
        };
        assert_eq!(segment_kind(&s, TableMode::Protected), "code32");
        let Descriptor::Segment(s) = decode(&DATA.to_le_bytes(), TableMode::Long).0 else {
            panic!()
        };
        assert_eq!(segment_kind(&s, TableMode::Long), "data");
        assert_eq!(type_words(&s), "read/write, accessed");
        assert_eq!(attribute_word(&s), 0x00c0_9300);
    }

    #[test]
    fn scattered_base_and_limit_bits() {
        // base 0x12345678, limit 0xabcde, byte granularity, DPL 3, data expand-down r/o.
        let raw: u64 = 0x12 << 56
            | 0x0a << 48
            | (0x80 | 3 << 5 | 0x10 | 0x4) << 40
            | 0x34 << 32
            | 0x5678 << 16
            | 0xbcde;
        let Descriptor::Segment(s) = decode(&raw.to_le_bytes(), TableMode::Protected).0 else {
            panic!()
        };
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.byte_limit(), 0xabcde);
        assert_eq!(s.dpl, 3);
        assert_eq!(type_words(&s), "read-only, expand-down");
    }

    #[test]
    fn long_mode_tss_takes_16_bytes_with_a_64_bit_base() {
        // A 64-bit available TSS at 0xffff_8880_1234_5000, limit 0x67 (SDM Figure 8-4).
        let base: u64 = 0xffff_8880_1234_5000;
        let low = (base >> 24 & 0xff) << 56
            | (1 << 47 | u64::from(system_type::TSS_AVAIL) << 40)
            | (base >> 16 & 0xff) << 32
            | (base & 0xffff) << 16
            | 0x67;
        let table = bytes(&[low, base >> 32, DATA]);
        let (d, len) = decode(&table, TableMode::Long);
        assert_eq!(len, 16);
        let Descriptor::Segment(s) = d else { panic!() };
        assert_eq!(s.base, base);
        assert_eq!(s.byte_limit(), 0x67);
        assert_eq!(segment_kind(&s, TableMode::Long), "TSS64");
        // The same bytes in a 32-bit GDT: an 8-byte 32-bit TSS with the low base only.
        let (d, len) = decode(&table, TableMode::Protected);
        assert_eq!(len, 8);
        let Descriptor::Segment(s) = d else { panic!() };
        assert_eq!(s.base, base & 0xffff_ffff);
        assert_eq!(segment_kind(&s, TableMode::Protected), "TSS32");
    }

    /// A 64-bit interrupt or trap gate (SDM Figure 6-8).
    fn gate64(offset: u64, selector: u64, type_: u64, dpl: u64, ist: u64) -> [u64; 2] {
        [
            (offset >> 16 & 0xffff) << 48
                | (1 << 15 | dpl << 13 | type_ << 8 | ist) << 32
                | selector << 16
                | (offset & 0xffff),
            offset >> 32,
        ]
    }

    #[test]
    fn long_mode_interrupt_and_trap_gates() {
        let g = gate64(0xffff_ffff_8100_1234, 0x10, 0xe, 0, 2);
        let (d, len) = decode(&bytes(&g), TableMode::Long);
        assert_eq!(len, 16);
        assert_eq!(
            d,
            Descriptor::Gate(Gate {
                kind: GateKind::Interrupt,
                bits: 64,
                selector: 0x10,
                offset: 0xffff_ffff_8100_1234,
                dpl: 0,
                present: true,
                ist: 2,
                params: 0,
                type_: 0xe,
            })
        );
        let t = gate64(0x1000, 0x08, 0xf, 3, 0);
        let Descriptor::Gate(g) = decode(&bytes(&t), TableMode::Long).0 else {
            panic!()
        };
        assert_eq!((g.kind, g.dpl, g.offset), (GateKind::Trap, 3, 0x1000));
        assert_eq!(
            format_gate(&g),
            "trap-gate64  0x0008:0x0000000000001000 DPL=3 P IST=0"
        );
    }

    #[test]
    fn gdt_listing() {
        let table = bytes(&[0, 0, CODE64, DATA]);
        let lines = format_gdt(&table, 0x500, 0x1f, TableMode::Long);
        assert!(
            lines[0].starts_with("GDT at 0x500, limit 0x1f"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with(
                "0x0010  code64     base=0x0000000000000000 limit=0xffffffff DPL=0 P L=1 D=0 G=1"
            ),
            "{lines:?}"
        );
        assert!(lines[2].starts_with("0x0018  data "), "{lines:?}");
        assert_eq!(lines[3], "(2 null descriptors not shown)");
        // A table half outside guest RAM says so.
        let lines = format_gdt(&table[..16], 0x500, 0x1f, TableMode::Long);
        assert!(lines[1].contains("only 16 bytes"), "{lines:?}");
    }

    #[test]
    fn idt_listing() {
        let mut words = Vec::new();
        for v in 0..32u64 {
            let g = if v == 14 {
                gate64(0xffff_ffff_8100_0000, 0x10, 0xe, 0, 1)
            } else {
                [0, 0]
            };
            words.extend_from_slice(&g);
        }
        let table = bytes(&words);
        let lines = format_idt(&table, 0x1000, 0x1ff, TableMode::Long);
        assert_eq!(
            lines,
            [
                "IDT at 0x1000, limit 0x1ff: 32 vectors of 16-byte 64-bit gates",
                "0x0e #PF  int-gate64   0x0010:0xffffffff81000000 DPL=0 P IST=1",
                "(31 vectors without a present gate not shown)",
            ]
        );
        let lines = format_idt(&[], 0, 0, TableMode::Long);
        assert!(lines[0].contains("empty"), "{lines:?}");
        // Real mode: the IVT's segment:offset pairs.
        let ivt = [0x53, 0xff, 0x00, 0xf0, 0, 0, 0, 0];
        let lines = format_idt(&ivt, 0, 7, TableMode::Real);
        assert_eq!(lines[1], "0x00 #DE  f000:ff53");
    }

    #[test]
    fn segment_registers_like_qemu() {
        let cs = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x10,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        assert_eq!(
            format_segment_register("CS", &cs, TableMode::Long),
            "CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 code64 [-RA]"
        );
        let tr = kvm_segment {
            limit: 0x67,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        assert_eq!(
            format_segment_register("TR", &tr, TableMode::Long),
            "TR =0000 0000000000000000 00000067 00008b00 DPL=0 TSS64-busy (busy task)"
        );
        let ldt = kvm_segment {
            limit: 0xffff,
            type_: 0x2,
            present: 1,
            unusable: 1,
            ..Default::default()
        };
        assert!(
            format_segment_register("LDT", &ldt, TableMode::Long)
                .ends_with("LDT (local descriptor table) unusable")
        );
    }
}
