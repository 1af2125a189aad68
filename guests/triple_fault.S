/* triple_fault.S - make the CPU shut down on purpose.
 *
 * Loads an IDT with limit 0, so the #UD from ud2 cannot be delivered: #UD
 * becomes #GP, then #DF, then a triple fault (KVM_EXIT_SHUTDOWN).
 */
    .section .note.GNU-stack, "", @progbits
    .cfi_sections .debug_frame

    .text
    .code64
    .globl triple_fault
    .type triple_fault, @function
triple_fault:
    .cfi_startproc
    lidt null_idtr(%rip)
    .globl crash_here
crash_here:
    ud2
    .cfi_endproc
    .size triple_fault, . - triple_fault

    .section .rodata
    .balign 16
null_idtr:
    .word 0             /* limit */
    .quad 0             /* base */
