//! The target description (`qXfer:features:read:target.xml`). It is chosen at run time,
//! because the ymm upper halves are part of it only when the guest CPU has AVX.

use super::layout::{Feature, Layout};
use crate::gdb::target::KvmTarget;
use crate::x86::{Cr0, Cr4, Efer, RFLAGS_IOPL_SHIFT, Rflags};
use bitflags::Flags;
use gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverride;
use gdbstub::target::{TargetError, TargetResult};
use std::fmt::Write as _;

impl<A: Layout> TargetDescriptionXmlOverride for KvmTarget<'_, A> {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::NonFatal);
        }
        let xml = self.xml.as_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
        let end = start.saturating_add(length).min(xml.len());
        let n = (end - start).min(buf.len());
        buf[..n].copy_from_slice(&xml[start..start + n]);
        Ok(n)
    }
}

/// A flags type's field: (name, first bit, last bit).
type Field = (&'static str, u32, u32);
/// A flags type: its fields.
type Fields = &'static [Field];

/// One single-bit field per named flag of `F`, in declaration (ascending bit) order: the
/// names and bits are [`crate::x86`]'s, which uses the SDM's names as gdb's i386 target
/// descriptions do.
fn bit_fields<F: Flags<Bits = u64> + 'static>() -> Vec<Field> {
    F::FLAGS
        .iter()
        .map(|f| {
            let bit = f.value().bits().trailing_zeros();
            (f.name(), bit, bit)
        })
        .collect()
}

/// EFLAGS (SDM Vol. 1, 3.4.3): the flags, the always-one bit 1 unnamed as in gdb's own
/// description, and the two-bit IOPL.
fn eflags_fields() -> Vec<Field> {
    let mut fields: Vec<Field> = bit_fields::<Rflags>()
        .into_iter()
        .map(|(name, start, end)| {
            let fixed = Rflags::FIXED1.bits().trailing_zeros();
            (if start == fixed { "" } else { name }, start, end)
        })
        .collect();
    fields.push(("IOPL", RFLAGS_IOPL_SHIFT, RFLAGS_IOPL_SHIFT + 1));
    fields.sort_by_key(|&(_, start, _)| start);
    fields
}

/// MXCSR (SDM Vol. 1, 10.2.3).
const MXCSR_FIELDS: Fields = &[
    ("IE", 0, 0),
    ("DE", 1, 1),
    ("ZE", 2, 2),
    ("OE", 3, 3),
    ("UE", 4, 4),
    ("PE", 5, 5),
    ("DAZ", 6, 6),
    ("IM", 7, 7),
    ("DM", 8, 8),
    ("ZM", 9, 9),
    ("OM", 10, 10),
    ("UM", 11, 11),
    ("PM", 12, 12),
    ("FZ", 15, 15),
];

fn flags_xml(out: &mut String, id: &str, size: usize, fields: &[(&str, u32, u32)]) {
    let _ = writeln!(out, "  <flags id=\"{id}\" size=\"{size}\">");
    for (name, start, end) in fields {
        let _ = writeln!(
            out,
            "    <field name=\"{name}\" start=\"{start}\" end=\"{end}\"/>"
        );
    }
    out.push_str("  </flags>\n");
}

/// The types a feature's registers use, beyond gdb's predefined ones.
fn feature_types<L: Layout>(out: &mut String, feature: Feature) {
    let p = L::TYPE_PREFIX;
    match feature {
        Feature::Core => {
            flags_xml(out, &format!("{p}_eflags"), 4, &eflags_fields());
            flags_xml(out, &format!("{p}_cr0"), L::WORD, &bit_fields::<Cr0>());
            let top = 8 * L::WORD as u32 - 1;
            flags_xml(
                out,
                &format!("{p}_cr3"),
                L::WORD,
                &[("PCID", 0, 11), ("PDBR", 12, top)],
            );
            flags_xml(out, &format!("{p}_cr4"), L::WORD, &bit_fields::<Cr4>());
            flags_xml(out, &format!("{p}_efer"), L::WORD, &bit_fields::<Efer>());
        }
        Feature::Sse => {
            for (id, ty, count) in [
                ("v4f", "ieee_single", 4),
                ("v2d", "ieee_double", 2),
                ("v16i8", "int8", 16),
                ("v8i16", "int16", 8),
                ("v4i32", "int32", 4),
                ("v2i64", "int64", 2),
            ] {
                let _ = writeln!(
                    out,
                    "  <vector id=\"{id}\" type=\"{ty}\" count=\"{count}\"/>"
                );
            }
            out.push_str("  <union id=\"vec128\">\n");
            for (name, ty) in [
                ("v4_float", "v4f"),
                ("v2_double", "v2d"),
                ("v16_int8", "v16i8"),
                ("v8_int16", "v8i16"),
                ("v4_int32", "v4i32"),
                ("v2_int64", "v2i64"),
                ("uint128", "uint128"),
            ] {
                let _ = writeln!(out, "    <field name=\"{name}\" type=\"{ty}\"/>");
            }
            out.push_str("  </union>\n");
            flags_xml(out, "i386_mxcsr", 4, MXCSR_FIELDS);
        }
        Feature::Avx => {}
    }
}

