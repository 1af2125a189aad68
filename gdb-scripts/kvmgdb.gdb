# kvmgdb.gdb: gdb commands for debugging a kernel under kvmgdb, built on kvmgdb's
# `monitor` commands ('monitor help' lists those).
#
# Load it after connecting:
#     gdb kernel.elf -ex 'target remote :1234' -x gdb-scripts/kvmgdb.gdb
# or put 'source /path/to/gdb-scripts/kvmgdb.gdb' in ~/.gdbinit.
# 'help user-defined' lists the commands below; 'help pt' explains one.
#
# Addresses given to pt and tlb are gdb expressions (pt &my_var, pt $rsp, pt 0xffff...),
# evaluated by gdb before kvmgdb sees them. MSR numbers and values are passed as written,
# so MSR names work too (msr efer, msr lstar 0xffffffff81000000).

define sysregs
  monitor info registers
end
document sysregs
Show every register of the selected thread's vCPU on one screen, like QEMU's
'info registers' of its current CPU ('monitor info registers -a': of each vCPU): GPRs,
RIP, RFLAGS decoded, segment registers with base/limit/attributes, GDTR, IDTR, LDTR,
TR, CR0/2/3/4/8, EFER, DR0-DR7, FS/GS/KERNEL_GS base, APIC base, pending events.
Usage: sysregs
end

define cpus
  monitor info cpus
end
document cpus
List the vCPUs, like QEMU's 'info cpus': pc, activity (running, halted,
wait-for-SIPI), mode, why each last stopped; * marks the selected thread's.
Usage: cpus
end

define pagetables
  monitor info mem
end
document pagetables
Show the guest's current virtual memory map (vCPU 0's page tables) as ranges of equal
access rights: "start-end size perms", perms being u(ser) r w x.
Usage: pagetables
end

define tlb
  if $argc == 0
    monitor info tlb
  else
    eval "monitor info tlb 0x%lx", (unsigned long) ($arg0)
  end
end
document tlb
List the guest's mappings page by page, "va: pa flags size", from address ADDR (or
from 0). Long listings stop after 256 pages and say where to go on.
Usage: tlb [ADDR]
end

define pt
  if $argc != 1
    echo usage: pt ADDR\n
  else
    eval "monitor translate 0x%lx", (unsigned long) ($arg0)
  end
end
document pt
Translate a virtual address to guest-physical through the guest's page tables, showing
every level's entry (table, index, entry address, value, flags), or why the address is
not mapped.
Usage: pt ADDR        e.g. pt &counter, pt $pc, pt 0xffffffffc0000000
end

define gdt
  monitor info gdt
end
document gdt
Decode the guest's GDT: each descriptor's base, limit, type, DPL, present, L/D/G bits.
Usage: gdt
end

define idt
  monitor info idt
end
document idt
Decode the guest's IDT: each present gate's selector:offset, type, DPL and IST.
Usage: idt
end

define msr
  if $argc == 1
    monitor msr $arg0
  else
    if $argc == 2
      monitor msr $arg0 $arg1
    else
      echo usage: msr N [VALUE]\n
    end
  end
end
document msr
Read MSR N, or write VALUE to it. N is a number (0xc0000080) or a name (efer, lstar,
kernel_gs_base, ...); both are passed to kvmgdb as written.
Usage: msr N [VALUE]
end

define phys
  monitor phys on
  maintenance flush dcache
end
document phys
From now on gdb's addresses are guest-physical: x/16x 0xb8000 reads physical memory.
'virt' goes back. Symbols keep their (virtual) addresses, so use this for raw memory.
Usage: phys
end

define virt
  monitor phys off
  maintenance flush dcache
end
document virt
Back to virtual addresses, translated through the vCPU's page tables (the default).
Usage: virt
end

define sstep-irq
  if $argc == 1
    monitor sstep irq $arg0
  else
    monitor sstep irq
  end
end
document sstep-irq
Whether interrupts stay masked while single-stepping: on (the default, like QEMU) or
off. Without an argument, show the setting.
Usage: sstep-irq [on|off]
end

define kvm-reset
  monitor reset
  maintenance flush register-cache
  frame
end
document kvm-reset
Reset the machine to its boot entry state (RAM reloaded, registers as at entry),
keeping breakpoints, and make gdb reread the registers.
Usage: kvm-reset
end

define kvm-caps
  monitor info kvm
end
document kvm-caps
Show the host KVM's capabilities and kvmgdb's debug settings.
Usage: kvm-caps
end

define coredump
  if $argc != 1
    echo usage: coredump FILE\n
  else
    monitor dump $arg0
  end
end
document coredump
Write an ELF core file of guest memory (as currently mapped) and the vCPU registers.
A relative FILE is relative to kvmgdb's working directory. Open it later with
    gdb kernel.elf FILE
Usage: coredump FILE
end
