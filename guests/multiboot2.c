/* multiboot2.c - the Multiboot2 guest's C part: walks the boot information
 * tags and prints them on COM1, then checks the firmware data (see README.md). */
#include "firmware_check.h"

/* Multiboot2 spec 3.3: EAX at entry. */
#define MB2_BOOTLOADER_MAGIC 0x36D76289u
/* Boot information tag types (spec 3.6). */
#define TAG_END 0
#define TAG_CMDLINE 1
#define TAG_LOADER_NAME 2
#define TAG_MODULE 3
#define TAG_BASIC_MEMINFO 4
#define TAG_MMAP 6
#define TAG_ACPI_OLD 14
#define TAG_ACPI_NEW 15
/* The module bytes printed. */
#define MODULE_PEEK 8
/* debug_exit codes: VMM exit status is (code << 1) | 1. */
#define EXIT_OK 0x10            /* status 33 */
#define EXIT_FAILED 0x11        /* status 35 */
#define EXIT_BAD_MAGIC 0x12     /* status 37 */

struct mb2_tag {
    uint32_t type;
    uint32_t size;
};

struct mb2_mmap_entry {
    uint64_t base;
    uint64_t length;
    uint32_t type;
    uint32_t reserved;
};

uint32_t mb2_magic;
uint32_t mb2_info;
/* Tags seen, the end tag included. */
uint32_t mb2_tag_count;
/* Checks that failed. */
uint32_t mb2_failures;

void mb_main(uint32_t magic, uint32_t info_addr);

/* Checks an RSDP copy's checksum(s): the whole copy for a new one. */
static void rsdp_tag(const char *what, const uint8_t *copy, uint32_t len, uint32_t want_len,
                     const uint8_t **out)
{
    serial_puts(what);
    if (len != want_len || byte_sum(copy, len) || !bytes_equal(copy, "RSD PTR ", 8)) {
        serial_puts(" bad\n");
        mb2_failures++;
        return;
    }
    serial_puts(" checksum ok\n");
    *out = copy;
}

/* Prints one tag; the RSDP copies are kept for the ACPI walk. */
NOINLINE void mb2_tag(const struct mb2_tag *tag, const uint8_t **rsdp_old, const uint8_t **rsdp_new)
{
    const uint8_t *p = (const uint8_t *)(tag + 1);
    const uint32_t *w = (const uint32_t *)p;
    uint32_t len = tag->size - sizeof(*tag);

    switch (tag->type) {
    case TAG_CMDLINE:
        serial_puts("cmdline: ");
        serial_puts((const char *)p);
        serial_puts("\n");
        break;
    case TAG_LOADER_NAME:
        serial_puts("loader: ");
        serial_puts((const char *)p);
        serial_puts("\n");
        break;
    case TAG_MODULE:
        serial_puts("module: ");
        serial_puthex(w[0]);
        serial_puts("-");
        serial_puthex(w[1]);
        serial_puts(" ");
        serial_puts((const char *)(w + 2));
        serial_puts(" bytes: ");
        put_bytes((const uint8_t *)(uintptr_t)w[0],
                  w[1] - w[0] < MODULE_PEEK ? w[1] - w[0] : MODULE_PEEK);
        serial_puts("\n");
        if (w[0] % 4096)
            mb2_failures++;
        break;
    case TAG_BASIC_MEMINFO:
        serial_puts("meminfo: lower=");
        serial_putdec(w[0]);
        serial_puts(" upper=");
        serial_putdec(w[1]);
        serial_puts("\n");
        break;
    case TAG_MMAP: {
        uint32_t entry_size = w[0];
        for (uint32_t at = 8; entry_size && at + entry_size <= len; at += entry_size) {
            const struct mb2_mmap_entry *e = (const void *)(p + at);
            serial_puts("mmap: ");
            serial_puthex(e->base);
            serial_puts(" ");
            serial_puthex(e->length);
            serial_puts(" type ");
            serial_putdec(e->type);
            serial_puts("\n");
        }
        break;
    }
    case TAG_ACPI_OLD:
        rsdp_tag("rsdp old copy:", p, len, 20, rsdp_old);
        break;
    case TAG_ACPI_NEW:
        rsdp_tag("rsdp new copy:", p, len, 36, rsdp_new);
        break;
    default:
        serial_puts("tag ");
        serial_putdec(tag->type);
        serial_puts("\n");
    }
}

void mb_main(uint32_t magic, uint32_t info_addr)
{
    mb2_magic = magic;
    mb2_info = info_addr;
    if (magic != MB2_BOOTLOADER_MAGIC) {
        serial_puts("bad magic\n");
        debug_exit(EXIT_BAD_MAGIC);
    }
    serial_puts("kvmgdb multiboot2 guest: magic ok\n");

    const uint8_t *info = (const uint8_t *)(uintptr_t)info_addr;
    uint32_t total = *(const uint32_t *)info;
    const uint8_t *rsdp_old = 0, *rsdp_new = 0;
    uint32_t at = 8;
    for (;;) {
        const struct mb2_tag *tag = (const void *)(info + at);
        if (at % 8 || at + sizeof(*tag) > total || tag->size < sizeof(*tag)) {
            serial_puts("the tags run past total_size\n");
            mb2_failures++;
            break;
        }
        mb2_tag_count++;
        if (tag->type == TAG_END) {
            if (at + tag->size != total)
                mb2_failures++;
            break;
        }
        mb2_tag(tag, &rsdp_old, &rsdp_new);
        at += (tag->size + 7) & ~7u;
    }
    serial_puts("tags: ");
    serial_putdec(mb2_tag_count);
    serial_puts(" total_size=");
    serial_putdec(total);
    serial_puts("\n");

    mb2_failures += check_bda();
    /* The copies must be the RSDP itself, as an OS would find it in memory. */
    const uint8_t *rsdp = find_rsdp();
    if (!rsdp_old || !rsdp_new || !rsdp || !bytes_equal(rsdp_new, rsdp, 36) ||
        !bytes_equal(rsdp_old + 16, rsdp + 16, 4)) {
        serial_puts("rsdp: the copies do not match the RSDP in memory\n");
        mb2_failures++;
    }
    mb2_failures += check_acpi(rsdp);
    serial_puts("failures: ");
    serial_putdec(mb2_failures);
    serial_puts("\n");
    debug_exit(mb2_failures ? EXIT_FAILED : EXIT_OK);
}