/// The target description of layout `L`, with the AVX feature if `avx`.
pub fn target_xml<L: Layout>(avx: bool) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\n",
    );
    let _ = writeln!(out, "<architecture>{}</architecture>", L::ARCHITECTURE);
    for feature in Feature::ALL {
        if feature == Feature::Avx && !avx {
            continue;
        }
        let _ = writeln!(out, "<feature name=\"{}\">", feature.name());
        feature_types::<L>(&mut out, feature);
        for (i, d) in L::regs().iter().enumerate() {
            if d.feature != feature {
                continue;
            }
            let _ = write!(
                out,
                "  <reg name=\"{}\" bitsize=\"{}\" type=\"{}\" regnum=\"{i}\"",
                d.name, d.bits, d.ty
            );
            if let Some(g) = d.group {
                let _ = write!(out, " group=\"{g}\"");
            }
            // LLDB's attributes; gdb ignores attributes it does not know.
            if let Some(g) = d.generic {
                let _ = write!(out, " generic=\"{g}\"");
            }
            if let Some(n) = d.dwarf {
                let _ = write!(out, " dwarf_regnum=\"{n}\" ehframe_regnum=\"{n}\"");
            }
            out.push_str("/>\n");
        }
        out.push_str("</feature>\n");
    }
    out.push_str("</target>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb::regs::layout::{I386Full, X86_64Full};

    #[test]
    fn xml_numbers_every_register_in_order() {
        let xml = target_xml::<X86_64Full>(true);
        for (i, d) in X86_64Full::regs().iter().enumerate() {
            let needle = format!("<reg name=\"{}\" bitsize=\"{}\"", d.name, d.bits);
            let at = xml
                .find(&needle)
                .unwrap_or_else(|| panic!("{} missing", d.name));
            assert!(xml[at..].starts_with(&format!("{needle} type=\"{}\" regnum=\"{i}\"", d.ty)));
        }
        assert!(!target_xml::<X86_64Full>(false).contains("ymm0h"));
        assert!(target_xml::<I386Full>(false).contains("<architecture>i386</architecture>"));
    }

    /// The flag fields gdb is told, as spelled before they came from `x86/`.
    #[test]
    fn flag_fields_are_pinned() {
        let eflags = [
            ("CF", 0, 0),
            ("", 1, 1),
            ("PF", 2, 2),
            ("AF", 4, 4),
            ("ZF", 6, 6),
            ("SF", 7, 7),
            ("TF", 8, 8),
            ("IF", 9, 9),
            ("DF", 10, 10),
            ("OF", 11, 11),
            ("IOPL", 12, 13),
            ("NT", 14, 14),
            ("RF", 16, 16),
            ("VM", 17, 17),
            ("AC", 18, 18),
            ("VIF", 19, 19),
            ("VIP", 20, 20),
            ("ID", 21, 21),
        ];
        assert_eq!(eflags_fields(), eflags);
        let names = |f: Vec<Field>| -> Vec<String> {
            f.iter().map(|(n, s, e)| format!("{n}:{s}-{e}")).collect()
        };
        assert_eq!(
            names(bit_fields::<Cr0>()).join(" "),
            "PE:0-0 MP:1-1 EM:2-2 TS:3-3 ET:4-4 NE:5-5 WP:16-16 AM:18-18 NW:29-29 CD:30-30 \
             PG:31-31"
        );
        assert_eq!(
            names(bit_fields::<Cr4>()).join(" "),
            "VME:0-0 PVI:1-1 TSD:2-2 DE:3-3 PSE:4-4 PAE:5-5 MCE:6-6 PGE:7-7 PCE:8-8 \
             OSFXSR:9-9 OSXMMEXCPT:10-10 UMIP:11-11 LA57:12-12 VMXE:13-13 SMXE:14-14 \
             FSGSBASE:16-16 PCIDE:17-17 OSXSAVE:18-18 SMEP:20-20 SMAP:21-21 PKE:22-22 \
             CET:23-23 PKS:24-24"
        );
        assert_eq!(
            names(bit_fields::<Efer>()).join(" "),
            "SCE:0-0 LME:8-8 LMA:10-10 NXE:11-11 SVME:12-12 LMSLE:13-13 FFXSR:14-14 TCE:15-15"
        );
    }
}
