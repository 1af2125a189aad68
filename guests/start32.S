/* start32.S - the 32-bit entry shared by the Multiboot guests (multiboot,
 * multiboot2, multiboot_mods).
 *
 * Entered as Multiboot (EAX = 0x2BADB002) and Multiboot2 (EAX = 0x36D76289)
 * kernels are: 32-bit protected mode, paging off, flat segments, interrupts
 * off, EBX = physical address of the boot information. Clears .bss, sets a
 * 16 KiB stack and calls mb_main(magic, info_addr), which does not return.
 */
    .section .note.GNU-stack, "", @progbits
    .cfi_sections .debug_frame

    .section .text.start, "ax", @progbits
    .code32
    .globl _start
    .type _start, @function
_start:
    .cfi_startproc
    .cfi_undefined eip
    cld
    mov %eax, %edx              /* keep magic and info across the clear */
    mov %ebx, %esi
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl
    mov $stack_top, %esp
    xor %ebp, %ebp
    sub $8, %esp                /* ESP % 16 == 0 at the call */
    push %esi                   /* info_addr */
    push %edx                   /* magic */
    call mb_main
1:  cli
    hlt
    jmp 1b
    .cfi_endproc
    .size _start, . - _start

    .section .stack, "aw", @nobits
    .balign 16
    .globl stack_bottom, stack_top
stack_bottom:
    .skip 16384
stack_top:
