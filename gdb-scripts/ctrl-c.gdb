# ctrl-c.gdb: interrupt a running guest.
#
# Guest: demo.elf, started with --no-wait so it already runs when gdb attaches.
# The `continue` below runs until Ctrl-C is pressed (the test sends SIGINT to gdb, as a
# terminal does); gdb then reports "Program received signal SIGINT". The guest is
# stopped wherever it was and can be inspected and resumed.

printf "attached counter=%lu\n", counter
echo ==continuing==\n
continue
echo ==stopped==\n
info registers rip
printf "stopped counter=%lu\n", counter
break tick
continue
printf "resumed counter=%lu\n", counter
kill
