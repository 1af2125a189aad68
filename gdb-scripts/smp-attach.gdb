# smp-attach.gdb: the first half of smp-threads (see smp-threads.gdb).
#
# Guest: smp.elf on 4 vCPUs, already running (--no-wait) and past its AP start-up.
# Attaching stops every CPU; each CPU is a gdb thread. Note each CPU's counter, then
# detach: the CPUs run on.

echo ==threads==\n
info threads
echo ==end==\n
printf "session1 cpus=%u c0=%lu c1=%lu c2=%lu c3=%lu\n", cpus_started, per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3]
detach
