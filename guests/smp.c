/* smp.c - the SMP guest (see README.md): the boot processor finds the CPUs in
 * the ACPI MADT, starts each application processor with INIT-SIPI-SIPI through
 * its xAPIC, and every CPU then counts in its own slot of per_cpu_counter.
 * CPU 0 alone calls cpu0_work and CPU 2 alone cpu2_work on every round, CPU 3
 * alone writes cpu3_value, and the CPUs take turns calling turn_work. */
#include "guest.h"

#define MAX_CPUS 64
/* Where the AP trampoline runs (its SIPI vector is TRAMPOLINE >> 12); must
 * match smp_trampoline.S. A page the VMM's boot layout leaves free. */
#define TRAMPOLINE 0x8000
#define AP_STACK_SIZE 8192

/* The xAPIC's registers (Intel SDM Vol. 3, 10.4.1, 10.6.1). */
#define LAPIC_BASE 0xfee00000ul
#define LAPIC_ID 0x20
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define SVR_ENABLE 0x100
#define ICR_INIT 0x500
#define ICR_STARTUP 0x600
#define ICR_LEVEL_ASSERT 0x4000
#define ICR_TRIGGER_LEVEL 0x8000
#define ICR_PENDING 0x1000

/* ACPI (ACPI 6.5, 5.2): the MADT's Processor Local APIC entries. */
#define MADT_LOCAL_APIC 0
#define MADT_ENTRIES 44
#define LAPIC_ENABLED 1

/* Each CPU's counter, indexed by its position in the MADT (CPU 0 is the BSP). */
volatile uint64_t per_cpu_counter[MAX_CPUS];
/* How many CPUs the MADT lists, and how many have reached their counting loop. */
volatile uint32_t cpus_listed;
volatile uint32_t cpus_started;
/* Calls of cpu2_work (only CPU 2 makes them). */
volatile uint64_t cpu2_work_calls;
/* Calls of cpu0_work (only CPU 0, the BSP, makes them). */
volatile uint64_t cpu0_work_calls;
/* Written by CPU 3 alone, once per round: a watchpoint on it names CPU 3. */
volatile uint64_t cpu3_value;
/* Whose turn it is to call turn_work: the CPUs take turns in MADT order. */
volatile uint32_t turn;
/* Calls of turn_work, by every CPU in turn. */
volatile uint64_t turn_calls;
/* Each CPU's local APIC id, in MADT order. */
uint8_t apic_ids[MAX_CPUS];

static uint8_t ap_stacks[MAX_CPUS][AP_STACK_SIZE] __attribute__((aligned(16)));

extern const uint8_t smp_trampoline[], smp_trampoline_end[];
extern const uint64_t smp_mailbox_cr3[], smp_mailbox_stack[], smp_mailbox_entry[];

void kmain(uint64_t boot_params_addr);

static inline uint32_t lapic_read(uint32_t reg)
{
    return *(volatile uint32_t *)(LAPIC_BASE + reg);
}

static inline void lapic_write(uint32_t reg, uint32_t v)
{
    *(volatile uint32_t *)(LAPIC_BASE + reg) = v;
}

