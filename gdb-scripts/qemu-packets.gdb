# qemu-packets.gdb: QEMU's maintenance packets work unchanged.
#
# Guest: demo.elf. In physical-memory mode gdb's addresses are guest-physical, so the page
# table kvmgdb built at 0x9000 can be read directly; the sstep packets report and set
# QEMU's single-step flags (NOIRQ: interrupts masked while stepping).

maintenance packet qqemu.sstepbits
maintenance packet qqemu.sstep
maintenance packet Qqemu.sstep=0x1
maintenance packet qqemu.sstep
maintenance packet Qqemu.sstep=0x7
maintenance packet qqemu.PhyMemMode
maintenance packet Qqemu.PhyMemMode:1
maintenance packet qqemu.PhyMemMode
echo ==phys==\n
x/4xb 0x100000
x/2xg 0x9000
maintenance packet Qqemu.PhyMemMode:0
echo ==virt==\n
x/4xb 0x100000
stepi
printf "pc=%#lx\n", $pc
kill
