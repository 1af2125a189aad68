/* guest.h - shared by every kvmgdb test guest (64-bit and 32-bit builds).
 *
 * Freestanding: no libc, no <stdint.h> (the 32-bit build must not depend on
 * a multilib libc being installed), only what the guests need.
 */
#ifndef KVMGDB_GUEST_H
#define KVMGDB_GUEST_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
/* Pointer-sized: 64 bits in the long-mode guests, 32 in the multiboot one. */
typedef unsigned long uintptr_t;

_Static_assert(sizeof(uint32_t) == 4, "uint32_t");
_Static_assert(sizeof(uint64_t) == 8, "uint64_t");
_Static_assert(sizeof(uintptr_t) == sizeof(void *), "uintptr_t");

#define NOINLINE __attribute__((noinline, noclone))
#define NORETURN __attribute__((noreturn))

/* COM1 of a PC 16550 UART: data register and line status register. */
#define COM1_DATA 0x3f8
#define COM1_LSR 0x3fd
/* LSR bit 5: transmitter holding register empty. */
#define LSR_THRE 0x20
/* QEMU's isa-debug-exit device: the VMM exits with status (code << 1) | 1. */
#define DEBUG_EXIT_PORT 0xf4

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* serial.c */
void serial_putc(char c);
void serial_puts(const char *s);
void serial_putdec(unsigned long v);
/* "0x" and the lowercase hex digits of v, without leading zeros. */
void serial_puthex(unsigned long long v);
NORETURN void debug_exit(uint32_t code);

#endif
