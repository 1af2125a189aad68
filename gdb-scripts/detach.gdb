# detach.gdb: the first half of detach-and-reconnect (see reconnect.gdb).
#
# Guest: demo.elf. Stop at tick, note counter, then detach: kvmgdb removes the breakpoint
# and lets the guest run on, waiting for the next gdb.

break tick
continue
printf "session1 counter=%lu\n", counter
detach
