/* mptable_check.c - finds and checks the Intel MultiProcessor table as a
 * kernel that does not read ACPI does (MP spec 1.4, chapter 4), prints what it
 * found on COM1 and exits with 0x10 if every check passed (0x11 if not). Built
 * twice (see README.md): mptable64.elf (ELF64, start64.S calls kmain) and
 * mptable_mb.elf (Multiboot v1, start32.S calls mb_main). Only the boot
 * processor runs; the others wait for a start-up IPI that never comes. */
#include "firmware_check.h"

/* BIOS Data Area fields a kernel finds the search areas by. */
#define BDA_EBDA_SEGMENT 0x40e
#define BDA_BASE_MEMORY_KIB 0x413
/* MP base table entry types and lengths (MP spec table 4-3). */
#define MP_PROCESSOR 0
#define MP_BUS 1
#define MP_IOAPIC 2
#define MP_IO_INTERRUPT 3
#define MP_LOCAL_INTERRUPT 4
#define MP_PROCESSOR_LEN 20
#define MP_ENTRY_LEN 8
#define MP_HEADER_LEN 44
#define CPU_ENABLED 1
#define CPU_BSP 2
/* Interrupt types (MP spec table 4-9). */
#define INT_NMI 1
#define INT_EXTINT 3
/* The local APIC's id and version registers, the I/O APIC's select and
 * window registers and its version register (SDM Vol. 3A 11.4.6, 11.4.8;
 * 82093AA data sheet 3.1, 3.2.2). */
#define LAPIC_BASE 0xfee00000ul
#define LAPIC_ID 0x20
#define LAPIC_VERSION 0x30
#define IOAPIC_IOREGSEL 0x00
#define IOAPIC_IOWIN 0x10
#define IOAPIC_REG_VERSION 1

#define GUEST_OK 0x10
#define GUEST_FAILED 0x11

void kmain(uint64_t boot_params);
void mb_main(uint32_t magic, uint32_t info_addr);

static uint32_t rd32(const uint8_t *p) { return *(const volatile uint32_t *)p; }
static uint16_t rd16(const uint8_t *p) { return *(const volatile uint16_t *)p; }

static uint32_t mmio_read(uintptr_t a) { return *(volatile uint32_t *)a; }

static uint32_t ioapic_read(uintptr_t base, uint32_t reg)
{
    *(volatile uint32_t *)(base + IOAPIC_IOREGSEL) = reg;
    return mmio_read(base + IOAPIC_IOWIN);
}

/* A floating pointer with a valid signature and checksum in [from, from + len),
 * on a 16-byte boundary; 0 if there is none. */
static const uint8_t *scan(uintptr_t from, uint32_t len)
{
    for (uintptr_t a = from; a + 16 <= from + len; a += 16) {
        const uint8_t *p = (const uint8_t *)a;
        if (bytes_equal(p, "_MP_", 4) && p[8] && !byte_sum(p, 16u * p[8]))
            return p;
    }
    return 0;
}

/* The search areas in the order Linux tries them (arch/x86/kernel/mpparse.c):
 * the first KiB of low memory, the last KiB of base memory, the BIOS area,
 * then the EBDA's first KiB. */
static const uint8_t *find_floating_pointer(void)
{
    uintptr_t base_top = (uintptr_t)rd16((const uint8_t *)BDA_BASE_MEMORY_KIB) << 10;
    uintptr_t ebda = (uintptr_t)rd16((const uint8_t *)BDA_EBDA_SEGMENT) << 4;
    const uint8_t *p = scan(0x0, 0x400);
    if (!p && base_top >= 0x400)
        p = scan(base_top - 0x400, 0x400);
    if (!p)
        p = scan(0xf0000, 0x10000);
    if (!p && ebda)
        p = scan(ebda, 0x400);
    return p;
}

static int check(int ok, const char *what)
{
    if (!ok) {
        serial_puts("mptable: FAILED ");
        serial_puts(what);
        serial_puts("\n");
    }
    return !ok;
}

static int check_mptable(void)
{
    const uint8_t *fp = find_floating_pointer();
    if (!fp) {
        serial_puts("mptable: no floating pointer\n");
        return 1;
    }
    int failures = 0;
    const uint8_t *t = (const uint8_t *)(uintptr_t)rd32(fp + 4);
    serial_puts("mptable: floating pointer at ");
    serial_puthex((uintptr_t)fp);
    serial_puts(" rev ");
    serial_putdec(fp[9]);
    serial_puts(" checksum ok, table at ");
    serial_puthex((uintptr_t)t);
    serial_puts("\n");
    failures += check(fp[11] == 0, "feature byte 1: not a table of its own");
    if (!t || !bytes_equal(t, "PCMP", 4)) {
        serial_puts("mptable: no PCMP table\n");
        return failures + 1;
    }
    uint16_t len = rd16(t + 4);
    failures += check(!byte_sum(t, len), "table checksum");
    failures += check(t[6] == 1 || t[6] == 4, "table revision");
    failures += check(rd32(t + 36) == LAPIC_BASE, "local APIC address");

    uint32_t cpus = 0, bsps = 0, buses = 0, ioapics = 0, irqs = 0, lints = 0;
    uint32_t bsp_id = 0xff, lapic_version = 0, ioapic_version = 0, irq0_pin = 0xff;
    uintptr_t ioapic = 0;
    int ordered = 1, extint_lint0 = 0, nmi_lint1 = 0, ids_in_order = 1;
    uint8_t last_type = 0;
    uint32_t entries = 0;
    for (uint32_t at = MP_HEADER_LEN; at < len; entries++) {
        const uint8_t *e = t + at;
        ordered &= e[0] >= last_type;
        last_type = e[0];
        switch (e[0]) {
        case MP_PROCESSOR:
            if (e[3] & CPU_ENABLED) {
                ids_in_order &= e[1] == cpus;
                cpus++;
                lapic_version = e[2];
            }
            if (e[3] & CPU_BSP) {
                bsps++;
                bsp_id = e[1];
            }
            break;
        case MP_BUS:
            buses += bytes_equal(e + 2, "ISA   ", 6);
            break;
        case MP_IOAPIC:
            ioapics++;
            ioapic = rd32(e + 4);
            ioapic_version = e[2];
            break;
        case MP_IO_INTERRUPT:
            irqs++;
            if (e[5] == 0)
                irq0_pin = e[7];
            break;
        case MP_LOCAL_INTERRUPT:
            lints++;
            extint_lint0 |= e[1] == INT_EXTINT && e[7] == 0;
            nmi_lint1 |= e[1] == INT_NMI && e[6] == 0xff && e[7] == 1;
            break;
        default:
            serial_puts("mptable: unknown entry type\n");
            return failures + 1;
        }
        at += e[0] == MP_PROCESSOR ? MP_PROCESSOR_LEN : MP_ENTRY_LEN;
    }
    failures += check(entries == rd16(t + 34), "entry count");
    failures += check(ordered, "entries in type order");
    failures += check(ids_in_order, "APIC ids 0, 1, 2, ...");
    failures += check(bsps == 1, "one bootstrap processor");
    uint32_t my_id = mmio_read(LAPIC_BASE + LAPIC_ID) >> 24;
    failures += check(bsp_id == my_id, "the BSP entry is this CPU's APIC id");
    failures += check(lapic_version == (mmio_read(LAPIC_BASE + LAPIC_VERSION) & 0xff),
                      "local APIC version as the APIC reports it");
    failures += check(ioapics == 1 && ioapic, "one I/O APIC");
    if (ioapic)
        failures += check(ioapic_version == (ioapic_read(ioapic, IOAPIC_REG_VERSION) & 0xff),
                          "I/O APIC version as the I/O APIC reports it");
    failures += check(extint_lint0 && nmi_lint1, "LINT0 ExtINT, LINT1 NMI");
    serial_puts("mptable: cpus=");
    serial_putdec(cpus);
    serial_puts(" bsp=");
    serial_putdec(bsp_id);
    serial_puts(" buses=");
    serial_putdec(buses);
    serial_puts(" ioapic=");
    serial_puthex(ioapic);
    serial_puts(" irqs=");
    serial_putdec(irqs);
    serial_puts(" irq0_pin=");
    serial_putdec(irq0_pin);
    serial_puts(" lints=");
    serial_putdec(lints);
    serial_puts("\n");
    return failures;
}

static NORETURN void run(void)
{
    serial_puts("kvmgdb mptable guest\n");
    int failures = check_mptable();
    serial_puts("failures: ");
    serial_putdec((unsigned long)failures);
    serial_puts("\n");
    debug_exit(failures ? GUEST_FAILED : GUEST_OK);
}

void kmain(uint64_t boot_params)
{
    (void)boot_params;
    run();
}

void mb_main(uint32_t magic, uint32_t info_addr)
{
    (void)magic;
    (void)info_addr;
    run();
}
