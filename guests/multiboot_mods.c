/* multiboot_mods.c - the Multiboot v1 guest with modules: prints its command
 * line and each module's string and first bytes, then checks the firmware
 * data (see README.md). */
#include "firmware_check.h"

/* Multiboot spec 3.2: EAX at entry. */
#define MB_BOOTLOADER_MAGIC 0x2BADB002u
/* Multiboot spec 3.3: info flags. */
#define MB_INFO_CMDLINE 0x4u
#define MB_INFO_MODS 0x8u
/* The module bytes printed. */
#define MODULE_PEEK 8
/* debug_exit codes: VMM exit status is (code << 1) | 1. */
#define EXIT_OK 0x10            /* status 33 */
#define EXIT_FAILED 0x11        /* status 35 */
#define EXIT_BAD_MAGIC 0x12     /* status 37 */

/* struct multiboot_info up to mods_addr (spec 3.3). */
struct mb_info {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count;
    uint32_t mods_addr;
};

struct mb_module {
    uint32_t mod_start;
    uint32_t mod_end;
    uint32_t string;
    uint32_t reserved;
};

uint32_t mods_count;
uint32_t mods_failures;

void mb_main(uint32_t magic, uint32_t info_addr);

/* Prints module i. */
NOINLINE void mods_module(uint32_t i, const struct mb_module *m)
{
    serial_puts("module ");
    serial_putdec(i);
    serial_puts(": ");
    serial_puts((const char *)(uintptr_t)m->string);
    serial_puts(" size=");
    serial_putdec(m->mod_end - m->mod_start);
    serial_puts(" bytes: ");
    uint32_t n = m->mod_end - m->mod_start;
    put_bytes((const uint8_t *)(uintptr_t)m->mod_start, n < MODULE_PEEK ? n : MODULE_PEEK);
    serial_puts("\n");
    if (m->mod_start % 4096) {
        serial_puts("module not page aligned\n");
        mods_failures++;
    }
}

void mb_main(uint32_t magic, uint32_t info_addr)
{
    if (magic != MB_BOOTLOADER_MAGIC) {
        serial_puts("bad magic\n");
        debug_exit(EXIT_BAD_MAGIC);
    }
    serial_puts("kvmgdb multiboot modules guest: magic ok\n");
    const struct mb_info *info = (const void *)(uintptr_t)info_addr;
    if (info->flags & MB_INFO_CMDLINE) {
        serial_puts("cmdline: ");
        serial_puts((const char *)(uintptr_t)info->cmdline);
        serial_puts("\n");
    }
    if (info->flags & MB_INFO_MODS)
        mods_count = info->mods_count;
    serial_puts("mods_count=");
    serial_putdec(mods_count);
    serial_puts("\n");
    const struct mb_module *mods = (const void *)(uintptr_t)info->mods_addr;
    for (uint32_t i = 0; i < mods_count; i++)
        mods_module(i, &mods[i]);
    mods_failures += check_bda();
    mods_failures += check_acpi(find_rsdp());
    serial_puts("failures: ");
    serial_putdec(mods_failures);
    serial_puts("\n");
    debug_exit(mods_failures ? EXIT_FAILED : EXIT_OK);
}
