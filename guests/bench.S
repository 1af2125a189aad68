/* bench.S - the guest of kvmgdb-bench: a Multiboot v1 ELF32 kernel that kvmgdb and
 * `qemu-system-x86_64 -kernel` boot the same way (see README.md).
 *
 * It fills a 16 MiB region with a pattern the benchmark can check byte by byte, reaches
 * `bench_ready`, then runs a five-instruction loop forever. No interrupts, iret, calls,
 * stack or paging: nothing here depends on what PVM cannot do in 32-bit mode.
 *
 * The pattern, per 4 KiB page at address A (A in [bench_pattern, bench_pattern_end)):
 *   bytes 0..3   A                  (little-endian)
 *   bytes 4..7   ~A
 *   bytes 8..    the xorshift32 sequence x' = x ^ x<<13; x' ^= x'>>17; x' ^= x'<<5 from
 *                BENCH_SEED, one dword per step (first dword = first step's result),
 *                identical in every page.
 * A stub that reads the wrong page, the wrong offset or stale data cannot match it.
 */
    .section .note.GNU-stack, "", @progbits
    .cfi_sections .debug_frame

#define MB_MAGIC      0x1BADB002
#define MB_FLAGS      0               /* no info needed; addresses from the ELF */
#define PATTERN_BASE  0x400000
#define PATTERN_SIZE  0x1000000       /* 16 MiB */
#define PAGE          4096
#define BENCH_SEED    0x2545F491
#define CR0_MP        (1 << 1)
#define CR0_EM        (1 << 2)
#define CR4_OSFXSR    (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)

    .section .multiboot, "a", @progbits
    .balign 4
    .globl multiboot_header
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .globl bench_pattern, bench_pattern_end
    .set bench_pattern, PATTERN_BASE
    .set bench_pattern_end, PATTERN_BASE + PATTERN_SIZE

    .section .text.start, "ax", @progbits
    .code32
    .globl _start
    .type _start, @function
_start:
    .cfi_startproc
    .cfi_undefined eip
    cld
    /* Page 0, bytes 8..: the xorshift32 sequence. */
    mov $(PATTERN_BASE + 8), %edi
    mov $BENCH_SEED, %eax
    mov $(PAGE / 4 - 2), %ecx
1:  mov %eax, %edx
    shl $13, %edx
    xor %edx, %eax
    mov %eax, %edx
    shr $17, %edx
    xor %edx, %eax
    mov %eax, %edx
    shl $5, %edx
    xor %edx, %eax
    stosl
    dec %ecx
    jnz 1b
    /* Pages 1..: copies of page 0, 128 bytes (eight SSE registers) at a time. Each
     * SSE move is one emulated instruction for 16 bytes, where `rep movsl` would cost
     * one emulation per dword (4 s for 16 MiB on PVM). SSE needs CR4.OSFXSR and a
     * CR0 with EM clear (Intel SDM vol. 3A, 13.1.3). */
    mov %cr0, %eax
    and $~CR0_EM, %eax
    or $CR0_MP, %eax
    mov %eax, %cr0
    mov %cr4, %eax
    or $(CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
    mov %eax, %cr4
    mov $PATTERN_BASE, %esi         /* the 128-byte chunk of page 0 being copied */
3:  movdqa 0(%esi), %xmm0
    movdqa 16(%esi), %xmm1
    movdqa 32(%esi), %xmm2
    movdqa 48(%esi), %xmm3
    movdqa 64(%esi), %xmm4
    movdqa 80(%esi), %xmm5
    movdqa 96(%esi), %xmm6
    movdqa 112(%esi), %xmm7
    lea PAGE(%esi), %edi
4:  movdqa %xmm0, 0(%edi)
    movdqa %xmm1, 16(%edi)
    movdqa %xmm2, 32(%edi)
    movdqa %xmm3, 48(%edi)
    movdqa %xmm4, 64(%edi)
    movdqa %xmm5, 80(%edi)
    movdqa %xmm6, 96(%edi)
    movdqa %xmm7, 112(%edi)
    add $PAGE, %edi
    cmp $(PATTERN_BASE + PATTERN_SIZE), %edi
    jb 4b
    add $128, %esi
    cmp $(PATTERN_BASE + PAGE), %esi
    jb 3b
    /* Every page's header: its address and the address's complement. */
    mov $PATTERN_BASE, %edi
    mov $(PATTERN_SIZE / PAGE), %ecx
2:  mov %edi, (%edi)
    mov %edi, %eax
    not %eax
    mov %eax, 4(%edi)
    add $PAGE, %edi
    dec %ecx
    jnz 2b

    /* The benchmark waits here (a breakpoint) before it measures anything. */
    .globl bench_ready
bench_ready:
    xor %eax, %eax
    /* The hot loop: EAX counts the `inc`s executed, so after N single steps from
     * bench_loop the benchmark knows both where EIP must be and what EAX must hold. */
    .globl bench_loop, bench_loop_1, bench_loop_2, bench_loop_3, bench_loop_4
bench_loop:
    inc %eax
bench_loop_1:
    inc %eax
bench_loop_2:
    inc %eax
bench_loop_3:
    inc %eax
bench_loop_4:
    jmp bench_loop
    .cfi_endproc
    .size _start, . - _start

    /* multiboot.ld places this after .bss; the guest itself uses no stack. */
    .section .stack, "aw", @nobits
    .balign 16
    .skip 16
