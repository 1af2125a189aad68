/* firmware_check.c - see firmware_check.h. */
#include "firmware_check.h"

/* BIOS Data Area fields (IBM PC BIOS interface). */
#define BDA_COM1 0x400
#define BDA_EBDA_SEGMENT 0x40e
#define BDA_BASE_MEMORY 0x413
/* MADT structure type 0 (Processor Local APIC) and its Enabled flag. */
#define MADT_LOCAL_APIC 0
#define LAPIC_ENABLED 1
#define ACPI_HEADER_LEN 36

static uint16_t rd16(uintptr_t a) { return *(const volatile uint16_t *)a; }
static uint32_t rd32p(const uint8_t *p) { return *(const uint32_t *)p; }

uint8_t byte_sum(const uint8_t *p, uint32_t n)
{
    uint8_t s = 0;
    for (uint32_t i = 0; i < n; i++)
        s = (uint8_t)(s + p[i]);
    return s;
}

int bytes_equal(const void *a, const void *b, uint32_t n)
{
    const uint8_t *x = a, *y = b;
    for (uint32_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}

void put_bytes(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            serial_putc(' ');
        serial_putc("0123456789abcdef"[p[i] >> 4]);
        serial_putc("0123456789abcdef"[p[i] & 0xf]);
    }
}

static void put_sig(const uint8_t *p)
{
    for (int i = 0; i < 4; i++)
        serial_putc((char)p[i]);
}

int check_bda(void)
{
    serial_puts("bda: com1=");
    serial_puthex(rd16(BDA_COM1));
    serial_puts(" ebda=");
    serial_puthex(rd16(BDA_EBDA_SEGMENT));
    serial_puts(" base_kib=");
    serial_putdec(rd16(BDA_BASE_MEMORY));
    serial_puts("\n");
    return rd16(BDA_EBDA_SEGMENT) == 0 || rd16(BDA_BASE_MEMORY) == 0;
}

const uint8_t *find_rsdp(void)
{
    for (uintptr_t a = 0xe0000; a < 0x100000; a += 16)
        if (bytes_equal((const void *)a, "RSD PTR ", 8))
            return (const uint8_t *)a;
    return 0;
}

/* Counts the MADT's enabled Processor Local APIC entries. */
static uint32_t madt_cpus(const uint8_t *madt, uint32_t len)
{
    uint32_t cpus = 0;
    for (uint32_t at = 44; at + 2 <= len && madt[at + 1] >= 2; at += madt[at + 1])
        if (madt[at] == MADT_LOCAL_APIC && (rd32p(madt + at + 4) & LAPIC_ENABLED))
            cpus++;
    return cpus;
}

/* The DSDT holds the NameString \_S5_ followed by a package. */
static int dsdt_has_s5(const uint8_t *dsdt, uint32_t len)
{
    for (uint32_t i = ACPI_HEADER_LEN; i + 6 <= len; i++)
        if (bytes_equal(dsdt + i, "\\_S5_", 5) && dsdt[i + 5] == 0x12)
            return 1;
    return 0;
}

/* Checks one table: its checksum; a MADT's CPUs, a FADT's DSDT. */
static int check_table(const uint8_t *t)
{
    uint32_t len = rd32p(t + 4);
    int failures = 0;
    serial_puts("acpi: ");
    put_sig(t);
    serial_puts(" len=");
    serial_putdec(len);
    if (byte_sum(t, len)) {
        serial_puts(" bad checksum");
        failures++;
    } else {
        serial_puts(" checksum ok");
    }
    if (bytes_equal(t, "APIC", 4)) {
        serial_puts(" cpus=");
        serial_putdec(madt_cpus(t, len));
    }
    serial_puts("\n");
    if (bytes_equal(t, "FACP", 4)) {
        /* X_DSDT (offset 140); the tables lie below 4 GiB. */
        const uint8_t *dsdt = (const uint8_t *)(uintptr_t)rd32p(t + 140);
        uint32_t dlen = rd32p(dsdt + 4);
        int ok = bytes_equal(dsdt, "DSDT", 4) && !byte_sum(dsdt, dlen) && dsdt_has_s5(dsdt, dlen);
        serial_puts(ok ? "acpi: DSDT checksum ok, \\_S5 package found\n" : "acpi: bad DSDT\n");
        failures += !ok;
    }
    return failures;
}

int check_acpi(const uint8_t *rsdp)
{
    if (!rsdp) {
        serial_puts("rsdp: not found\n");
        return 1;
    }
    int failures = 0;
    uint32_t rsdt = rd32p(rsdp + 16);
    uint32_t xsdt = rsdp[15] >= 2 ? rd32p(rsdp + 24) : 0; /* below 4 GiB */
    int ok = !byte_sum(rsdp, 20) && (rsdp[15] < 2 || !byte_sum(rsdp, 36));
    serial_puts("rsdp: at ");
    serial_puthex((uintptr_t)rsdp);
    serial_puts(" revision ");
    serial_putdec(rsdp[15]);
    serial_puts(ok ? " checksums ok" : " bad checksum");
    serial_puts(" rsdt=");
    serial_puthex(rsdt);
    serial_puts(" xsdt=");
    serial_puthex(xsdt);
    serial_puts("\n");
    failures += !ok;
    const uint8_t *x = (const uint8_t *)(uintptr_t)xsdt;
    const uint8_t *r = (const uint8_t *)(uintptr_t)rsdt;
    if (!xsdt || !bytes_equal(x, "XSDT", 4) || byte_sum(x, rd32p(x + 4)) ||
        !bytes_equal(r, "RSDT", 4) || byte_sum(r, rd32p(r + 4))) {
        serial_puts("acpi: bad XSDT or RSDT\n");
        return failures + 1;
    }
    uint32_t n = (rd32p(x + 4) - ACPI_HEADER_LEN) / 8;
    if ((rd32p(r + 4) - ACPI_HEADER_LEN) / 4 != n) {
        serial_puts("acpi: the RSDT and XSDT list different tables\n");
        failures++;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t entry = rd32p(x + ACPI_HEADER_LEN + 8 * i);
        if (entry != rd32p(r + ACPI_HEADER_LEN + 4 * i))
            failures++;
        failures += check_table((const uint8_t *)(uintptr_t)entry);
    }
    return failures;
}
