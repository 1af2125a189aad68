# watch-struct.gdb: a hardware watchpoint on a whole 256-byte struct.
#
# Guest: demo.elf. touch_watched() stores one word of big_struct per loop iteration. gdb
# keeps a 256-byte `watch` in hardware (no single-stepping fallback) because kvmgdb's
# watchpoints have no length limit; gdb prints the old and new struct at each hit.

break tick
continue
delete
watch big_struct
continue
printf "hit counter=%lu word=%lu\n", counter, big_struct.words[counter % 32]
continue
printf "hit counter=%lu word=%lu\n", counter, big_struct.words[counter % 32]
continue
printf "hit counter=%lu word=%lu\n", counter, big_struct.words[counter % 32]
info watchpoints
kill
