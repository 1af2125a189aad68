# info-registers.gdb: read the vCPU's registers at a breakpoint.
#
# Guest: demo.elf.
#
# At the first instruction of tick(), RIP is tick's address, RSP points into the demo's
# 16 KiB stack (stack_bottom..stack_top), the guest runs at CPL0 with interrupts off.

break tick
continue
echo ==regs==\n
info registers
echo ==end==\n
printf "where rip=%#lx pc=%#lx tick=%#lx\n", $rip, $pc, &tick
printf "stack rsp=%#lx bottom=%#lx top=%#lx\n", $rsp, &stack_bottom, &stack_top
kill
