# linux-debug.gdb: a debugging session on Debian's real Linux, from its entry point to a
# running kernel, in one boot.
#
# Guest: Debian's cloud kernel booted from its vmlinux (PVH entry: 32-bit, paging off) with
# `-append "... nokaslr ..."` on 4 vCPUs; symbol file: the vmlinux of the
# linux-image-…-dbg package. tests/linux_gdb.rs runs it and checks each ==section==; by hand:
#
#   kvmgdb -kernel vmlinux -append "console=ttyS0 nokaslr" -m 256M -smp 4 --pvm-linux -s -S &
#   gdb -ex 'target remote :1234' -x gdb-scripts/linux-debug.gdb /usr/lib/debug/boot/vmlinux-…
#
# The `continue` in ==ctrl-c== runs until Ctrl-C (the test sends gdb SIGINT, as a
# terminal does, once Linux has brought up all its CPUs). ==lx== uses the kernel's own gdb scripts: `vmlinux-gdb.py` and its
# `scripts/gdb/` in gdb's working directory, as in a kernel build tree (the test links them
# there; tests/common/debian.rs says where they come from).

echo ==entry==\n
# Paging is off: start_kernel's address does not translate yet, a debug register holds it.
info registers cr0
hbreak start_kernel
continue

echo ==start_kernel==\n
bt
info registers cr3
x/5i $pc
delete

# A software breakpoint in kernel text, long after paging is on (rest_init runs at the end
# of start_kernel, with the timer interrupt live).
break rest_init
continue
echo ==rest_init==\n
bt
info registers eflags
delete

# Single steps with interrupts enabled and the PIT firing: each step must stay in
# rest_init or what it calls, never in an interrupt handler.
echo ==stepi==\n
set $i = 0
while $i < 60
  stepi
  x/i $pc
  set $i = $i + 1
end

echo ==watch==\n
watch jiffies
continue
delete

echo ==mem==\n
monitor info mem

echo ==ctrl-c==\n
continue
echo ==stopped==\n
bt
x/5i $pc
info registers rip cr3
# Every vCPU is a thread; thread N is CPU N-1, as on QEMU (the lx scripts rely on it).
echo ==threads==\n
info threads
thread 3
info registers gs_base
print/x __per_cpu_offset[2]
thread 1

echo ==lx==\n
source vmlinux-gdb.py
echo ==lx-dmesg==\n
lx-dmesg
echo ==lx-ps==\n
lx-ps
echo ==lx-current==\n
# The current task of the selected CPU: the scripts find the CPU through
# `monitor info version` (a QEMU-like stub numbers its threads by CPU).
print $lx_current().comm
echo ==lx-cpus==\n
lx-cpus
# What each application processor wrote about itself when it came up (identify_cpu), and
# the CPU of the task current on thread 3 (which the scripts take for CPU 2).
echo ==lx-per-cpu==\n
printf "apicid=%u core=%u max_cores=%u\n", $lx_per_cpu("cpu_info", 3).apicid, $lx_per_cpu("cpu_info", 3).cpu_core_id, $lx_per_cpu("cpu_info", 3).x86_max_cores
thread 3
printf "thread 3 current task cpu=%u\n", $lx_current().thread_info.cpu
thread 1
echo ==lx-symbols==\n
lx-symbols
echo ==end==\n
# The kernel boots on without gdb.
detach
