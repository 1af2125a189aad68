# after-killed-gdb.gdb: the gdb that connects right after one was SIGKILLed
# (killed-in-continue.gdb, killed-in-step-flood.gdb).
#
# Guest: demo.elf. The registers are readable, counter has grown while no gdb was attached,
# and the dead session's breakpoint on debug_exit is gone: its code reads as the ELF has it,
# a new breakpoint on bp_loop_target is the first stop, and asking the guest to exit
# (status (7 << 1) | 1 = 15, octal 017) ends it with no stop on debug_exit. gdb would
# silently resume from a stop at a breakpoint it does not know (a `swbreak` stop reply,
# RSP manual E.3), so the remote log shows the packets: a `W` and no `T` before it.

printf "session2 counter=%lu\n", counter
echo ==regs==\n
info registers rip rsp
echo ==code==\n
x/4xb debug_exit
echo ==end==\n
break bp_loop_target
echo ==continue==\n
continue
echo ==end==\n
delete
set var exit_request = 7
echo ==exit==\n
set debug remote 1
continue
