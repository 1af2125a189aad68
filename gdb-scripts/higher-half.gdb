# higher-half.gdb: read memory through the guest's own page tables.
#
# Guest: higher_half.elf, linked like a Linux kernel at 0xffffffff80100000 but loaded at
# physical 0x100000. Its boot stub (at the entry point, identity mapped) builds page tables
# and jumps to the higher half. Until then the higher-half addresses are not mapped, so
# the first stop uses a hardware breakpoint, which needs no memory write; once the guest's
# CR3 is live, a software breakpoint works there too.
#
# hh_4k_virt (0xffffffffc0000000) is mapped with one 4 KiB page to hh_4k_page, which holds
# "4KPAGE!!"; hh_message lies in a 2 MiB page.

hbreak hh_main
continue
break hh_tick
continue
printf "where pc=%#lx hh_tick=%#lx\n", $pc, &hh_tick
echo ==message==\n
x/s hh_message
echo ==bytes==\n
x/16xb &hh_message
echo ==4k==\n
x/8xb hh_4k_virt
x/s hh_4k_virt
echo ==unmapped==\n
# The page after hh_4k_virt has no mapping: gdb reports "Cannot access memory". That error
# ends this script (so it comes last); gdb then detaches and the guest runs on.
x/xb 0xffffffffc0001000
