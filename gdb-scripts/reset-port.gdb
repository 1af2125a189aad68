# reset-port.gdb: the guest asks for a reset through port 0xcf9 (value 6: a hard reset).
#
# Guest: demo.elf, stopped at its entry point. The script writes three instructions over
# _start and continues into them:
#   b0 06          mov $0x6, %al
#   66 ba f9 0c    mov $0xcf9, %dx
#   ee             out %al, (%dx)
# With -no-reboot (QEMU form) or --no-reboot, kvmgdb ends, and gdb sees the inferior exit.

set {unsigned char[7]} $pc = {0xb0, 0x06, 0x66, 0xba, 0xf9, 0x0c, 0xee}
x/3i $pc
continue
