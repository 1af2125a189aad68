# A 32-bit (ELF32) kernel gets QEMU's i386 register layout: `gdb multiboot.elf` works with
# no "'g' packet reply is too long" and no `set architecture`.
print $pc == _start
info registers eip eflags cs cr0 cr3 cr4 efer k_gs_base
# mb_main receives EBX (the multiboot info address) and stores it in mb_info.
set $ebx = 0x7000
break mb_tick
continue
echo --- at mb_tick\n
print/x mb_info
print/x mb_magic
print $pc == mb_tick
info registers eip
kill
