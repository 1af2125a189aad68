# watch-read.gdb: read watchpoints fire on reads only.
#
# Guest: demo.elf. touch_watched() reads read_only_word and only writes write_only_word,
# so only the first watchpoint may ever fire.

break tick
continue
delete
rwatch write_only_word
rwatch read_only_word
continue
printf "stop counter=%lu\n", counter
continue
printf "stop counter=%lu\n", counter
continue
printf "stop counter=%lu\n", counter
kill
