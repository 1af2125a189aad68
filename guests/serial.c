/* serial.c - COM1 output and debug-exit, linked into every guest. */
#include "guest.h"

/* Bound on LSR polls per character, so a VMM whose UART never reports an
 * empty transmitter makes the guest drop output instead of hang. */
#define LSR_POLL_LIMIT 1000

void serial_putc(char c)
{
    for (int i = 0; i < LSR_POLL_LIMIT; i++) {
        if (inb(COM1_LSR) & LSR_THRE)
            break;
    }
    outb(COM1_DATA, (uint8_t)c);
}

void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

void serial_putdec(unsigned long v)
{
    char buf[24];
    int i = 0;

    do {
        buf[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i)
        serial_putc(buf[--i]);
}

void serial_puthex(unsigned long long v)
{
    serial_puts("0x");
    int shift = 60;
    while (shift > 0 && !((v >> shift) & 0xf))
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        serial_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

void debug_exit(uint32_t code)
{
    outl(DEBUG_EXIT_PORT, code);
    /* Only reached if the VMM has no debug-exit device. */
    for (;;)
        __asm__ volatile("cli; hlt");
}
