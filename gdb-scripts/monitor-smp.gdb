# monitor-smp.gdb: the monitor on an SMP guest, each command about the selected thread's
# CPU (thread N is CPU N-1, as QEMU's current CPU), and a core file of every CPU.
#
# Guest: smp.elf on 8 vCPUs, already running (--no-wait) and past its AP start-up;
# attaching stops every CPU. core-smp.gdb reads smp.core back.

echo ==threads==\n
info threads
echo ==cpus==\n
monitor info cpus
# After info threads gdb has every thread's registers: selecting one needs no register
# read, yet the monitor follows the selection.
thread 3
echo ==cpus-thread3==\n
monitor info cpus
thread 4
echo ==regs-thread4==\n
printf "thread4 pc=%#lx\n", $pc
monitor info registers
echo ==mem-thread4==\n
monitor info mem
echo ==live==\n
thread apply all printf "live thread=%d pc=%#lx sp=%#lx rax=%#lx rbx=%#lx rcx=%#lx rdx=%#lx rsi=%#lx rdi=%#lx rbp=%#lx r8=%#lx r12=%#lx r15=%#lx eflags=%#x\n", $_thread, $pc, $sp, $rax, $rbx, $rcx, $rdx, $rsi, $rdi, $rbp, $r8, $r12, $r15, $eflags
echo ==dump==\n
monitor dump smp.core
echo ==end==\n
kill
