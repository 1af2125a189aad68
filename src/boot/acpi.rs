//! The ACPI tables of the machine (ACPI 6.5): RSDP, RSDT and XSDT, FADT, FACS, MADT and a
//! DSDT, laid out from `platform::ACPI_RSDP` up, all below `platform::ACPI_AREA_END`.
//! They describe only what the VMM provides (`src/platform.rs`): the CPUs' local APICs,
//! the I/O APIC, the PM1a event and control blocks and PM timer, the SCI on IRQ 9, the
//! reset register at port 0xcf9 and the S5 (soft-off) sleep state.
//!
//! A table builder of our own, not the `acpi_tables` crate: its 0.2 MADT cannot set the
//! PCAT_COMPAT flag nor hold interrupt source overrides, and its RSDP has no RSDT address,
//! which leaves little of it to use for these few fixed tables.

use super::LoadError;
use crate::platform::{
    ACPI_AREA_END, ACPI_RSDP, IOAPIC_BASE, IOAPIC_ID, LAPIC_BASE, PIT_GSI, PM_TMR_PORT,
    PM1A_CNT_PORT, PM1A_EVT_PORT, RESET_PORT, RESET_VALUE, SCI_IRQ, SLP_TYP_S5,
};

/// The OEM ID of every table (ACPI 6.5, 5.2.6).
const OEM_ID: &[u8; 6] = b"KVMGDB";
/// The OEM table ID of every table.
const OEM_TABLE_ID: &[u8; 8] = b"KVMGDB  ";
/// The creator ID (the ASL compiler's vendor ID for tables it compiles; ours for these).
const CREATOR_ID: &[u8; 4] = b"KVMG";
/// Bytes of a system description table header (ACPI 6.5, 5.2.6).
const HEADER_LEN: usize = 36;
/// Bytes of the ACPI 2.0+ RSDP; the ACPI 1.0 part is the first [`RSDP_V1_LEN`].
pub(super) const RSDP_LEN: usize = 36;
/// Bytes of the ACPI 1.0 RSDP, covered by its first checksum.
pub(super) const RSDP_V1_LEN: usize = 20;
/// Bytes of the FACS (ACPI 6.5, 5.2.10), which must be 64-byte aligned.
const FACS_LEN: usize = 64;
/// Bytes of an ACPI 6.5 FADT (revision 6, minor 5).
const FADT_LEN: usize = 276;
/// The most CPUs the MADT lists: xAPIC IDs 0..=254 (255 is the broadcast ID).
pub(super) const MAX_CPUS: usize = 255;

/// MADT flag: the machine also has dual 8259 PICs (ACPI 6.5, 5.2.12, table 5.20).
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT interrupt controller structure types (ACPI 6.5, table 5.21).
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// Processor Local APIC flag: the processor is usable (ACPI 6.5, table 5.23).
const LAPIC_ENABLED: u32 = 1;
/// MPS INTI flags (ACPI 6.5, table 5.26; the MP table's interrupt entry flags, MP spec
/// table 4-10): polarity in bits 0..1, trigger mode in 2..3; 0 in both is "as the bus
/// defines it".
pub(super) const INTI_ACTIVE_HIGH: u16 = 0b01;
pub(super) const INTI_EDGE: u16 = 0b01 << 2;
pub(super) const INTI_LEVEL: u16 = 0b11 << 2;
/// The ISA IRQ of the PIT's timer interrupt (its I/O APIC pin is `platform::PIT_GSI`).
const PIT_IRQ: u8 = 0;
/// The LAPIC input NMIs arrive on (LINT1, as the PC wires it).
const NMI_LINT: u8 = 1;

