/* higher_half.c - the higher-half guest's C part (see README.md). */
#include "guest.h"

/* Incremented exactly once per hh_tick() call. */
volatile uint64_t hh_counter;
/* A debugger writes a nonzero value here to make the guest exit with it. */
volatile uint32_t hh_exit_request;
char hh_message[] = "virtual is not physical";

/* Linker-script symbol: the virtual address of hh_4k_page's 4 KiB mapping. */
extern const char hh_4k_virt[];

void hh_main(void);

NOINLINE void hh_tick(void)
{
    hh_counter++;
}

void hh_main(void)
{
    static const char pattern[] = "4KPAGE!!";

    serial_puts("kvmgdb higher-half guest\n");
    for (unsigned i = 0; i < sizeof(pattern) - 1; i++) {
        if (hh_4k_virt[i] != pattern[i]) {
            serial_puts("hh_4k_virt does not map hh_4k_page\n");
            break;
        }
    }
    for (;;) {
        hh_tick();
        uint32_t code = hh_exit_request;
        if (code)
            debug_exit(code);
    }
}
