# smp-wait-for-sipi.gdb: CPUs the guest has not started yet.
#
# Guest: smp.elf on 8 vCPUs, stopped at the entry point (no --no-wait), before the boot
# CPU has sent any INIT-SIPI-SIPI: thread 1 is CPU 0 at the entry, the others wait for
# their startup IPI, at the reset vector (CS:IP f000:fff0). A `continue` runs them all:
# the waiting ones block in KVM_RUN until a SIPI comes, and the breakpoint in kmain,
# which CPU 0 reaches before it starts any, stops them there all the same.

echo ==threads==\n
info threads
echo ==end==\n
thread 5
printf "ap rip=%#lx cs=%#x\n", $rip, $cs
break kmain
echo ==kmain==\n
continue
echo ==threads==\n
info threads
echo ==end==\n
kill
