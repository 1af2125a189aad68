# move-past-internal-error.gdb: KVM could not run an instruction and kvmgdb has no
# completion for it, so the guest stops with SIGILL at it. The debugger can still move on:
# `continue` unchanged meets the same instruction again; `set $pc += 4` skips it, and the
# guest runs on from there.
#
# Guest: demo.elf. The code written at 0x400000 is `pxor %xmm1,%xmm2` (4 bytes; PVM's
# emulator gives up on it, hardware KVM runs it), `mov $42,%eax`, `jmp .`.

break tick
continue
delete
set {unsigned char[11]}0x400000 = {0x66, 0x0f, 0xef, 0xd1, 0xb8, 0x2a, 0x00, 0x00, 0x00, 0xeb, 0xfe}
set $eax = 0
set $pc = 0x400000
hbreak *0x400009
continue
printf "@@first pc=%#lx eax=%#lx\n", $pc, $eax
if $pc == 0x400000
  continue
  printf "@@again pc=%#lx eax=%#lx\n", $pc, $eax
  set $pc += 4
  continue
end
printf "@@after pc=%#lx eax=%#lx\n", $pc, $eax
kill
