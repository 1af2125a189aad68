# hbreak.gdb: hardware-assisted breakpoints (the x86 debug registers DR0-DR3).
#
# Guest: demo.elf. hbreak needs no write to guest memory. gdb reports the hit as
# "Breakpoint N, ..." like a software breakpoint; `info breakpoints` lists it as an
# "hw breakpoint". Continuing from it must not re-hit the same instruction: the guest
# runs one full loop iteration each time (counter goes up by one).

hbreak tick
continue
printf "hit counter=%lu\n", counter
continue
printf "hit counter=%lu\n", counter
continue
printf "hit counter=%lu\n", counter
info breakpoints
kill
