# Run as: gdb -batch demo.elf demo.core -x core-demo.gdb
echo @@core\n
p counter
bt
echo @@end\n
