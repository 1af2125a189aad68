# The system registers QEMU's gdb stub shows, by QEMU's names, on the demo guest at its
# entry point: CR0 0x80010033, CR3 0x9000 (the PML4), CR4 0x620, EFER 0x500 (README).
info registers cr0 cr2 cr3 cr4 cr8 efer fs_base gs_base k_gs_base
# Each write goes back through KVM (sregs, or the IA32_KERNEL_GS_BASE MSR); a step makes the
# vCPU run with them, so reading them again shows what KVM kept.
set $cr8 = 5
set $fs_base = 0x1234
set $gs_base = 0x4321
set $k_gs_base = 0x5678
stepi
echo --- after stepi\n
info registers cr8 fs_base gs_base k_gs_base
