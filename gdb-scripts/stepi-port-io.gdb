# stepi-port-io.gdb: single-step an `out` instruction that carries a breakpoint.
#
# Guest: demo.elf. step_4 is `out %al,(%dx)`, a port I/O exit to the VMM. With a
# software breakpoint planted on it, one stepi has to step over both the breakpoint and
# the I/O exit and stop on the very next instruction, step_5.

break *step_4
continue
printf "at pc=%#lx want=%#lx\n", $pc, &step_4
stepi
printf "stepped pc=%#lx want=%#lx\n", $pc, &step_5
stepi
printf "stepped pc=%#lx want=%#lx\n", $pc, &step_6
kill
