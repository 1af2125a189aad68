# guest-int3.gdb: an int3 the guest executes itself goes to the guest's own #BP handler.
#
# Guest: demo.elf. kmain installs an IDT and runs guest_int3 once before its loop; the
# handler counts it in guest_bp_hits. gdb must not see that int3, even with breakpoints
# of its own planted.

break tick
continue
printf "hits guest_bp_hits=%lu counter=%lu\n", guest_bp_hits, counter
continue
printf "hits guest_bp_hits=%lu counter=%lu\n", guest_bp_hits, counter
kill
