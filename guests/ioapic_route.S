/* ioapic_route.S - the ioapic_route guest's interrupt handlers (see
 * README.md): vectors 0x40 and 0x42, which the guest gives I/O APIC pins 0
 * and 2, each count their interrupts and end them with a local APIC EOI. */
    .section .note.GNU-stack, "", @progbits

#define LAPIC_EOI 0xfee000b0

/* A handler that counts in the u32 `counter` and sends the EOI. */
.macro counting_handler name, counter
    .globl \name
    .type \name, @function
\name:
    incl \counter(%rip)
    push %rax
    mov $LAPIC_EOI, %eax        /* zero-extended: above 2 GiB */
    movl $0, (%rax)
    pop %rax
    iretq
    .size \name, . - \name
.endm

    .text
    .code64
    counting_handler pin0_handler, pin0_irqs
    counting_handler pin2_handler, pin2_irqs
