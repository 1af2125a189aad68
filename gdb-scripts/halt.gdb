# halt.gdb: a guest that halts with interrupts off is reported as SIGSTOP and stays frozen.
#
# Guest: demo.elf. The script sends the vCPU to halt_forever (cli; hlt) in start64.S;
# nothing can wake it, so kvmgdb reports the halt and keeps the VM for inspection.

break kmain
continue
delete
set var $pc = halt_forever
continue
echo ==cpus==\n
monitor info cpus
echo ==end==\n
printf "after rip=%#lx halt=%#lx\n", $pc, halt_forever
continue
echo ==again==\n
kill
