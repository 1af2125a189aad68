# gdb numbers the general registers rax rbx rcx rdx rsi rdi rbp rsp (QEMU's order), KVM keeps
# rsp before rbp: reads and writes must follow the names, not the positions.
# Entry state (README): RSP 0x80000, RBP 0, RSI 0x7000 (the boot_params page).
info registers rsp rbp rsi
# kmain stores its argument, RSI at entry, in `boot_params`.
set $rsi = 0xabc000
break *step_7
continue
echo --- at step_7\n
print/x boot_params
# step_7 is a `ret`: point RSP at a return address of our choosing. RBP and RAX must keep
# what we write, and the ret must land on bp_loop_target.
set $rbp = 0x1234
set $rax = 0x5555
set $rsp = $rsp - 8
set {unsigned long} $rsp = (unsigned long) &bp_loop_target
stepi
echo --- after ret\n
print $pc == bp_loop_target
info registers rax rbp
kill
