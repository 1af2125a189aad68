# watch-code-page.gdb: an access watchpoint on the page the guest executes from.
#
# Guest: demo.elf. The watched byte shares its page with tick() and kmain(), so every
# instruction fetched from that page must still run correctly (kvmgdb runs it with the
# page mapped) while the write watchpoint on counter keeps reporting.

break tick
continue
delete
awatch *(char *)step_sequence
watch counter
continue
printf "stop counter=%lu guest_bp_hits=%lu\n", counter, guest_bp_hits
continue
printf "stop counter=%lu guest_bp_hits=%lu\n", counter, guest_bp_hits
continue
printf "stop counter=%lu guest_bp_hits=%lu\n", counter, guest_bp_hits
kill
