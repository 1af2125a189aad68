# smp-together.gdb: stops several CPUs make at once are each reported, once.
#
# Guest: smp.elf on 8 vCPUs, running (--no-wait). Every CPU passes the first line of its
# counting loop all the time, so with a breakpoint there several CPUs hit it between
# the first hit and the moment all are stopped. Each such stop is reported in turn, on
# a later `continue`, without the guest running meanwhile. At every stop the script
# prints the reporting thread and every counter: a CPU's counter grows by exactly one
# round between two of its stops (a lost stop would show two rounds, a stop reported
# twice none).
#
# Then the stops still queued are made moot in both ways gdb can, and none is reported:
# - every other CPU stopped at the breakpoint has its PC moved past the line (`set $pc`),
#   with the breakpoint kept: the next eight stops are real hits at the breakpoint;
# - the breakpoint goes and another comes in cpu2_work: the next stop is there, on
#   thread 3.
# gdb would quietly ignore a stale stop reported all the same ("delayed software
# breakpoint trap"); its infrun log, on for these two parts, would show one.

break smp.c:135
set $i = 0
while $i < 40
  continue
  printf "stop thread=%d c0=%lu c1=%lu c2=%lu c3=%lu c4=%lu c5=%lu c6=%lu c7=%lu\n", $_thread, per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3], per_cpu_counter[4], per_cpu_counter[5], per_cpu_counter[6], per_cpu_counter[7]
  set $i = $i + 1
end

set $me = $_thread
set $brk = $pc
info line smp.c:136
set $skip = $_
set $t = 1
while $t <= 8
  eval "thread %d", $t
  if $pc == $brk && $t != $me
    set $pc = $skip
    printf "moved thread=%d\n", $t
  end
  set $t = $t + 1
end
eval "thread %d", $me
echo ==moved==\n
set debug infrun 1
set $i = 0
while $i < 8
  continue
  printf "after thread=%d pc=%#lx\n", $_thread, $pc
  set $i = $i + 1
end
echo ==end==\n
delete
break cpu2_work
echo ==deleted==\n
continue
echo ==end==\n
set debug infrun 0
printf "cpu2 thread=%d\n", $_thread
kill
