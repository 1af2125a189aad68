# killed-in-continue.gdb: a gdb that dies while the guest runs (see after-killed-gdb.gdb).
#
# Guest: demo.elf. Stop at tick once, plant a breakpoint on debug_exit (which the guest
# reaches only when asked to exit), and continue. The test SIGKILLs gdb during that
# continue: kvmgdb sees the socket close, treats it as a detach (the breakpoint is removed,
# the guest runs on) and waits for the next gdb.

break tick
continue
printf "dead-session counter=%lu\n", counter
delete
break *debug_exit
echo ==continuing==\n
continue
