# A tour of kvmgdb's monitor commands on the demo guest; tests/monitor.rs runs it and
# checks each @@section. Try any line by hand: they are what a user types.
break tick
continue
echo @@help\n
monitor help
echo @@registers\n
monitor info registers
echo @@cpus\n
monitor info cpus
echo @@mem\n
monitor info mem
echo @@tlb\n
monitor info tlb
echo @@tlb-top\n
monitor info tlb 0xffe00000
echo @@translate\n
eval "monitor translate 0x%lx", (unsigned long) &counter
echo @@translate-unmapped\n
monitor translate 0x200000000
echo @@gdt\n
monitor info gdt
echo @@idt\n
monitor info idt
echo @@msr\n
monitor msr efer
monitor msr 0xc0000102 0x1234
monitor msr 3221225730
echo @@kvm\n
monitor info kvm
echo @@version\n
monitor info version
echo @@sstep\n
monitor sstep irq off
stepi
monitor sstep irq
monitor sstep irq on
echo @@phys\n
monitor phys on
x/s &message
monitor phys off
echo @@reset\n
monitor reset
maintenance flush register-cache
p $pc == _start
p counter
continue
p $pc == tick
echo @@end\n
