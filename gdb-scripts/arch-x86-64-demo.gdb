# arch-x86-64-demo.gdb: a 64-bit kernel through the x86-64 register layout.
#
# Guest: demo.elf (ELF64), entered in long mode; gdb runs with the same ELF64 file.

hbreak tick
continue
printf "arch rip=%#lx tick=%#lx rsp=%#lx\n", $rip, &tick, $rsp
bt
kill
