# A Multiboot2 kernel is entered as the Multiboot2 spec (3.3) says: 32-bit protected
# mode, paging off, EAX = 0x36d76289 (the boot loader magic), EBX = the boot information,
# at the address its entry address tag names (_start), not at the ELF entry point.
print $pc == _start
info registers eax
print/x $ebx
print/x $cr0
break mb_main
continue
echo --- at mb_main\n
print/x magic
print/x info_addr
print $pc == mb_main
bt
kill
