/* demo.c - the general-purpose debugging demo guest (see README.md). */
#include "guest.h"

/* kmain prints a progress line each time counter reaches a multiple of this. */
#define TICK_REPORT_INTERVAL 100000

/* Guest-physical address of the Linux boot_params page (RSI at entry). */
uint64_t boot_params;
/* Incremented exactly once per tick() call. */
volatile uint64_t counter;
/* Incremented exactly once per bp_loop_target() call, i.e. once per tick. */
volatile uint64_t bp_loop_hits;
/* A debugger writes a nonzero value here to make the guest exit with it. */
volatile uint32_t exit_request;
/* Read by tests with `x/s message`. */
char message[] = "hello from the demo guest";

/* Watchpoint targets (touch_watched): a 256-byte struct written one word per call, six
 * separate words written at different rates, a word only read and a word only written,
 * and a word stored whole so watches on part of it see accesses straddling their range. */
struct big {
    uint64_t words[32];
};
volatile struct big big_struct;
volatile uint64_t watch6[6];
volatile uint64_t read_only_word = 42;
volatile uint64_t write_only_word;
volatile uint64_t straddle_word;
volatile uint64_t read_sum;

void kmain(uint64_t boot_params_addr);
void step_sequence(void);
void idt_setup(void);
void guest_int3(void);
/* Counted by the guest's own #BP handler (demo.S). */
extern volatile uint64_t guest_bp_hits;

/* A second breakpoint target one call deeper than tick(), so a backtrace
 * from here is bp_loop_target <- tick <- kmain <- _start. */
NOINLINE void bp_loop_target(void)
{
    bp_loop_hits++;
}

NOINLINE void touch_watched(uint64_t n)
{
    big_struct.words[n % 32] = n;
    for (int i = 0; i < 6; i++)
        if (n % (uint64_t)(i + 1) == 0)
            watch6[i] = n;
    read_sum += read_only_word;
    write_only_word = n;
    straddle_word = n * 0x0101010101010101ull;
}

NOINLINE void tick(void)
{
    counter++;
    bp_loop_target();
}

void kmain(uint64_t boot_params_addr)
{
    boot_params = boot_params_addr;
    serial_puts("kvmgdb demo guest: hello from 64-bit long mode\n");
    step_sequence();
    idt_setup();
    guest_int3();
    if (guest_bp_hits != 1)
        serial_puts("guest int3 was not delivered to the guest's handler\n");
    for (;;) {
        tick();
        touch_watched(counter);
        uint32_t code = exit_request;
        if (code)
            debug_exit(code);
        uint64_t c = counter;
        if (c % TICK_REPORT_INTERVAL == 0) {
            serial_puts("tick ");
            serial_putdec(c);
            serial_putc('\n');
        }
    }
}
