# stepi-completion.gdb: `stepi` over an instruction this KVM cannot run and kvmgdb completes
# (on PVM; hardware KVM runs it itself): the step ends after it, with its result, and
# `monitor info kvm` counts the completion.
#
# Guest: demo.elf. The code written at 0x400000 is `popcnt %rdi,%rax`, `nop`.

break tick
continue
delete
set {unsigned char[6]}0x400000 = {0xf3, 0x48, 0x0f, 0xb8, 0xc7, 0x90}
set $rdi = 0xff00ff
set $rax = 0
set $pc = 0x400000
stepi
printf "@@step pc=%#lx rax=%#lx\n", $pc, $rax
monitor info kvm
kill
