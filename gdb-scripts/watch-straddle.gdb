# watch-straddle.gdb: an access that only partly overlaps the watched range still hits.
#
# Guest: demo.elf. touch_watched() stores all eight bytes of straddle_word at once; the
# watchpoint covers only its last byte.

break tick
continue
delete
watch *((unsigned char *)&straddle_word + 7)
continue
printf "stop counter=%lu byte=%lu\n", counter, *((unsigned char *)&straddle_word + 7)
continue
printf "stop counter=%lu byte=%lu\n", counter, *((unsigned char *)&straddle_word + 7)
kill
