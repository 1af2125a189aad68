/* multiboot.c - the Multiboot v1 guest's C part (see README.md). */
#include "guest.h"

/* Multiboot spec 3.2: EAX at entry. */
#define MB_BOOTLOADER_MAGIC 0x2BADB002u
/* Multiboot spec 3.3: info flags bit 0, mem_lower/mem_upper are valid. */
#define MB_INFO_MEMORY 0x1u
#define MB_TICKS 1000u
/* debug_exit codes: VMM exit status is (code << 1) | 1. */
#define EXIT_OK 0x10            /* status 33 */
#define EXIT_BAD_COUNT 0x11     /* status 35 */
#define EXIT_BAD_MAGIC 0x12     /* status 37 */

/* The start of struct multiboot_info (spec 3.3). */
struct mb_info {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
};

uint32_t mb_magic;
uint32_t mb_info;
uint32_t mb_mem_upper;
/* Incremented exactly once per mb_tick() call. */
volatile uint32_t mb_counter;

void mb_main(uint32_t magic, uint32_t info_addr);

NOINLINE void mb_tick(void)
{
    mb_counter++;
}

void mb_main(uint32_t magic, uint32_t info_addr)
{
    mb_magic = magic;
    mb_info = info_addr;
    if (magic != MB_BOOTLOADER_MAGIC) {
        serial_puts("bad magic\n");
        debug_exit(EXIT_BAD_MAGIC);
    }
    serial_puts("kvmgdb multiboot guest: magic ok\n");

    const struct mb_info *info = (const struct mb_info *)(uintptr_t)info_addr;
    if (info->flags & MB_INFO_MEMORY)
        mb_mem_upper = info->mem_upper;
    serial_puts("mem_upper=");
    serial_putdec(mb_mem_upper);
    serial_puts(" KiB\n");

    for (uint32_t i = 0; i < MB_TICKS; i++)
        mb_tick();
    debug_exit(mb_counter == MB_TICKS ? EXIT_OK : EXIT_BAD_COUNT);
}
