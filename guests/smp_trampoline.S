/* smp_trampoline.S - the start-up code of the smp guest's application processors.
 *
 * An AP starts, after the BSP's INIT-SIPI-SIPI, in real mode at CS:IP =
 * (vector << 8):0000, i.e. at physical address vector << 12 (Intel SDM Vol. 3,
 * 9.4.4.1 / 10.6.1). smp.c copies this code, from smp_trampoline to
 * smp_trampoline_end, to the page TRAMPOLINE below 1 MiB and sends the vector
 * TRAMPOLINE >> 12. The code then goes real mode -> 32-bit protected mode
 * (its own GDT, lgdt + CR0.PE + far jump) -> long mode (PAE, the BSP's CR3,
 * EFER.LME, CR0.PG, far jump to a 64-bit segment), takes the stack and the
 * entry the BSP left in the trampoline's mailbox, and jumps there. Addresses
 * are absolute (TRAMPOLINE + offset), so the page must be TRAMPOLINE.
 */
    .section .note.GNU-stack, "", @progbits

#define TRAMPOLINE 0x8000
#define REL(x) ((x) - smp_trampoline)
#define ABS(x) (TRAMPOLINE + REL(x))

/* Selectors of the trampoline GDT. */
#define CODE32 0x08
#define DATA32 0x10
#define CODE64 0x18

#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100

    .section .rodata.trampoline, "a", @progbits
    .globl smp_trampoline, smp_trampoline_end
    .globl smp_mailbox_cr3, smp_mailbox_stack, smp_mailbox_entry
    .code16
smp_trampoline:
    cli
    cld
    mov %cs, %ax            /* CS base is TRAMPOLINE: address the page through it */
    mov %ax, %ds
    lgdtl REL(gdt_desc)
    mov %cr0, %eax
    or $CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $CODE32, $ABS(pm32)

    .code32
pm32:
    mov $DATA32, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov ABS(smp_mailbox_cr3), %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $CR0_PG, %eax
    mov %eax, %cr0
    ljmpl $CODE64, $ABS(lm64)

    .code64
lm64:
    mov ABS(smp_mailbox_stack), %rsp
    mov ABS(smp_mailbox_entry), %rax
    xor %ebp, %ebp
    /* The entry is called, so it sees the stack as a C function does. */
    call *%rax
1:  cli
    hlt
    jmp 1b

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* CODE32: flat 32-bit code, ring 0 */
    .quad 0x00cf92000000ffff    /* DATA32: flat data */
    .quad 0x00af9a000000ffff    /* CODE64: 64-bit code, ring 0 */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long ABS(gdt)

    /* The mailbox the BSP fills before each SIPI (in the copied page). */
    .balign 8
smp_mailbox_cr3:
    .quad 0
smp_mailbox_stack:
    .quad 0
smp_mailbox_entry:
    .quad 0
smp_trampoline_end:
