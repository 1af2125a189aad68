/* start64.S - entry of the 64-bit identity-mapped guests (demo, triple_fault).
 *
 * Entry state (set by the VMM): 64-bit long mode, CPL0, all RAM identity
 * mapped, flat GDT, interrupts off, RSP = a VMM-provided stack below 0x80000,
 * RSI = guest-physical address of a Linux boot_params page (e820 map, cmdline).
 * We clear .bss, switch to our own 16 KiB stack and call
 * kmain(boot_params), which is not expected to return.
 */
    .section .note.GNU-stack, "", @progbits
    /* CFI goes to .debug_frame (not loaded) so gdb can unwind through asm. */
    .cfi_sections .debug_frame

    .section .text.start, "ax", @progbits
    .code64
    .globl _start
    .type _start, @function
_start:
    .cfi_startproc
    /* Outermost frame: tells gdb's unwinder to stop here. */
    .cfi_undefined rip
    cld
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq
    mov %rsi, %rdi              /* kmain(boot_params) */
    lea stack_top(%rip), %rsp
    xor %ebp, %ebp
    call kmain
    /* Where a kernel that is done halts for good; tests also jump here to halt. */
    .globl halt_forever
halt_forever:
    cli
    hlt
    jmp halt_forever
    .cfi_endproc
    .size _start, . - _start

    /* Not part of .bss proper (see the linker script), so _start does not
     * clear it. */
    .section .stack, "aw", @nobits
    .balign 16
    .globl stack_bottom, stack_top
stack_bottom:
    .skip 16384
stack_top:
