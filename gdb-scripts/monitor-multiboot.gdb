# A 32-bit Multiboot guest with paging off: i386 registers, RAM identity mapped, and an
# ELF32 core (core-multiboot.gdb reads it back).
break mb_tick
continue
continue
echo @@live\n
p mb_counter
bt
echo @@registers\n
monitor info registers
echo @@mem\n
monitor info mem
echo @@translate\n
monitor translate 0x100000
echo @@dump\n
monitor dump mb.core
echo @@end\n
