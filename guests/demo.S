/* demo.S - the single-step test sequence of the demo guest.
 *
 * kmain() calls step_sequence() once, before its tick loop. Each
 * instruction has a global label step_N so tests can compare $pc with
 * &step_N after every `stepi`. Lengths and encodings are fixed by the
 * explicit operand forms below; do not change one without updating the
 * tests and guests/README.md.
 *
 *   label   bytes           len  instruction
 *   step_1  90               1   nop
 *   step_2  b8 34 12 00 00   5   mov $0x1234, %eax
 *   step_3  66 ba 80 00      4   mov $0x80, %dx
 *   step_4  ee               1   out %al, (%dx)   port I/O exit: one step
 *   step_5  48 ff c0         3   inc %rax
 *   step_6  48 83 c0 01      4   add $1, %rax     (RAX = 0x1236 after it)
 *   step_7  c3               1   ret
 */
    .section .note.GNU-stack, "", @progbits
    .cfi_sections .debug_frame

    .text
    .code64
    .globl step_sequence
    .type step_sequence, @function
    .globl step_1, step_2, step_3, step_4, step_5, step_6, step_7
step_sequence:
    .cfi_startproc
step_1: nop                     /* 1 byte:  90 */
step_2: mov $0x1234, %eax       /* 5 bytes: b8 34 12 00 00 */
step_3: mov $0x80, %dx          /* 4 bytes: 66 ba 80 00 */
step_4: out %al, (%dx)          /* 1 byte:  ee */
step_5: inc %rax                /* 3 bytes: 48 ff c0 */
step_6: add $1, %rax            /* 4 bytes: 48 83 c0 01 */
step_7: ret                     /* 1 byte:  c3 */
    .cfi_endproc
    .size step_sequence, . - step_sequence

/* The guest's own breakpoint handling: an IDT whose #BP gate (vector 3) counts hits in
 * guest_bp_hits, and guest_int3, which executes an int3 that is not the debugger's. The
 * VMM must deliver it to this handler (KVM_GUESTDBG_INJECT_BP), never report it or die. */
    .globl idt_setup, bp_handler, guest_int3
    .type idt_setup, @function
idt_setup:
    .cfi_startproc
    lea idt(%rip), %rdi
    lea bp_handler(%rip), %rax
    mov %ax, 3*16+0(%rdi)       /* offset 15:0 */
    mov %cs, %dx
    mov %dx, 3*16+2(%rdi)       /* code selector */
    movb $0, 3*16+4(%rdi)       /* no IST */
    movb $0x8e, 3*16+5(%rdi)    /* present, DPL 0, 64-bit interrupt gate */
    shr $16, %rax
    mov %ax, 3*16+6(%rdi)       /* offset 31:16 */
    shr $16, %rax
    mov %eax, 3*16+8(%rdi)      /* offset 63:32 */
    movl $0, 3*16+12(%rdi)
    lidt idtr(%rip)
    ret
    .cfi_endproc
    .size idt_setup, . - idt_setup

    .type bp_handler, @function
bp_handler:
    incq guest_bp_hits(%rip)
    iretq
    .size bp_handler, . - bp_handler

    .type guest_int3, @function
guest_int3:
    .cfi_startproc
    int3
    ret
    .cfi_endproc
    .size guest_int3, . - guest_int3

    .data
    .balign 8
idtr:
    .word 256 * 16 - 1
    .quad idt

    .bss
    .balign 16
idt:
    .skip 256 * 16
    .globl guest_bp_hits
guest_bp_hits:
    .skip 8
