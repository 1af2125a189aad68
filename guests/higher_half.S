/* higher_half.S - boot stub and higher-half entry of the higher_half guest.
 *
 * hh_entry (physical, identity mapped by the VMM) builds the guest's own
 * 4-level page tables and switches CR3 to them:
 *
 *   VA 0 .. 1 GiB                      -> PA 0 .. 1 GiB   2 MiB pages (the stub keeps running)
 *   VA 0xffffffff80000000 .. +1 GiB    -> PA 0 .. 1 GiB   2 MiB pages (same PD as above)
 *   VA 0xffffffffc0000000 (hh_4k_virt) -> PA hh_4k_page    one 4 KiB PTE
 *
 *   hh_pml4[0]        -> hh_pdpt_low[0]    -> hh_pd_2m
 *   hh_pml4[511]      -> hh_pdpt_high[510] -> hh_pd_2m
 *                        hh_pdpt_high[511] -> hh_pd_4k[0] -> hh_pt_4k[0] -> hh_4k_page
 *
 * It then jumps to hh_start64 at its higher-half address, which switches to
 * a higher-half stack, clears .bss and calls hh_main().
 */
    .section .note.GNU-stack, "", @progbits
    .cfi_sections .debug_frame

/* Intel SDM vol. 3, 4.5 (4-level paging): entry bits. */
#define PTE_PRESENT  0x1
#define PTE_WRITE    0x2
#define PDE_PS       0x80        /* PDE maps a 2 MiB page */
#define TABLE        (PTE_PRESENT | PTE_WRITE)
#define LARGE_2M     (PTE_PRESENT | PTE_WRITE | PDE_PS)
#define PAGE_2M      0x200000

    .section .boot.text, "ax", @progbits
    .code64
    .globl hh_entry
    .type hh_entry, @function
hh_entry:
    .cfi_startproc
    .cfi_undefined rip
    cld
    lea __boot_bss_start(%rip), %rdi
    lea __boot_bss_end(%rip), %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq

    lea hh_pdpt_low(%rip), %rax
    or $TABLE, %rax
    mov %rax, hh_pml4(%rip)
    lea hh_pdpt_high(%rip), %rax
    or $TABLE, %rax
    mov %rax, hh_pml4 + 511 * 8(%rip)

    lea hh_pd_2m(%rip), %rax
    or $TABLE, %rax
    mov %rax, hh_pdpt_low(%rip)
    mov %rax, hh_pdpt_high + 510 * 8(%rip)
    lea hh_pd_4k(%rip), %rax
    or $TABLE, %rax
    mov %rax, hh_pdpt_high + 511 * 8(%rip)
    lea hh_pt_4k(%rip), %rax
    or $TABLE, %rax
    mov %rax, hh_pd_4k(%rip)
    lea hh_4k_page(%rip), %rax
    or $TABLE, %rax
    mov %rax, hh_pt_4k(%rip)

    lea hh_pd_2m(%rip), %rdi
    mov $LARGE_2M, %eax
    mov $512, %ecx
1:  mov %rax, (%rdi)
    add $PAGE_2M, %rax
    add $8, %rdi
    dec %ecx
    jnz 1b

    lea hh_pml4(%rip), %rax
    mov %rax, %cr3
    movabs $hh_start64, %rax
    jmp *%rax
    .cfi_endproc
    .size hh_entry, . - hh_entry

    .text
    .type hh_start64, @function
hh_start64:
    .cfi_startproc
    .cfi_undefined rip
    lea hh_stack_top(%rip), %rsp
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq
    xor %ebp, %ebp
    call hh_main
1:  cli
    hlt
    jmp 1b
    .cfi_endproc
    .size hh_start64, . - hh_start64

    /* Page tables: physical = virtual, cleared by hh_entry. */
    .section .boot.bss, "aw", @nobits
    .balign 4096
    .globl hh_pml4, hh_pdpt_low, hh_pdpt_high, hh_pd_2m, hh_pd_4k, hh_pt_4k
hh_pml4:      .skip 4096
hh_pdpt_low:  .skip 4096
hh_pdpt_high: .skip 4096
hh_pd_2m:     .skip 4096
hh_pd_4k:     .skip 4096
hh_pt_4k:     .skip 4096

    /* The page that hh_4k_virt maps, alone in its page frame. */
    .section .boot.data, "aw", @progbits
    .balign 4096
    .globl hh_4k_page
    .type hh_4k_page, @object
hh_4k_page:
    .ascii "4KPAGE!!"
    .balign 4096, 0
    .size hh_4k_page, 4096

    .section .stack, "aw", @nobits
    .balign 16
    .globl hh_stack_bottom, hh_stack_top
hh_stack_bottom:
    .skip 16384
hh_stack_top:
