# stepi-guest-int3.gdb: `stepi` onto an int3 of the guest's own goes into the guest's #BP
# handler and stops at its first instruction; the frame holds the guest's RFLAGS, without
# the trap flag the step used, so the handler's iretq returns to plain running.
#
# Guest: demo.elf (its IDT is set up before tick runs). The code written at 0x400000 is
# `int3; jmp .`.

break tick
continue
set {unsigned char[3]}0x400000 = {0xcc, 0xeb, 0xfe}
set $pc = 0x400000
stepi
printf "@@handler pc=%#lx bp_handler=%#lx\n", $pc, &bp_handler
printf "@@frame rip=%#lx rflags=%#lx\n", ((unsigned long*)$rsp)[0], ((unsigned long*)$rsp)[2]
delete
hbreak *0x400001
continue
printf "@@back pc=%#lx eflags=%#lx\n", $pc, $eflags
kill
