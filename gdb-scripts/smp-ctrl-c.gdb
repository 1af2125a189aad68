# smp-ctrl-c.gdb: Ctrl-C stops every CPU (all-stop).
#
# Guest: smp.elf on 8 vCPUs, already running (--no-wait) and past its AP start-up.
# The `continue` runs until Ctrl-C (the test sends SIGINT to gdb, as a terminal does).
# Then no CPU runs: every counter reads the same twice, a moment apart, and `info
# threads` names all eight CPUs. gdb detaches: the CPUs run on.

echo ==continuing==\n
continue
echo ==stopped==\n
printf "read1 c0=%lu c1=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
shell sleep 0.3
printf "read2 c0=%lu c1=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
echo ==threads==\n
info threads
echo ==end==\n
detach
