# demo-entry.gdb: where the embedded demo guest starts.
#
# Guest: the demo kvmgdb boots when given no kernel. It waits for gdb at the ELF entry
# point, _start.

info symbol $pc
printf "entry pc=%#lx start=%#lx\n", $pc, &_start
kill
