/* multiboot2.S - the Multiboot2 header of the multiboot2 guest (see README.md).
 *
 * The header (Multiboot2 spec 3.1) asks, as required, for the boot
 * information tags the guest checks, names _start in an entry address tag
 * (the ELF entry point is elsewhere: mb2_elf_entry, which fails the boot),
 * wants page-aligned modules, and carries optional console flags and
 * framebuffer tags that a boot loader without them may ignore.
 */
    .section .note.GNU-stack, "", @progbits

#define MB2_MAGIC       0xE85250D6
#define MB2_ARCH_I386   0
#define MB2_OPTIONAL    1
#define EXIT_ELF_ENTRY  0x13    /* status 39 */

    .section .multiboot, "a", @progbits
    .balign 8
    .globl multiboot2_header
multiboot2_header:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - multiboot2_header
    .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - multiboot2_header))

    .balign 8
mb2_info_request:               /* required: cmdline, loader name, modules, */
    .short 1, 0                 /* meminfo, mmap, old and new RSDP */
    .long mb2_info_request_end - mb2_info_request
    .long 1, 2, 3, 4, 6, 14, 15
mb2_info_request_end:

    .balign 8
    .short 3, 0                 /* entry address */
    .long 12
    .long _start

    .balign 8
    .short 6, 0                 /* module alignment */
    .long 8

    .balign 8
    .short 4, MB2_OPTIONAL      /* console flags: EGA text supported */
    .long 12
    .long 2

    .balign 8
    .short 5, MB2_OPTIONAL      /* framebuffer: 1024x768x32, if there is one */
    .long 20
    .long 1024, 768, 32

    .balign 8
    .short 0, 0                 /* end */
    .long 8
mb2_header_end:

/* The ELF e_entry (ld -e): reached only by a loader that ignores the entry
 * address tag. Needs no stack: exits through isa-debug-exit at once. */
    .section .text, "ax", @progbits
    .code32
    .globl mb2_elf_entry
    .type mb2_elf_entry, @function
mb2_elf_entry:
    mov $EXIT_ELF_ENTRY, %eax
    out %eax, $0xf4
1:  cli
    hlt
    jmp 1b
    .size mb2_elf_entry, . - mb2_elf_entry
