# set-var.gdb: write guest memory and registers, then read them back.
#
# Guest: demo.elf. At tick()'s first instruction counter++ has not happened yet, so after
# `set var counter = 1000` the next stop at tick sees 1001. Register writes go to the vCPU:
# RAX survives a stepi (push %rbp) and R12, which the loop never touches, survives a
# continue.

break tick
continue
set var counter = 1000
set var message[0] = 'J'
continue
printf "memory counter=%lu\n", counter
x/s message
set var $rax = 0x1234
set var $r12 = 0x1122334455667788
p/x $rax
stepi
printf "after-stepi rax=%#lx\n", $rax
continue
printf "after-continue r12=%#lx counter=%lu\n", $r12, counter
kill
