# debug-exit.gdb: make the guest exit with a status of the debugger's choosing.
#
# Guest: demo.elf. kmain's loop calls debug_exit(exit_request) once exit_request is
# nonzero, which writes it to QEMU's isa-debug-exit port (0xf4): the VM ends with status
# (5 << 1) | 1 = 11, which gdb prints in octal as 013. exit_request lives in .bss, which
# _start clears, so it is set only once kmain runs (at the first tick).

break tick
continue
delete
set var exit_request = 5
continue
