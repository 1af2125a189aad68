# breakpoint-loop.gdb: hit the same breakpoint many times in a row.
#
# Guest: demo.elf. Each continue runs exactly one iteration of kmain's loop, so counter
# (incremented once per tick) must go up by exactly one per hit, and bp_loop_hits with it.

break tick
continue
set $i = 0
while $i < 20
  printf "hit i=%d counter=%lu bp_loop_hits=%lu\n", $i, counter, bp_loop_hits
  continue
  set $i = $i + 1
end
printf "hit i=%d counter=%lu bp_loop_hits=%lu\n", $i, counter, bp_loop_hits
kill
