/* triple_fault.c - a guest that triple-faults (see README.md). */
#include "guest.h"

void kmain(uint64_t boot_params_addr);
NORETURN void triple_fault(void);

void kmain(uint64_t boot_params_addr)
{
    (void)boot_params_addr;
    serial_puts("about to triple fault\n");
    triple_fault();
}
