//! The PC that kvmgdb builds, as numbers both sides must agree on: the firmware tables the
//! boot layer writes (ACPI, the BIOS Data Area) describe the devices the VMM provides at
//! these addresses and ports. Change one side only through here.

/// The local APIC's MMIO base (every CPU's, at reset; SDM Vol. 3A, 11.4.1).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// The I/O APIC's MMIO base (KVM's in-kernel IOAPIC, as on PCs).
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// The I/O APIC's id in the MADT.
pub const IOAPIC_ID: u8 = 0;
/// The local APIC version register's version field of KVM's in-kernel local APIC (an
/// integrated xAPIC; SDM Vol. 3A, 11.4.8), as the MP table names it.
pub const LAPIC_VERSION: u8 = 0x14;
/// The I/O APIC version register's version field of KVM's in-kernel I/O APIC (82093AA:
/// 0x11), as the MP table names it.
pub const IOAPIC_VERSION: u8 = 0x11;
/// Interrupt pins of the in-kernel IOAPIC (KVM_IOAPIC_NUM_PINS).
pub const IOAPIC_PINS: u32 = 24;

/// The I/O APIC pin the PIT's ISA IRQ 0 arrives on: pin 2, as on PC chipsets. KVM's PIT
/// raises GSI 0 and KVM's default routing would put it on pin 0, so the VMM sets the PC's
/// routing (`vmm/irqchip.rs`, GSI 0 to pin 2, as QEMU does) and the MADT describes it with
/// an interrupt source override IRQ 0 → GSI 2.
pub const PIT_GSI: u32 = 2;
/// The ISA IRQ of COM1 (the 16550 at 0x3f8).
pub const COM1_IRQ: u32 = 4;
/// The ISA IRQ of the RTC.
pub const RTC_IRQ: u32 = 8;
/// The IRQ the ACPI SCI is wired to (level, active high on ISA IRQ 9, as QEMU's PIIX4).
pub const SCI_IRQ: u16 = 9;

/// ACPI PM1a event block (status + enable, 4 bytes).
pub const PM1A_EVT_PORT: u16 = 0x600;
/// ACPI PM1a control block (2 bytes): SLP_TYPa and SLP_EN.
pub const PM1A_CNT_PORT: u16 = 0x604;
/// The PM timer (4 bytes, 3.579545 MHz).
pub const PM_TMR_PORT: u16 = 0x608;
/// SLP_TYP value the DSDT's `\_S5` package names: writing it with SLP_EN powers off.
pub const SLP_TYP_S5: u16 = 5;
/// PM1 control SLP_EN bit (ACPI 6.5, 4.8.3.2.1).
pub const PM1_SLP_EN: u16 = 1 << 13;

/// The reset control register (PIIX/ICH, port 0xcf9): writing 0x06 resets the machine;
/// the FADT names it as the ACPI reset register with value [`RESET_VALUE`].
pub const RESET_PORT: u16 = 0xcf9;
/// The value written to [`RESET_PORT`] to reset.
pub const RESET_VALUE: u8 = 0x06;
/// The i8042 keyboard controller's command port: command 0xfe pulses the reset line.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// The i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// The CMOS/RTC index and data ports.
pub const CMOS_PORT: u16 = 0x70;

/// Where the ACPI RSDP sits: in the BIOS area 0xe0000..0xfffff that an OS scans for it
/// (ACPI 6.5, 5.2.5.1), 16-byte aligned. The other tables follow it up to
/// [`ACPI_AREA_END`].
pub const ACPI_RSDP: u64 = 0xe_0000;
/// One past the last byte of the ACPI tables' area (reserved in the memory map).
pub const ACPI_AREA_END: u64 = 0xf_0000;

/// Where the MP floating pointer structure sits, the MP configuration table right after
/// it: at the start of the BIOS area 0xf0000..0xfffff that kernels scan for it (MP spec
/// 1.4, 4.1), reserved in the memory map, clear of the ACPI area below and of the low pages
/// guests use for their AP trampolines.
pub const MP_TABLE: u64 = 0xf_0000;
/// One past the MP tables' area: room for 255 CPUs' entries (5312 bytes).
pub const MP_AREA_END: u64 = 0xf_2000;
