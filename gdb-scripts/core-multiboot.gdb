# Run as: gdb -batch multiboot.elf mb.core -x core-multiboot.gdb
echo @@core\n
p mb_counter
bt
echo @@end\n
