# killed-in-step-flood.gdb: a gdb that dies in the middle of a run of single steps (see
# after-killed-gdb.gdb).
#
# Guest: demo.elf. Stop at tick once, plant a breakpoint on debug_exit, then `stepi` for
# ever. The test SIGKILLs gdb after half a second of that: whether the kill lands while a
# step runs or between two, kvmgdb must end the session as a detach and serve the next gdb.

break tick
continue
printf "dead-session counter=%lu\n", counter
delete
break *debug_exit
echo ==stepping==\n
while 1
  stepi
end
