/* multiboot.S - Multiboot v1 header of the multiboot and multiboot_mods
 * guests; their _start is start32.S's.
 *
 * Entry state (Multiboot spec 3.2, as QEMU -kernel provides it): 32-bit
 * protected mode, paging off, flat segments, interrupts off,
 * EAX = 0x2BADB002, EBX = physical address of the multiboot info.
 * No interrupts, iret or paging are used (unsupported by PVM in this mode).
 */
    .section .note.GNU-stack, "", @progbits

#define MB_MAGIC      0x1BADB002
#define MB_PAGE_ALIGN 0x00000001 /* flags bit 0: modules page aligned */
#define MB_MEMINFO    0x00000002 /* flags bit 1: ask for mem_lower/mem_upper */
/* No bit 16: addresses come from the ELF headers. */
#define MB_FLAGS      (MB_PAGE_ALIGN | MB_MEMINFO)

    .section .multiboot, "a", @progbits
    .balign 4
    .globl multiboot_header
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
