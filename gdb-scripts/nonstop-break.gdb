# nonstop-break.gdb: non-stop mode on the SMP guest (tests/gdb_nonstop.rs).
#
# Guest: smp.elf on 4 vCPUs, running (--no-wait). gdb reads this file on its standard
# input, after `set non-stop on` and `target remote`: only then does it run its event loop
# between commands and take the target's stop notifications as they come (a batch-mode
# script would hold them until it ends).
#
# Connecting stops thread 1 only. CPU 0 alone calls cpu0_work: `continue -a` runs all
# four (in the foreground: gdb waits for the first stop) and thread 1 stops there while
# the other CPUs count on, read while they run.
# `interrupt -a` stops the rest (vCont;t), `continue -a &` runs them all again.
# Every line gdb prints for the test starts on a line of its own (after the prompt).

break cpu0_work
# In the foreground: gdb waits for the first stop, thread 1's; the others run on.
continue -a
echo \n==hit==\n
info threads
echo \n==end==\n
printf "\nrun1 c0=%lu c1=%lu c2=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2]
# Read while they run, for up to 5 s (a loaded host may not run a vCPU thread for a while).
set $c1 = per_cpu_counter[1]
set $c2 = per_cpu_counter[2]
set $n = 0
while (per_cpu_counter[1] == $c1 || per_cpu_counter[2] == $c2) && $n < 50
  shell sleep 0.1
  set $n = $n + 1
end
printf "\nrun2 c0=%lu c1=%lu c2=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2]
x/i $pc
interrupt -a
# gdb takes one notification, or one reply of its vStopped sequence, per turn of its event
# loop, which runs between the commands it reads.
shell sleep 0.5
shell sleep 0.2
shell sleep 0.2
shell sleep 0.2
echo \n==stopped==\n
info threads
echo \n==end==\n
printf "\nstop1 c0=%lu c1=%lu c2=%lu c3=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3]
shell sleep 0.3
printf "\nstop2 c0=%lu c1=%lu c2=%lu c3=%lu\n", per_cpu_counter[0], per_cpu_counter[1], per_cpu_counter[2], per_cpu_counter[3]
delete
continue -a &
shell sleep 0.5
printf "\nagain1 c1=%lu c2=%lu\n", per_cpu_counter[1], per_cpu_counter[2]
set $c1 = per_cpu_counter[1]
set $c2 = per_cpu_counter[2]
set $n = 0
while (per_cpu_counter[1] == $c1 || per_cpu_counter[2] == $c2) && $n < 50
  shell sleep 0.1
  set $n = $n + 1
end
printf "\nagain2 c1=%lu c2=%lu\n", per_cpu_counter[1], per_cpu_counter[2]
echo \n==kill==\n
kill
