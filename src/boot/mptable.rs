//! The Intel MultiProcessor table (MultiProcessor Specification 1.4, chapter 4): the MP
//! floating pointer structure and the MP configuration table it points to, at
//! `platform::MP_TABLE`. It describes the machine the ACPI MADT describes (`acpi.rs`) for a
//! kernel that does not read ACPI (Linux with `acpi=off`, older kernels, small SMP
//! kernels): every CPU with its local APIC, the one ISA bus, the I/O APIC, where each ISA
//! IRQ arrives on it (with the MADT's interrupt source overrides) and the local APICs' LINT
//! wiring of a PC in virtual-wire mode.

use super::acpi::{checksum, interrupt_overrides};
use crate::platform::{
    IOAPIC_BASE, IOAPIC_ID, IOAPIC_VERSION, LAPIC_BASE, LAPIC_VERSION, MP_TABLE,
};

/// Bytes of the floating pointer structure (MP spec 4.1): one 16-byte paragraph.
const FLOATING_LEN: usize = 16;
/// Bytes of the configuration table header (MP spec 4.2).
const HEADER_LEN: usize = 44;
/// Bytes of a processor entry (MP spec 4.3.1); every other base entry has 8.
const PROCESSOR_LEN: usize = 20;
/// The specification revision both structures carry: 1.4.
const SPEC_REV: u8 = 4;
/// Base table entry types (MP spec table 4-3), in the order the table must list them.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Processor entry CPU flags (MP spec table 4-5): usable, and the bootstrap processor.
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BSP: u8 = 1 << 1;
/// I/O APIC entry flag: usable (MP spec table 4-7).
const IOAPIC_ENABLED: u8 = 1;
/// Interrupt types (MP spec table 4-9): a vectored interrupt, an NMI, the 8259's ExtINT.
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// Interrupt entry flags (MP spec table 4-10, the MADT's MPS INTI flags): "polarity and
/// trigger mode as the bus defines them" (ISA: edge, active high).
const FLAGS_BUS_DEFAULT: u16 = 0;
/// The ISA bus's id: the only bus.
const ISA_BUS_ID: u8 = 0;
/// The bus type string of ISA (MP spec table 4-8), six bytes, blank padded.
const ISA_BUS_TYPE: &[u8; 6] = b"ISA   ";
/// ISA IRQs 0..15; IRQ 2 is the 8259 cascade, which no device raises.
const ISA_IRQS: u8 = 16;
const ISA_CASCADE_IRQ: u8 = 2;
/// A local interrupt entry's destination for every local APIC.
const ALL_LOCAL_APICS: u8 = 0xff;
/// The LAPIC inputs of a PC in virtual-wire mode: the 8259's INTR on LINT0, NMI on LINT1.
const LINT0: u8 = 0;
const LINT1: u8 = 1;
/// The OEM and product ids of the configuration table header.
const OEM_ID: &[u8; 8] = b"KVMGDB  ";
const PRODUCT_ID: &[u8; 12] = b"KVMGDB PC   ";

/// Bytes the structures take for `cpus` CPUs: the floating pointer, the header, one entry
/// per CPU, the bus, the I/O APIC, 15 ISA interrupts and 2 local interrupts.
pub(super) const fn size(cpus: usize) -> usize {
    FLOATING_LEN + HEADER_LEN + cpus * PROCESSOR_LEN + 8 * (2 + (ISA_IRQS as usize - 1) + 2)
}

/// The ISA IRQ `irq`'s I/O APIC pin and flags: as the MADT's interrupt source overrides
/// give them (the PIT's IRQ 0 on `PIT_GSI`, the SCI level-triggered), else its own pin,
/// as ISA defines it.
fn isa_route(overrides: &[(u8, u32, u16)], irq: u8) -> (u8, u16) {
    overrides
        .iter()
        .find(|o| o.0 == irq)
        .map_or((irq, FLAGS_BUS_DEFAULT), |&(_, gsi, flags)| {
            (gsi as u8, flags)
        })
}

