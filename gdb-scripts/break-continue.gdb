# break-continue.gdb: stop at a C function by name and look at the call stack.
#
# Guest: demo.elf (kvmgdb waits at the entry point, _start).
#   gdb demo.elf -ex 'target remote :1234' -x gdb-scripts/break-continue.gdb
#
# kvmgdb plants a software breakpoint (int3) at tick(); continuing runs the guest until
# kmain's loop calls tick(). The backtrace walks the guest's own stack using the DWARF
# call frame information: tick <- kmain <- _start.

break tick
continue
echo ==bt==\n
bt
echo ==end==\n
kill
