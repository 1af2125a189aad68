# triple-fault.gdb: inspect a guest that triple-faulted.
#
# Guest: triple_fault.elf. It loads an empty IDT and executes ud2 at crash_here: the #UD
# cannot be delivered, the CPU shuts down (KVM_EXIT_SHUTDOWN). kvmgdb reports that to gdb
# as SIGSEGV and keeps the vCPU frozen at the faulting instruction for inspection.

continue
info registers rip
printf "crash pc=%#lx crash_here=%#lx\n", $pc, &crash_here
monitor info cpus
kill
