# multiboot.gdb: debug a 32-bit Multiboot v1 kernel.
#
# Guest: multiboot.elf (ELF32, i386), entered in 32-bit protected mode like QEMU -kernel
# does. gdb picks the i386 register layout from the ELF file: no `set architecture`
# needed. mb_main stores the boot loader's magic (EAX = 0x2BADB002) and the info block's
# mem_upper (KiB above 1 MiB) before it calls mb_tick().

echo ==entry==\n
info registers eip
printf "entry eip=%#x start=%#x eax=%#x\n", $eip, &_start, $eax
echo ==end==\n
break mb_tick
continue
bt
printf "mb magic=%#x mem_upper=%u counter=%u\n", mb_magic, mb_mem_upper, mb_counter
info registers eip
kill
