# smp-together.gdb: stops several CPUs make at once are each reported, once.
#
# Guest: smp.elf on 8 vCPUs, running (--no-wait). Every CPU passes the first line of its
# counting loop all the time, so with a breakpoint there several CPUs hit it between
# the first hit and the moment all are stopped. Each such stop is reported in turn, on
# a later `continue`, without the guest running meanwhile. At every stop the script
# prints the reporting thread and every counter: a CPU's counter grows by exactly one
# round between two of its stops (a lost stop would show two rounds, a stop reported
# twice none).

break smp.c:135
set $i = 0
while $i < 40
  continue
  printf "stop thread=%d c0=%lu c1=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", $_thread, per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
  set $i = $i + 1
end
kill
