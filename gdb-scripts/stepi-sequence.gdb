# stepi-sequence.gdb: single-step machine instructions and watch RIP and RAX.
#
# Guest: demo.elf. step_sequence (demo.S) is a fixed run of instructions, each with a
# global label step_1 .. step_7 (see guests/README.md):
#   step_1 nop; step_2 mov $0x1234,%eax; step_3 mov $0x80,%dx; step_4 out %al,(%dx);
#   step_5 inc %rax; step_6 add $1,%rax; step_7 ret
# Each stepi must move RIP to exactly the next label. step_4 is a port I/O instruction:
# it exits to the VMM, and the step must still end on step_5, not one instruction later.

break step_sequence
continue
printf "step pc=%#lx want=%#lx\n", $pc, &step_1
stepi
printf "step pc=%#lx want=%#lx\n", $pc, &step_2
stepi
printf "step pc=%#lx want=%#lx rax=%#lx\n", $pc, &step_3, $rax
stepi
printf "step pc=%#lx want=%#lx dx=%#lx\n", $pc, &step_4, $rdx & 0xffff
stepi
printf "step pc=%#lx want=%#lx\n", $pc, &step_5
stepi
printf "step pc=%#lx want=%#lx rax=%#lx\n", $pc, &step_6, $rax
stepi
printf "step pc=%#lx want=%#lx rax=%#lx\n", $pc, &step_7, $rax
kill
