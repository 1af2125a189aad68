# core-smp.gdb: the core file monitor-smp.gdb wrote of smp.elf on 8 vCPUs.
# Run as: gdb -batch smp.elf smp.core -x core-smp.gdb
# One thread per CPU, thread 1 being CPU 0, each with the registers it had.

echo ==threads==\n
info threads
echo ==core==\n
thread apply all printf "core thread=%d pc=%#lx sp=%#lx rax=%#lx rbx=%#lx rcx=%#lx rdx=%#lx rsi=%#lx rdi=%#lx rbp=%#lx r8=%#lx r12=%#lx r15=%#lx eflags=%#x\n", $_thread, $pc, $sp, $rax, $rbx, $rcx, $rdx, $rsi, $rdi, $rbp, $r8, $r12, $r15, $eflags
echo ==end==\n
