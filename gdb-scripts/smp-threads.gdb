# smp-threads.gdb: the second half of smp-threads (see smp-attach.gdb).
#
# Guest: smp.elf on 4 vCPUs. Every CPU's counter has moved while gdb was away. A
# breakpoint in cpu2_work, which only CPU 2 calls, is hit by thread 3 (CPU 2).

printf "session2 cpus=%u c0=%lu c1=%lu c2=%lu c3=%lu\n", cpus_started, per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3]
break cpu2_work
echo ==continue==\n
continue
echo ==end==\n
printf "hit thread=%d cpu=%u\n", $_thread, cpu
kill