static uint32_t rd32(const uint8_t *p)
{
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static int same4(const uint8_t *p, const char *s)
{
    return p[0] == s[0] && p[1] == s[1] && p[2] == s[2] && p[3] == s[3];
}

/* The RSDP as an OS looks for it: "RSD PTR " on a 16-byte boundary in
 * 0xe0000..0xfffff (ACPI 6.5, 5.2.5.1). */
static const uint8_t *find_rsdp(void)
{
    for (uintptr_t a = 0xe0000; a < 0x100000; a += 16) {
        const uint8_t *p = (const uint8_t *)a;
        if (same4(p, "RSD ") && same4(p + 4, "PTR "))
            return p;
    }
    return 0;
}

/* Fills apic_ids from the MADT the RSDT points to; returns the CPU count. */
static uint32_t madt_cpus(void)
{
    const uint8_t *rsdp = find_rsdp();
    if (!rsdp)
        return 0;
    const uint8_t *rsdt = (const uint8_t *)(uintptr_t)rd32(rsdp + 16);
    uint32_t n = 0;
    for (uint32_t at = 36; at + 4 <= rd32(rsdt + 4); at += 4) {
        const uint8_t *t = (const uint8_t *)(uintptr_t)rd32(rsdt + at);
        if (!same4(t, "APIC"))
            continue;
        for (uint32_t e = MADT_ENTRIES; e + 2 <= rd32(t + 4) && t[e + 1]; e += t[e + 1])
            if (t[e] == MADT_LOCAL_APIC && (rd32(t + e + 4) & LAPIC_ENABLED) && n < MAX_CPUS)
                apic_ids[n++] = t[e + 3];
    }
    return n;
}

/* The function only CPU 2 runs: a breakpoint here names CPU 2's thread. */
NOINLINE void cpu2_work(uint32_t cpu)
{
    cpu2_work_calls++;
    per_cpu_counter[cpu]++;
}

/* The function only CPU 0 runs. */
NOINLINE void cpu0_work(uint32_t cpu)
{
    cpu0_work_calls++;
    per_cpu_counter[cpu]++;
}

/* Called by each CPU when it is its turn, then the turn passes to the next
 * CPU: a breakpoint here is hit by every CPU in turn, 0, 1, 2, ... */
NOINLINE void turn_work(uint32_t cpu)
{
    turn_calls++;
    turn = cpu + 1 < cpus_listed ? cpu + 1 : 0;
}

/* Every CPU's last stop: count in its own slot, for ever. */
NORETURN NOINLINE void count_forever(uint32_t cpu)
{
    __atomic_add_fetch(&cpus_started, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        per_cpu_counter[cpu]++;
        if (cpu == 0)
            cpu0_work(cpu);
        if (cpu == 2)
            cpu2_work(cpu);
        if (cpu == 3)
            cpu3_value = per_cpu_counter[cpu];
        /* Only once every CPU counts, so that no turn waits on a CPU that has
         * not started. */
        if (turn == cpu && cpus_started == cpus_listed)
            turn_work(cpu);
    }
}

/* Which CPU (MADT position) the caller is, from its local APIC id. */
static uint32_t this_cpu(void)
{
    uint32_t id = lapic_read(LAPIC_ID) >> 24;
    for (uint32_t i = 0; i < cpus_listed; i++)
        if (apic_ids[i] == id)
            return i;
    return 0;
}

/* Where the trampoline's call lands on each AP, on the stack the BSP gave it. */
NORETURN void ap_entry(void)
{
    count_forever(this_cpu());
}

static void wait_icr_idle(void)
{
    while (lapic_read(LAPIC_ICR_LO) & ICR_PENDING)
        __asm__ volatile("pause");
}

static void send_ipi(uint8_t apic_id, uint32_t command)
{
    lapic_write(LAPIC_ICR_HI, (uint32_t)apic_id << 24);
    lapic_write(LAPIC_ICR_LO, command);
    wait_icr_idle();
}

/* A short pause between the IPIs of the start-up sequence (the SDM asks for
 * 10 ms after INIT and 200 us after each SIPI on real hardware; KVM needs none,
 * and this guest has no timer, so it spins a little). */
static void spin(uint32_t n)
{
    for (volatile uint32_t i = 0; i < n; i++)
        __asm__ volatile("pause");
}

/* Starts CPU `cpu` (INIT, SIPI, SIPI: Intel SDM Vol. 3, 9.4.4.1) and waits
 * until it counts. */
static int start_ap(uint32_t cpu)
{
    uint32_t before = cpus_started;
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    volatile uint64_t *box = (volatile uint64_t *)TRAMPOLINE;
    box[(smp_mailbox_cr3 - (const uint64_t *)smp_trampoline)] = cr3;
    box[(smp_mailbox_stack - (const uint64_t *)smp_trampoline)] =
        (uintptr_t)(ap_stacks[cpu] + AP_STACK_SIZE);
    box[(smp_mailbox_entry - (const uint64_t *)smp_trampoline)] = (uintptr_t)ap_entry;
    uint8_t id = apic_ids[cpu];
    send_ipi(id, ICR_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
    send_ipi(id, ICR_INIT | ICR_TRIGGER_LEVEL);
    spin(100);
    for (int i = 0; i < 2 && cpus_started == before; i++) {
        send_ipi(id, ICR_STARTUP | (TRAMPOLINE >> 12));
        spin(1000);
    }
    for (uint32_t i = 0; i < 100000000u && cpus_started == before; i++)
        __asm__ volatile("pause");
    return cpus_started != before;
}

void kmain(uint64_t boot_params_addr)
{
    (void)boot_params_addr;
    cpus_listed = madt_cpus();
    serial_puts("smp: ");
    serial_putdec(cpus_listed);
    serial_puts(" CPUs in the MADT\n");
    lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | SVR_ENABLE);
    uint8_t *dst = (uint8_t *)TRAMPOLINE;
    for (const uint8_t *p = smp_trampoline; p < smp_trampoline_end; p++)
        *dst++ = *p;
    for (uint32_t cpu = 1; cpu < cpus_listed; cpu++) {
        serial_puts("smp: CPU ");
        serial_putdec(cpu);
        serial_puts(start_ap(cpu) ? " started\n" : " did not start\n");
    }
    count_forever(0);
}