/// FADT fixed feature flags (ACPI 6.5, table 5.10).
const FADT_WBINVD: u32 = 1 << 0;
const FADT_PROC_C1: u32 = 1 << 2;
/// No fixed-feature power button nor sleep button: the machine has neither.
const FADT_PWR_BUTTON: u32 = 1 << 4;
const FADT_SLP_BUTTON: u32 = 1 << 5;
/// The RTC's wake status is not in the fixed register space.
const FADT_FIX_RTC: u32 = 1 << 6;
const FADT_RESET_REG_SUP: u32 = 1 << 10;
/// IA-PC boot architecture flags (ACPI 6.5, table 5.11): legacy ISA devices (COM1) are
/// there; there is no 8042 (only its reset line), no VGA.
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// FADT `Preferred_PM_Profile`: unspecified.
const PM_PROFILE_UNSPECIFIED: u8 = 0;
/// `P_LVL2_LAT` / `P_LVL3_LAT` values that say C2 / C3 are not supported.
const C2_UNSUPPORTED: u16 = 101;
const C3_UNSUPPORTED: u16 = 1001;
/// Generic Address Structure address space: system I/O (ACPI 6.5, table 5.1).
const GAS_SYSTEM_IO: u8 = 1;
/// GAS access sizes: byte, word, dword.
const GAS_BYTE: u8 = 1;
const GAS_WORD: u8 = 2;
const GAS_DWORD: u8 = 3;
/// Lengths of the PM1 event block (status + enable), PM1 control block and PM timer.
const PM1_EVT_LEN: u8 = 4;
const PM1_CNT_LEN: u8 = 2;
const PM_TMR_LEN: u8 = 4;

/// The machine's ACPI tables as one blob to write at [`ACPI_RSDP`], and where each table
/// lies in it.
#[derive(Clone, Debug)]
pub(crate) struct AcpiTables {
    /// The bytes from [`ACPI_RSDP`] on.
    pub(crate) bytes: Vec<u8>,
    /// Guest-physical addresses of the tables, by signature.
    pub(crate) tables: Vec<([u8; 4], u64)>,
}

impl AcpiTables {
    /// The ACPI 2.0+ RSDP (36 bytes: RSDT and XSDT addresses, both checksums).
    pub(crate) fn rsdp(&self) -> &[u8] {
        &self.bytes[..RSDP_LEN]
    }

    /// The RSDP as ACPI 1.0 defines it: the first 20 bytes, revision 0, with its checksum
    /// made again, for a boot protocol that hands over an "old" RSDP copy (which, read as
    /// revision 2, would send its reader past the copy's end).
    pub(crate) fn rsdp_v1(&self) -> [u8; RSDP_V1_LEN] {
        let mut v1 = [0u8; RSDP_V1_LEN];
        v1.copy_from_slice(&self.bytes[..RSDP_V1_LEN]);
        v1[15] = 0;
        v1[8] = 0;
        v1[8] = checksum(&v1);
        v1
    }

    /// The address of the table with `signature`, if built.
    #[cfg(test)]
    pub(crate) fn address(&self, signature: &[u8; 4]) -> Option<u64> {
        self.tables
            .iter()
            .find(|(s, _)| s == signature)
            .map(|&(_, a)| a)
    }
}

