# The helper commands of kvmgdb.gdb (load it first) on the higher-half guest.
hbreak hh_tick
continue
echo @@pt\n
pt 0xffffffffc0000000
pt &hh_counter
echo @@pagetables\n
pagetables
echo @@tlb\n
tlb 0xffffffffc0000000
echo @@gdt\n
gdt
echo @@idt\n
idt
echo @@sysregs\n
sysregs
echo @@cpus\n
cpus
echo @@msr\n
msr efer
msr kernel_gs_base 0x42
echo @@kvm-caps\n
kvm-caps
echo @@sstep\n
sstep-irq
echo @@phys\n
phys
x/s &hh_4k_page
virt
x/s 0xffffffffc0000000
echo @@coredump\n
coredump helpers.core
echo @@reset\n
kvm-reset
p $pc == hh_entry
echo @@end\n
