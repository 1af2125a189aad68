# Run as: gdb -batch higher_half.elf hh.core -x core-higher-half.gdb
echo @@core\n
p hh_counter
bt
x/s 0xffffffffc0000000
echo @@end\n
