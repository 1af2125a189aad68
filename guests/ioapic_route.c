/* ioapic_route.c - which I/O APIC pin the PIT's IRQ 0 arrives on (see
 * README.md): the MADT must say the same. */
#include "guest.h"

#define IOAPIC_SELECT ((volatile uint32_t *)0xfec00000)
#define IOAPIC_WINDOW ((volatile uint32_t *)0xfec00010)
#define LAPIC_SVR ((volatile uint32_t *)0xfee000f0)
/* SVR bit 8: the local APIC is software-enabled; 0xff: spurious vector. */
#define LAPIC_ENABLE 0x1ff
/* I/O APIC redirection table registers of pin n (low and high dwords). */
#define IOREDTBL(n) (0x10 + 2 * (n))
#define VECTOR_PIN0 0x40
#define VECTOR_PIN2 0x42
/* PIT: channel 0, lobyte/hibyte, mode 2 (rate generator), 1 kHz. */
#define PIT_CMD 0x43
#define PIT_CH0 0x40
#define PIT_MODE2_CH0 0x34
#define PIT_DIVISOR_1KHZ 1193
/* Interrupts counted before the guest reports. */
#define WANT 20
/* Pause loops before it gives up waiting (about 10 s on PVM). */
#define SPIN_LIMIT 50000000u
#define EXIT_OK 0x10            /* status 33 */
#define EXIT_NO_IRQ 0x11        /* status 35 */

/* Interrupts seen on each pin (counted by the handlers in ioapic_route.S). */
volatile uint32_t pin0_irqs, pin2_irqs;
static uint8_t idt[256 * 16] __attribute__((aligned(16)));
static struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
} idtr;
void pin0_handler(void);
void pin2_handler(void);
void kmain(void);

/* A 64-bit interrupt gate for vector v (SDM Vol. 3A, 6.14.1). */
static void set_gate(int v, void (*handler)(void))
{
    uint64_t a = (uint64_t)(uintptr_t)handler;
    uint8_t *g = idt + 16 * v;
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    g[0] = (uint8_t)a;
    g[1] = (uint8_t)(a >> 8);
    g[2] = (uint8_t)cs;
    g[3] = (uint8_t)(cs >> 8);
    g[4] = 0;
    g[5] = 0x8e; /* present, DPL 0, interrupt gate */
    for (int i = 0; i < 6; i++)
        g[6 + i] = (uint8_t)(a >> (16 + 8 * i));
}

static void ioapic_route(int pin, uint8_t vector)
{
    *IOAPIC_SELECT = IOREDTBL(pin) + 1;
    *IOAPIC_WINDOW = 0; /* destination: APIC ID 0 */
    *IOAPIC_SELECT = IOREDTBL(pin);
    *IOAPIC_WINDOW = vector; /* fixed, physical, edge, active high, unmasked */
}

void kmain(void)
{
    serial_puts("kvmgdb ioapic_route guest\n");
    /* Both PICs remapped out of the way (0x20..0x2f) and masked: IRQ 0 can only
     * come through the I/O APIC. */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, 0xff); outb(0xa1, 0xff);
    set_gate(VECTOR_PIN0, pin0_handler);
    set_gate(VECTOR_PIN2, pin2_handler);
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (uint64_t)(uintptr_t)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
    *LAPIC_SVR = LAPIC_ENABLE;
    ioapic_route(0, VECTOR_PIN0);
    ioapic_route(2, VECTOR_PIN2);
    outb(PIT_CMD, PIT_MODE2_CH0);
    outb(PIT_CH0, PIT_DIVISOR_1KHZ & 0xff);
    outb(PIT_CH0, PIT_DIVISOR_1KHZ >> 8);
    __asm__ volatile("sti");
    for (uint32_t i = 0; i < SPIN_LIMIT && pin0_irqs + pin2_irqs < WANT; i++)
        __asm__ volatile("pause");
    __asm__ volatile("cli");
    serial_puts("pit irq 0: ioapic pin 0 ");
    serial_putdec(pin0_irqs);
    serial_puts(", pin 2 ");
    serial_putdec(pin2_irqs);
    serial_puts("\n");
    debug_exit(pin0_irqs + pin2_irqs ? EXIT_OK : EXIT_NO_IRQ);
}
