# smp-eight.gdb: eight CPUs as eight gdb threads, in all-stop mode.
#
# Guest: smp.elf on 8 vCPUs, running and past its AP start-up (--no-wait).
# - `info threads` names each thread as QEMU does: CPU#n [activity];
# - `thread 3`, then `x/i $pc` and `info registers rip` show CPU 2's own state;
# - `thread apply all bt` walks every CPU's stack;
# - a breakpoint in cpu2_work, which only CPU 2 calls, is hit by thread 3;
# - with `set scheduler-locking step`, `stepi` on thread 2 moves CPU 1 only; without it
#   the other CPUs run while CPU 1 steps (gdb's default);
# - a hardware breakpoint in turn_work is hit by every CPU in turn, threads 1..8;
# - a watchpoint on cpu3_value, which only CPU 3 writes, is reported on thread 4;
# - raw per-thread resumes: `vCont;c:1;c:3` runs CPUs 0 and 2 alone (CPU 2 stops in
#   cpu2_work, every other counter but CPU 0's stays), `vCont;c:0` (thread 0, any
#   thread) runs them all.

echo ==threads==\n
info threads
echo ==end==\n
thread 3
echo ==thread3==\n
x/i $pc
info registers rip
echo ==bt==\n
thread apply all bt 1
echo ==end==\n

break cpu2_work
echo ==cpu2==\n
continue
echo ==end==\n
printf "hit thread=%d cpu=%u\n", $_thread, cpu
delete

set scheduler-locking step
thread 2
printf "locked1 c0=%lu c1=%lu c2=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2]
stepi 30
printf "locked2 c0=%lu c1=%lu c2=%lu thread=%d\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], $_thread
set scheduler-locking off
printf "free1 c0=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", per_cpu_counter[0], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
stepi 30
printf "free2 c0=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", per_cpu_counter[0], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]

hbreak turn_work
set $i = 0
while $i < 10
  continue
  printf "turn thread=%d cpu=%u\n", $_thread, cpu
  set $i = $i + 1
end
delete

watch cpu3_value
echo ==watch==\n
continue
echo ==end==\n
printf "watch thread=%d\n", $_thread
delete

set breakpoint always-inserted on
break cpu2_work
printf "vcont1 c0=%lu c1=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
echo ==vcont==\n
maint packet vCont;c:1;c:3
echo ==end==\n
printf "vcont2 c0=%lu c1=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
echo ==any==\n
maint packet vCont;c:0
echo ==end==\n
printf "vcont3 c0=%lu c1=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
delete
set breakpoint always-inserted off
detach
