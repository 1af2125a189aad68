# arch-x86-64-multiboot.gdb: a 32-bit Multiboot kernel through the x86-64 register layout,
# as qemu-system-x86_64 serves it (and kvmgdb's QEMU command-line form).
#
# Guest: multiboot.elf (ELF32), entered in 32-bit protected mode. gdb runs either with the
# ELF32 file after `set architecture i386:x86-64` (the QEMU habit), or with a 64-bit symbol
# file of the same kernel (`gdb xen-syms` against Xen's ELF32 image is the same case).
# Either way the registers are 64 bits wide: $rip, $rsp, $rax…

hbreak mb_tick
continue
printf "arch rip=%#lx tick=%#lx rsp=%#lx magic=%#x counter=%u\n", $rip, &mb_tick, $rsp, mb_magic, mb_counter
info registers rip
# The Multiboot information block's cmdline field (offset 16): -append's text.
printf "cmdline: %s\n", (char *)*(unsigned int *)(mb_info + 16)
show architecture
kill
