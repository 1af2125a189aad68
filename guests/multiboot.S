/* multiboot.S - Multiboot v1 header and 32-bit entry of the multiboot guest.
 *
 * Entry state (Multiboot spec 3.2, as QEMU -kernel provides it): 32-bit
 * protected mode, paging off, flat segments, interrupts off,
 * EAX = 0x2BADB002, EBX = physical address of the multiboot info.
 * No interrupts, iret or paging are used (unsupported by PVM in this mode).
 */
    .section .note.GNU-stack, "", @progbits
    .cfi_sections .debug_frame

#define MB_MAGIC     0x1BADB002
#define MB_MEMINFO   0x00000002  /* flags bit 1: ask for mem_lower/mem_upper */
#define MB_FLAGS     MB_MEMINFO  /* no bit 16: addresses come from the ELF headers */

    .section .multiboot, "a", @progbits
    .balign 4
    .globl multiboot_header
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

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
