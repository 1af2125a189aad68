# watch-six.gdb: six hardware watchpoints at once (x86 has only four debug registers).
#
# Guest: demo.elf. touch_watched(n) writes watch6[i] when n is a multiple of i+1.

break tick
continue
delete
watch watch6[0]
watch watch6[1]
watch watch6[2]
watch watch6[3]
watch watch6[4]
watch watch6[5]
set $i = 0
while $i < 16
  continue
  printf "stop counter=%lu\n", counter
  set $i = $i + 1
end
info watchpoints
kill