/// An 8-byte interrupt assignment entry (MP spec 4.3.4 and 4.3.5).
fn interrupt(kind: u8, int_type: u8, flags: u16, bus_irq: u8, dest: u8, pin: u8) -> [u8; 8] {
    let f = flags.to_le_bytes();
    [kind, int_type, f[0], f[1], ISA_BUS_ID, bus_irq, dest, pin]
}

/// The floating pointer structure at `platform::MP_TABLE` followed by the configuration
/// table for `cpus` CPUs (1 to 255: the caller checks, as for the MADT). CPU `i` has local
/// APIC id `i`, as KVM numbers them and the MADT and CPUID say; CPU 0 is the bootstrap
/// processor. The processor entries carry no CPUID signature nor feature flags: kernels
/// read CPUID themselves (Linux ignores both fields).
pub(super) fn build(cpus: usize) -> Vec<u8> {
    let table_at = MP_TABLE + FLOATING_LEN as u64;
    let mut t = Vec::with_capacity(size(cpus) - FLOATING_LEN);
    // The header (MP spec 4.2); its length, entry count and checksum are filled in below.
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&[0, 0, SPEC_REV, 0]);
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(PRODUCT_ID);
    t.extend_from_slice(&[0; 4]); // no OEM table
    t.extend_from_slice(&[0; 2]);
    t.extend_from_slice(&[0; 2]); // entry count
    t.extend_from_slice(&(LAPIC_BASE as u32).to_le_bytes());
    t.extend_from_slice(&[0; 4]); // no extended entries, so a zero length and checksum
    let mut entries: u16 = 0;
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 };
        t.extend_from_slice(&[ENTRY_PROCESSOR, cpu as u8, LAPIC_VERSION, flags]);
        t.extend_from_slice(&[0; PROCESSOR_LEN - 4]);
        entries += 1;
    }
    t.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    t.extend_from_slice(ISA_BUS_TYPE);
    t.extend_from_slice(&[ENTRY_IOAPIC, IOAPIC_ID, IOAPIC_VERSION, IOAPIC_ENABLED]);
    t.extend_from_slice(&(IOAPIC_BASE as u32).to_le_bytes());
    entries += 2;
    let overrides = interrupt_overrides();
    for irq in (0..ISA_IRQS).filter(|&i| i != ISA_CASCADE_IRQ) {
        let (pin, flags) = isa_route(&overrides, irq);
        t.extend_from_slice(&interrupt(
            ENTRY_IO_INTERRUPT,
            INT_VECTORED,
            flags,
            irq,
            IOAPIC_ID,
            pin,
        ));
        entries += 1;
    }
    // Virtual-wire mode (MP spec 3.6.2.2): the 8259 reaches the BSP through LINT0, and
    // NMIs every processor through LINT1, as the MADT's local APIC NMI structure says.
    t.extend_from_slice(&interrupt(
        ENTRY_LOCAL_INTERRUPT,
        INT_EXTINT,
        FLAGS_BUS_DEFAULT,
        0,
        0,
        LINT0,
    ));
    t.extend_from_slice(&interrupt(
        ENTRY_LOCAL_INTERRUPT,
        INT_NMI,
        FLAGS_BUS_DEFAULT,
        0,
        ALL_LOCAL_APICS,
        LINT1,
    ));
    entries += 2;
    let len = t.len() as u16;
    t[4..6].copy_from_slice(&len.to_le_bytes());
    t[34..36].copy_from_slice(&entries.to_le_bytes());
    t[7] = checksum(&t);

    // The floating pointer (MP spec 4.1): one paragraph, revision 1.4, feature byte 1 zero
    // (a configuration table is present, no default configuration), feature byte 2 zero
    // (IMCRP clear: virtual-wire mode, no IMCR).
    let mut mp = Vec::with_capacity(size(cpus));
    mp.extend_from_slice(b"_MP_");
    mp.extend_from_slice(&(table_at as u32).to_le_bytes());
    mp.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    mp[10] = checksum(&mp);
    mp.extend_from_slice(&t);
    debug_assert_eq!(mp.len(), size(cpus));
    mp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PIT_GSI;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }
    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    /// The table's entries, each as (type, bytes), walked by the lengths the spec gives.
    fn entries(table: &[u8]) -> Vec<(u8, &[u8])> {
        let mut at = HEADER_LEN;
        let mut out = Vec::new();
        while at < u16_at(table, 4) as usize {
            let len = if table[at] == ENTRY_PROCESSOR { 20 } else { 8 };
            out.push((table[at], &table[at..at + len]));
            at += len;
        }
        out
    }

    /// Both structures read back as the specification lays them out, for 1, 8 and 255 CPUs.
    #[test]
    fn floating_pointer_and_configuration_table() {
        for cpus in [1, 8, 255] {
            let mp = build(cpus);
            assert_eq!(mp.len(), size(cpus));
            let fp = &mp[..16];
            assert_eq!(&fp[..4], b"_MP_");
            assert_eq!(u32_at(fp, 4) as u64, MP_TABLE + 16, "table right after it");
            assert_eq!((fp[8], fp[9], fp[11], fp[12]), (1, 4, 0, 0));
            assert_eq!(sum(fp), 0, "floating pointer checksum");
            assert_eq!(MP_TABLE % 16, 0, "on a paragraph boundary");

            let t = &mp[16..];
            assert_eq!(&t[..4], b"PCMP");
            assert_eq!(u16_at(t, 4) as usize, t.len());
            assert_eq!(t[6], 4, "revision 1.4");
            assert_eq!(sum(t), 0, "configuration table checksum");
            assert_eq!(u32_at(t, 36) as u64, LAPIC_BASE);
            assert_eq!((u16_at(t, 40), t[42]), (0, 0), "no extended table");
            let e = entries(t);
            assert_eq!(u16_at(t, 34) as usize, e.len(), "entry count");
            let types: Vec<u8> = e.iter().map(|(k, _)| *k).collect();
            assert!(types.is_sorted(), "entries in type order: {types:?}");

            let cpu: Vec<_> = e.iter().filter(|(k, _)| *k == 0).collect();
            assert_eq!(cpu.len(), cpus);
            for (i, (_, p)) in cpu.iter().enumerate() {
                assert_eq!(p[1] as usize, i, "APIC id");
                assert_eq!(p[2], LAPIC_VERSION);
                assert_eq!(p[3], if i == 0 { 3 } else { 1 }, "enabled, BSP first");
            }
            let bus: Vec<_> = e.iter().filter(|(k, _)| *k == 1).collect();
            assert_eq!(bus.len(), 1);
            assert_eq!(&bus[0].1[1..8], b"\0ISA   ");
            let ioapic: Vec<_> = e.iter().filter(|(k, _)| *k == 2).collect();
            assert_eq!(ioapic.len(), 1);
            assert_eq!(ioapic[0].1[..4], [2, IOAPIC_ID, IOAPIC_VERSION, 1]);
            assert_eq!(u32_at(ioapic[0].1, 4) as u64, IOAPIC_BASE);

            // ISA IRQ -> (pin, flags): the MADT's overrides, the cascade left out.
            let routes: Vec<(u8, u8, u16)> = e
                .iter()
                .filter(|(k, _)| *k == 3)
                .map(|(_, x)| {
                    assert_eq!((x[1], x[4], x[6]), (0, 0, IOAPIC_ID), "INT from ISA");
                    (x[5], x[7], u16_at(x, 2))
                })
                .collect();
            let mut want: Vec<(u8, u8, u16)> =
                (0..16).filter(|&i| i != 2).map(|i| (i, i, 0)).collect();
            if PIT_GSI != 0 {
                want[0] = (0, PIT_GSI as u8, 0b0101); // IRQ 0 on pin 2, edge, active high
            }
            want[8] = (9, 9, 0b1101); // the SCI: level, active high
            assert_eq!(routes, want);

            let local: Vec<_> = e.iter().filter(|(k, _)| *k == 4).map(|(_, x)| *x).collect();
            assert_eq!(
                local,
                [[4, 3, 0, 0, 0, 0, 0, 0], [4, 1, 0, 0, 0, 0, 0xff, 1]]
            );
        }
    }
}
