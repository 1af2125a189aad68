# kill.gdb: end the VM from gdb.
#
# Guest: demo.elf. `kill` stops the machine; kvmgdb exits with status 0.

break tick
continue
kill
