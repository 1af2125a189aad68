# break-before-paging.gdb: `break` on a higher-half function before the guest has mapped it.
#
# Guest: higher_half.elf, stopped at its physical entry point: hh_tick's virtual address
# does not translate yet, so there is no byte to patch. kvmgdb keeps the breakpoint in a
# debug register instead, and it hits once the guest's own page tables are live.

break hh_tick
continue
bt
printf "hit counter=%lu\n", hh_counter
continue
printf "hit counter=%lu\n", hh_counter
kill