/// The byte that makes `bytes` sum to zero (mod 256) once added (ACPI's and the MP
/// specification's checksums alike).
pub(super) fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// A system description table: the header (ACPI 6.5, 5.2.6) and `body`, its length and
/// checksum filled in.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// A Generic Address Structure for `width` bits of system I/O at `port` (ACPI 6.5, 5.2.3.2).
fn gas_io(port: u16, width: u8) -> [u8; 12] {
    let access = match width {
        8 => GAS_BYTE,
        16 => GAS_WORD,
        _ => GAS_DWORD,
    };
    let mut g = [0u8; 12];
    g[0] = GAS_SYSTEM_IO;
    g[1] = width;
    g[3] = access;
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// The DSDT's AML (ACPI 6.5, 20.2): `Name (\_S5, Package () { 5, 5, 0, 0 })`, the sleep
/// type values of soft-off for PM1a and PM1b control (ACPI 6.5, 7.4.2). Nothing else: the
/// machine has no other device that needs describing in AML.
fn dsdt_aml() -> Vec<u8> {
    const NAME_OP: u8 = 0x08;
    const ROOT_CHAR: u8 = b'\\';
    const PACKAGE_OP: u8 = 0x12;
    const BYTE_PREFIX: u8 = 0x0a;
    const ZERO_OP: u8 = 0x00;
    let s5 = SLP_TYP_S5 as u8;
    // NumElements, then SLP_TYPa and SLP_TYPb as ByteConst, then two reserved Zeros.
    let elements = [4, BYTE_PREFIX, s5, BYTE_PREFIX, s5, ZERO_OP, ZERO_OP];
    // A one-byte PkgLength counts itself and what follows (under 64 bytes).
    let pkg_length = (elements.len() + 1) as u8;
    let mut aml = vec![NAME_OP, ROOT_CHAR];
    aml.extend_from_slice(b"_S5_");
    aml.extend_from_slice(&[PACKAGE_OP, pkg_length]);
    aml.extend_from_slice(&elements);
    aml
}

/// The FACS (ACPI 6.5, 5.2.10): no waking vector, no global lock owner, version 2.
fn facs() -> Vec<u8> {
    let mut f = vec![0u8; FACS_LEN];
    f[..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    f[32] = 2; // version
    f
}

/// The ISA IRQs that do not arrive on the I/O APIC pin of their number, or not as ISA
/// signals them, as (IRQ, GSI, MPS INTI flags): the PIT's IRQ 0 when it is not on GSI 0
/// (edge), and the SCI, IRQ 9 (level, active high). The MADT lists them as interrupt
/// source overrides, the MP table in its ISA interrupt entries.
pub(super) fn interrupt_overrides() -> Vec<(u8, u32, u16)> {
    let pit =
        (PIT_GSI != u32::from(PIT_IRQ)).then_some((PIT_IRQ, PIT_GSI, INTI_ACTIVE_HIGH | INTI_EDGE));
    let sci = (
        SCI_IRQ as u8,
        u32::from(SCI_IRQ),
        INTI_ACTIVE_HIGH | INTI_LEVEL,
    );
    pit.into_iter().chain([sci]).collect()
}

/// The MADT body (ACPI 6.5, 5.2.12): the local APIC address and PCAT_COMPAT, one enabled
/// Processor Local APIC per CPU (UID and APIC ID = its index, as KVM numbers vCPUs), the
/// I/O APIC, the interrupt source overrides (the PIT's IRQ 0 when it is not on GSI 0, edge;
/// the SCI, IRQ 9, level and active high), and LINT1 as every processor's NMI input.
fn madt_body(cpus: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(LAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for cpu in 0..cpus as u8 {
        b.extend_from_slice(&[MADT_LOCAL_APIC, 8, cpu, cpu]);
        b.extend_from_slice(&LAPIC_ENABLED.to_le_bytes());
    }
    b.extend_from_slice(&[MADT_IO_APIC, 12, IOAPIC_ID, 0]);
    b.extend_from_slice(&(IOAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    for (irq, gsi, flags) in interrupt_overrides() {
        b.extend_from_slice(&[MADT_INTERRUPT_OVERRIDE, 10, 0 /* ISA */, irq]);
        b.extend_from_slice(&gsi.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    }
    // Processor UID 0xff: all processors; flags 0: the bus's polarity and trigger.
    b.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, NMI_LINT]);
    b
}

/// The FADT (ACPI 6.5, 5.2.9, revision 6.5): the PM1a blocks and PM timer at the platform's
/// ports, the SCI, the reset register, the DSDT in both its 32- and 64-bit fields, the FACS
/// in the 32-bit one only (ACPICA installs the FACS once per field it finds: Linux listed
/// it twice), and not hardware-reduced. No SMI command port: the machine is always in ACPI
/// mode. No GPE block, no century register, no C2/C3.
fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut f = vec![0u8; FADT_LEN];
    let mut put = |off: usize, bytes: &[u8]| f[off..off + bytes.len()].copy_from_slice(bytes);
    put(36, &(facs as u32).to_le_bytes()); // FIRMWARE_CTRL
    put(40, &(dsdt as u32).to_le_bytes()); // DSDT
    put(45, &[PM_PROFILE_UNSPECIFIED]);
    put(46, &SCI_IRQ.to_le_bytes()); // SCI_INT
    put(56, &u32::from(PM1A_EVT_PORT).to_le_bytes()); // PM1a_EVT_BLK
    put(64, &u32::from(PM1A_CNT_PORT).to_le_bytes()); // PM1a_CNT_BLK
    put(76, &u32::from(PM_TMR_PORT).to_le_bytes()); // PM_TMR_BLK
    put(88, &[PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN]);
    put(96, &C2_UNSUPPORTED.to_le_bytes()); // P_LVL2_LAT
    put(98, &C3_UNSUPPORTED.to_le_bytes()); // P_LVL3_LAT
    put(
        109,
        &(IAPC_LEGACY_DEVICES | IAPC_VGA_NOT_PRESENT).to_le_bytes(),
    );
    let flags = FADT_WBINVD
        | FADT_PROC_C1
        | FADT_PWR_BUTTON
        | FADT_SLP_BUTTON
        | FADT_FIX_RTC
        | FADT_RESET_REG_SUP;
    put(112, &flags.to_le_bytes());
    put(116, &gas_io(RESET_PORT, 8)); // RESET_REG
    put(128, &[RESET_VALUE]);
    put(131, &[5]); // FADT minor version
    put(140, &dsdt.to_le_bytes()); // X_DSDT
    put(148, &gas_io(PM1A_EVT_PORT, 8 * PM1_EVT_LEN)); // X_PM1a_EVT_BLK
    put(172, &gas_io(PM1A_CNT_PORT, 8 * PM1_CNT_LEN)); // X_PM1a_CNT_BLK
    put(208, &gas_io(PM_TMR_PORT, 8 * PM_TMR_LEN)); // X_PM_TMR_BLK
    let body = f[HEADER_LEN..].to_vec();
    sdt(b"FACP", 6, &body)
}

/// Builds the tables of a machine with `cpus` CPUs, laid out from [`ACPI_RSDP`]: the RSDP,
/// the FACS (64-byte aligned), then the DSDT, FADT, MADT, RSDT and XSDT, each 16-byte
/// aligned.
pub(super) fn build(cpus: usize) -> Result<AcpiTables, LoadError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(LoadError::CpuCount {
            cpus,
            max: MAX_CPUS,
        });
    }
    let mut bytes = vec![0u8; RSDP_LEN];
    let mut tables = Vec::new();
    let mut place = |bytes: &mut Vec<u8>, table: &[u8], align: usize| -> u64 {
        bytes.resize(bytes.len().next_multiple_of(align), 0);
        let at = ACPI_RSDP + bytes.len() as u64;
        let signature: [u8; 4] = table[..4].try_into().unwrap_or_default();
        tables.push((signature, at));
        bytes.extend_from_slice(table);
        at
    };
    let facs = place(&mut bytes, &facs(), FACS_LEN);
    let dsdt = place(&mut bytes, &sdt(b"DSDT", 2, &dsdt_aml()), 16);
    let fadt = place(&mut bytes, &fadt(facs, dsdt), 16);
    let madt = place(&mut bytes, &sdt(b"APIC", 5, &madt_body(cpus)), 16);
    let entries = [fadt, madt];
    let rsdt_body: Vec<u8> = entries
        .iter()
        .flat_map(|&a| (a as u32).to_le_bytes())
        .collect();
    let rsdt = place(&mut bytes, &sdt(b"RSDT", 1, &rsdt_body), 16);
    let xsdt_body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    let xsdt = place(&mut bytes, &sdt(b"XSDT", 1, &xsdt_body), 16);
    debug_assert!(ACPI_RSDP + bytes.len() as u64 <= ACPI_AREA_END);

    // The RSDP (ACPI 6.5, 5.2.5.3).
    let r = &mut bytes[..RSDP_LEN];
    r[..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(OEM_ID);
    r[15] = 2; // revision: ACPI 2.0+
    r[16..20].copy_from_slice(&(rsdt as u32).to_le_bytes());
    r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..RSDP_V1_LEN]);
    r[32] = checksum(r);
    Ok(AcpiTables { bytes, tables })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }
    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// The table at guest-physical `addr`, cut to the length its header gives.
    fn table(t: &AcpiTables, addr: u64) -> &[u8] {
        let off = (addr - ACPI_RSDP) as usize;
        let len = u32_at(&t.bytes, off + 4) as usize;
        &t.bytes[off..off + len]
    }

    /// Follows the pointers as an OS does: RSDP → XSDT and RSDT → FADT, MADT; FADT → DSDT,
    /// FACS. Every table sums to zero, says its length, and lies in the ACPI area.
    #[test]
    fn pointers_lengths_and_checksums() {
        let t = build(1).unwrap();
        assert!(ACPI_RSDP + t.bytes.len() as u64 <= ACPI_AREA_END);
        let rsdp = t.rsdp();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        assert_eq!((rsdp[15], u32_at(rsdp, 20)), (2, 36), "revision, length");
        let v1 = t.rsdp_v1();
        assert_eq!((sum(&v1), v1[15]), (0, 0), "the ACPI 1.0 copy");
        assert_eq!(v1[16..20], rsdp[16..20], "it points at the RSDT");

        let xsdt = table(&t, u64_at(rsdp, 24));
        let rsdt = table(&t, u32_at(rsdp, 16).into());
        assert_eq!((&xsdt[..4], xsdt.len()), (&b"XSDT"[..], 36 + 16));
        assert_eq!((&rsdt[..4], rsdt.len()), (&b"RSDT"[..], 36 + 8));
        for i in 0..2 {
            assert_eq!(
                u64_at(xsdt, 36 + 8 * i),
                u64::from(u32_at(rsdt, 36 + 4 * i))
            );
        }
        let fadt = table(&t, u64_at(xsdt, 36));
        let madt = table(&t, u64_at(xsdt, 44));
        assert_eq!((&fadt[..4], fadt.len(), fadt[8]), (&b"FACP"[..], 276, 6));
        assert_eq!(&madt[..4], b"APIC");
        let dsdt = table(&t, u64_at(fadt, 140));
        assert_eq!(
            u64_at(fadt, 140),
            u64::from(u32_at(fadt, 40)),
            "X_DSDT = DSDT"
        );
        assert_eq!(&dsdt[..4], b"DSDT");
        // The FACS in FIRMWARE_CTRL alone: an OS installs each of the two fields it finds.
        let facs_at = u64::from(u32_at(fadt, 36));
        assert_eq!(u64_at(fadt, 132), 0, "no X_FIRMWARE_CTRL");
        assert_eq!(facs_at % 64, 0, "FACS alignment");
        let facs = &t.bytes[(facs_at - ACPI_RSDP) as usize..][..64];
        assert_eq!((&facs[..4], u32_at(facs, 4)), (&b"FACS"[..], 64));
        for tab in [xsdt, rsdt, fadt, madt, dsdt] {
            assert_eq!(sum(tab), 0, "{:?}", std::str::from_utf8(&tab[..4]));
            assert_eq!(&tab[10..16], OEM_ID);
        }
        assert_eq!(t.address(b"APIC"), Some(u64_at(xsdt, 44)));
    }

    /// The FADT fields the VMM's devices answer to.
    #[test]
    fn fadt_fields() {
        let t = build(1).unwrap();
        let fadt = table(&t, t.address(b"FACP").unwrap());
        assert_eq!(u16_at(fadt, 46), 9, "SCI_INT");
        assert_eq!(u32_at(fadt, 48), 0, "no SMI_CMD: always in ACPI mode");
        assert_eq!(u32_at(fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(&fadt[88..92], &[4, 2, 0, 4], "block lengths");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & 1 << 10, 0, "RESET_REG_SUP");
        assert_eq!(flags & 1 << 20, 0, "not HW_REDUCED_ACPI");
        assert_eq!(flags & 1 << 8, 0, "a 24-bit PM timer");
        // RESET_REG: system I/O, 8 bits, byte access, port 0xcf9; value 6.
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64_at(fadt, 120), 0xcf9);
        assert_eq!(fadt[128], 6, "RESET_VALUE");
        assert_eq!(fadt[131], 5, "minor version");
        // X_PM1a_EVT_BLK and X_PM1a_CNT_BLK, X_PM_TMR_BLK.
        assert_eq!(
            (&fadt[148..152], u64_at(fadt, 152)),
            (&[1, 32, 0, 3][..], 0x600)
        );
        assert_eq!(
            (&fadt[172..176], u64_at(fadt, 176)),
            (&[1, 16, 0, 2][..], 0x604)
        );
        assert_eq!(
            (&fadt[208..212], u64_at(fadt, 212)),
            (&[1, 32, 0, 3][..], 0x608)
        );
        assert!(fadt[160..172].iter().all(|&b| b == 0), "no PM1b");
    }

    /// The MADT for 1 and 4 CPUs, entry by entry.
    #[test]
    fn madt_entries() {
        for cpus in [1usize, 4] {
            let t = build(cpus).unwrap();
            let madt = table(&t, t.address(b"APIC").unwrap());
            assert_eq!(u32_at(madt, 36), 0xfee0_0000, "local APIC address");
            assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");
            let mut at = 44;
            let mut lapics = Vec::new();
            let mut rest = Vec::new();
            while at < madt.len() {
                let (kind, len) = (madt[at], madt[at + 1] as usize);
                assert!(len >= 2 && at + len <= madt.len(), "entry at {at}");
                let e = &madt[at..at + len];
                if kind == 0 {
                    lapics.push((e[2], e[3], u32_at(e, 4)));
                } else {
                    rest.push(e.to_vec());
                }
                at += len;
            }
            let want: Vec<_> = (0..cpus as u8).map(|i| (i, i, 1)).collect();
            assert_eq!(lapics, want, "{cpus} CPUs: UID, APIC ID, enabled");
            let ioapic = [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];
            // IRQ 0 → GSI 2 (the PIT on IOAPIC pin 2, as the VMM routes it), edge/high
            // (flags 0b0101); IRQ 9 → GSI 9, level/high (flags 0b1101).
            let pit = [2, 10, 0, 0, 2, 0, 0, 0, 0x05, 0];
            let sci = [2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0];
            let nmi = [4, 6, 0xff, 0, 0, 1];
            assert_eq!(rest, [&ioapic[..], &pit, &sci, &nmi]);
        }
    }

    /// A machine without CPUs or with more than xAPIC IDs can number gets no tables; the
    /// most CPUs still fit in the area.
    #[test]
    fn cpu_count_limits() {
        assert!(matches!(build(0), Err(LoadError::CpuCount { cpus: 0, .. })));
        assert!(matches!(
            build(256),
            Err(LoadError::CpuCount { cpus: 256, .. })
        ));
        let t = build(MAX_CPUS).unwrap();
        assert!(ACPI_RSDP + t.bytes.len() as u64 <= ACPI_AREA_END);
        let madt = table(&t, t.address(b"APIC").unwrap());
        assert_eq!(madt.len(), 44 + 8 * 255 + 12 + 10 + 10 + 6);
        assert_eq!(sum(madt), 0);
    }

    /// The DSDT's AML decoded by hand (ACPI 6.5, 20.2.5): DefName (NameOp 0x08) with the
    /// NameString `\_S5_` (RootChar 0x5c and one NameSeg), then DefPackage: PackageOp 0x12,
    /// PkgLength 8 (one byte: itself and the seven that follow), NumElements 4,
    /// BytePrefix 0x0a 5 (SLP_TYPa), BytePrefix 0x0a 5 (SLP_TYPb), ZeroOp, ZeroOp.
    #[test]
    fn dsdt_defines_s5() {
        let t = build(1).unwrap();
        let dsdt = table(&t, t.address(b"DSDT").unwrap());
        assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
        assert_eq!(
            &dsdt[36..],
            &[
                0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05,
                0x00, 0x00
            ]
        );
    }
}
