# reconnect.gdb: the second half of detach-and-reconnect (see detach.gdb).
#
# Connecting stops the guest wherever it is; counter has grown while nobody was attached.
# The breakpoint at tick from the first session is gone: with a new breakpoint at
# bp_loop_target (called from tick), the next stop is there, not at tick.

printf "session2 counter=%lu\n", counter
break bp_loop_target
echo ==continue==\n
continue
echo ==bt==\n
bt
echo ==end==\n
printf "session2-after counter=%lu\n", counter
kill
