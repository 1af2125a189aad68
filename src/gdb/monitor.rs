//! `monitor` commands (qRcmd): the dispatcher and its help text. The decoding lives in
//! [`crate::inspect`]; this file fetches machine state from the [`Vm`] and prints.
//!
//! Every command answers with console output and `Ok`: an unknown command, a bad argument
//! or a failed ioctl is a one-line `error: …` in gdb, never a dropped connection (a target
//! error from a monitor command would end gdbstub's session).

use super::regs::{GuestArch, fx_bytes};
use super::target::KvmTarget;
use crate::inspect::coredump::{self, CoreClass, CoreCpu, CoreError};
use crate::inspect::descriptors::{self, TableMode};
use crate::inspect::mappings::{self, DEFAULT_ENTRY_BUDGET, Leaf, RangeMerger, WalkSummary};
use crate::inspect::registers::{self, RegisterView};
use crate::paging::{self, GuestVirtAddr, LevelEntry, PagingMode, PagingRegs};
use crate::vmm::stop::VcpuStop;
use crate::vmm::{Vm, VmError};
use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};
use std::ops::ControlFlow;
use std::path::PathBuf;
use vm_memory::{GuestAddress, GuestMemoryBackend};

const HELP: &str = "\
kvmgdb monitor commands (numbers: hex with 0x, or decimal):
  help                 this text
  info registers [CPU] every register of each vCPU (or of CPU), one screen
                       each: GPRs, RIP, RFLAGS decoded, segments with
                       base/limit/attributes, GDTR/IDTR/LDTR/TR, CR0/2/3/4/8,
                       EFER, DR0-DR7, FS/GS/KERNEL_GS base, APIC base, events
  info cpus            each vCPU: mode, state, last stop, RIP
  info mem             the guest's mappings merged into ranges of equal
                       rights: va-range size perms (u=user r w x)
  info tlb [ADDR]      the mappings page by page from ADDR: va: pa flags size
                       (X=no-execute G=global P=large D=dirty A=accessed
                       C=cache-disable T=write-through U=user W=writable)
  translate ADDR       virtual to physical with each paging level's entry,
                       or why the address is not mapped
  info gdt             the GDT's descriptors: base, limit, type, DPL, P, L/D/G
  info idt             the IDT's present gates: selector:offset, type, DPL
  msr N                read MSR N: a number or a name (EFER, LSTAR, ...)
  msr N VALUE          write VALUE to MSR N
  info kvm             the host KVM's capabilities and the debug settings
  sstep irq [on|off]   on (default): interrupts stay masked during single
                       steps, like QEMU's qqemu.sstep=0x7; off: like 0x5
  phys [on|off]        on: gdb's addresses are guest-physical; off: virtual
  reset                back to the boot entry state, RAM reloaded;
                       breakpoints are kept
  dump FILE            write an ELF core of guest memory and registers
                       (open it with: gdb KERNEL FILE)
Page-table and descriptor commands use vCPU 0's registers.";

/// The vCPU whose page tables and descriptor tables the monitor shows.
const MONITOR_VCPU: usize = 0;
/// How many lines `info tlb` prints before it only counts.
const TLB_LINES: usize = 256;
/// How many ranges `info mem` prints before it only counts.
const MEM_LINES: usize = 512;
/// Console output is flushed to gdb (one O packet) every this many lines.
const LINES_PER_PACKET: usize = 32;
/// The largest descriptor table: a 16-bit limit (SDM 2.4.1, 2.4.3).
const MAX_TABLE_BYTES: usize = 1 << 16;
/// Linux signal numbers for the core file's pr_cursig (asm-generic/signal.h).
const SIGINT: u16 = 2;
const SIGILL: u16 = 4;
const SIGTRAP: u16 = 5;
const SIGABRT: u16 = 6;
const SIGSEGV: u16 = 11;

/// Why a monitor command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Not a command.
    #[error("unknown monitor command {0:?}; 'monitor help' lists them")]
    Unknown(String),
    /// Wrong arguments.
    #[error("usage: monitor {0}")]
    Usage(&'static str),
    /// A number that does not parse.
    #[error("{0:?} is not a number: write hex as 0x…, or decimal")]
    BadNumber(String),
    /// An MSR that is neither a number nor a known name.
    #[error(
        "{0:?} is not an MSR: give a number (0x… or decimal) or a name such as EFER, LSTAR, KERNEL_GS_BASE"
    )]
    BadMsr(String),
    /// A number too wide for its field.
    #[error("{0:#x} is too large for {1}")]
    TooLarge(u64, &'static str),
    /// KVM_GET_MSRS returned nothing for the MSR.
    #[error("KVM cannot read MSR {0:#x}: it does not exist on this virtual CPU")]
    MsrUnreadable(u32),
    /// The vCPU does not exist.
    #[error("no CPU {0}: this machine has {1} vCPU(s)")]
    NoCpu(usize, usize),
    /// A machine operation failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The core file could not be created.
    #[error("cannot create {0}")]
    Create(PathBuf, #[source] std::io::Error),
    /// The core file could not be written.
    #[error("cannot write the core file {0}")]
    Dump(PathBuf, #[source] CoreError),
}

type CmdResult = Result<(), MonitorError>;

/// Collects output lines and hands them to gdb in packets of a few lines each.
struct Console<'a, 'b> {
    out: &'a mut ConsoleOutput<'b>,
    pending: usize,
}

impl Console<'_, '_> {
    fn line(&mut self, text: impl AsRef<str>) {
        outputln!(self.out, "{}", text.as_ref());
        self.pending += 1;
        if self.pending >= LINES_PER_PACKET {
            self.out.flush();
            self.pending = 0;
        }
    }

    fn lines<S: AsRef<str>>(&mut self, lines: impl IntoIterator<Item = S>) {
        for l in lines {
            self.line(l);
        }
    }
}

/// Parses a number: `0x` hex, or decimal.
pub fn parse_num(s: &str) -> Result<u64, MonitorError> {
    let bad = || MonitorError::BadNumber(s.to_string());
    let t = s.replace('_', "");
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| bad()),
        None => t.parse().map_err(|_| bad()),
    }
}

fn parse_on_off(s: &str, usage: &'static str) -> Result<bool, MonitorError> {
    match s {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        _ => Err(MonitorError::Usage(usage)),
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// An MSR by number or name.
fn parse_msr(s: &str) -> Result<u32, MonitorError> {
    if let Some(i) = registers::msr_by_name(s) {
        return Ok(i);
    }
    let n = parse_num(s).map_err(|_| MonitorError::BadMsr(s.to_string()))?;
    u32::try_from(n).map_err(|_| MonitorError::TooLarge(n, "an MSR number"))
}

/// The signal a core file reports for a vCPU's last stop; the same choices as the live
/// stop replies (`stop.rs`), in Linux numbering.
fn core_signal(stop: Option<VcpuStop>) -> u16 {
    match stop {
        Some(
            VcpuStop::SwBreakpoint(_)
            | VcpuStop::HwBreakpoint { .. }
            | VcpuStop::Step
            | VcpuStop::GuestBreakpoint,
        ) => SIGTRAP,
        Some(VcpuStop::Kicked) => SIGINT,
        Some(VcpuStop::Shutdown) => SIGSEGV,
        Some(VcpuStop::InternalError { .. } | VcpuStop::UnhandledExit(_)) => SIGILL,
        Some(VcpuStop::FailEntry(_) | VcpuStop::RunError(_)) => SIGABRT,
        _ => 0,
    }
}

/// The address width to print for a paging mode: 32-bit modes have 32-bit linear addresses.
fn hex_width(mode: PagingMode) -> usize {
    match mode {
        PagingMode::Disabled | PagingMode::Bits32 | PagingMode::Pae => 8,
        PagingMode::Level4 | PagingMode::Level5 => 16,
    }
}

/// Names of the set bits of a paging-structure entry (SDM Tables 4-14 to 4-20).
fn entry_flags(entry: u64, mode: PagingMode, is_leaf: bool, large: bool) -> String {
    let mut f = Vec::new();
    for (bit, name) in [
        (0, "P"),
        (1, "W"),
        (2, "U"),
        (3, "PWT"),
        (4, "PCD"),
        (5, "A"),
    ] {
        if entry & (1 << bit) != 0 {
            f.push(name);
        }
    }
    if is_leaf && entry & (1 << 6) != 0 {
        f.push("D");
    }
    if large {
        f.push("PS");
    }
    if is_leaf && entry & (1 << 8) != 0 {
        f.push("G");
    }
    if mode != PagingMode::Bits32 && entry & (1 << 63) != 0 {
        f.push("XD");
    }
    f.join(" ")
}

impl<A: GuestArch> KvmTarget<'_, A> {
    fn paging(&self) -> Result<PagingRegs, MonitorError> {
        // state() fails while the vCPU runs; paging_regs() alone would be stale then.
        self.vm.state(MONITOR_VCPU)?;
        Ok(self.vm.paging_regs(MONITOR_VCPU)?)
    }

    fn cpu_ids(&self, arg: Option<&str>) -> Result<Vec<usize>, MonitorError> {
        let n = self.vm.vcpu_count();
        match arg {
            None => Ok((0..n).collect()),
            Some(a) => {
                let id = parse_num(a)? as usize;
                if id >= n {
                    return Err(MonitorError::NoCpu(id, n));
                }
                Ok(vec![id])
            }
        }
    }

    fn info_registers(&mut self, c: &mut Console<'_, '_>, arg: Option<&str>) -> CmdResult {
        for id in self.cpu_ids(arg)? {
            let s = self.vm.state(id)?;
            // Three ioctls on the vCPU's thread, ~7 µs each: fine for a monitor command.
            // Each is optional: a KVM that lacks one still shows the rest.
            let debug = self.vm.debug_regs(id).ok();
            let msrs = self
                .vm
                .read_msrs(id, &[registers::MSR_KERNEL_GS_BASE])
                .unwrap_or_default();
            let events = self.vm.vcpu_events(id).ok();
            c.lines(registers::format_registers(&RegisterView {
                id,
                regs: &s.regs,
                sregs: &s.sregs,
                debug: debug.as_ref(),
                msrs: &msrs,
                events: events.as_ref(),
            }));
        }
        Ok(())
    }

    fn info_cpus(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        for id in 0..self.vm.vcpu_count() {
            let what = match (self.vm.frozen(id), self.vm.last_stop(id)) {
                (Some(stop), _) => format!("frozen: {}", stop.describe()),
                (None, Some(stop)) => format!("stopped: {}", stop.describe()),
                (None, None) => "stopped at the boot entry point".to_string(),
            };
            match self.vm.state(id) {
                Ok(s) => c.line(format!(
                    "* CPU #{id}: rip={:#018x} {}; {what}",
                    s.regs.rip,
                    registers::cpu_mode(&s.sregs, s.regs.rflags)
                )),
                Err(e) => c.line(format!("* CPU #{id}: {e}")),
            }
        }
        Ok(())
    }

    fn walk_notes(c: &mut Console<'_, '_>, s: &WalkSummary) {
        if s.reserved > 0 {
            c.line(format!(
                "({} present entries set reserved bits and map nothing: the guest would fault)",
                s.reserved
            ));
        }
        if s.tables_outside_ram > 0 {
            c.line(format!(
                "({} page tables lie outside guest RAM and were skipped)",
                s.tables_outside_ram
            ));
        }
        if s.budget_exhausted {
            c.line(format!(
                "(stopped after reading {} entries: the tables map more than kvmgdb lists)",
                s.entries_read
            ));
        }
    }

    fn header(c: &mut Console<'_, '_>, regs: &PagingRegs) -> bool {
        if regs.mode() == PagingMode::Disabled {
            c.line("paging is disabled (CR0.PG=0): virtual addresses are physical");
            return false;
        }
        c.line(format!(
            "{} paging, CR3={:#x} (vCPU {MONITOR_VCPU})",
            regs.mode(),
            regs.cr3
        ));
        true
    }

    fn info_mem(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        let regs = self.paging()?;
        if !Self::header(c, &regs) {
            for (start, len) in mappings::ram_regions(self.vm.memory()) {
                c.line(format!(
                    "{start:016x}-{:016x} {len:016x} urwx (guest RAM)",
                    start + len
                ));
            }
            return Ok(());
        }
        let w = hex_width(regs.mode());
        let mut merger = RangeMerger::default();
        let (mut shown, mut more) = (0usize, 0usize);
        let mut print = |c: &mut Console<'_, '_>, r: mappings::Range| {
            if shown < MEM_LINES {
                c.line(format!(
                    "{:0w$x}-{:0w$x} {:0w$x} {}",
                    r.start,
                    r.end,
                    r.end - u128::from(r.start),
                    r.perms.letters()
                ));
                shown += 1;
            } else {
                more += 1;
            }
        };
        let summary =
            mappings::for_each_leaf(self.vm.memory(), &regs, 0, DEFAULT_ENTRY_BUDGET, |leaf| {
                if let Some(r) = merger.push(leaf) {
                    print(c, r);
                }
                ControlFlow::Continue(())
            });
        if let Some(r) = merger.finish() {
            print(c, r);
        }
        if shown == 0 {
            c.line("nothing is mapped");
        }
        if more > 0 {
            c.line(format!("… ({more} more ranges)"));
        }
        Self::walk_notes(c, &summary);
        Ok(())
    }

    fn info_tlb(&mut self, c: &mut Console<'_, '_>, from: Option<&str>) -> CmdResult {
        let from = from.map(parse_num).transpose()?.unwrap_or(0);
        let regs = self.paging()?;
        if !Self::header(c, &regs) {
            return Ok(());
        }
        let w = hex_width(regs.mode());
        let (mut shown, mut more) = (0usize, 0u64);
        let mut next: Option<u64> = None;
        let summary = mappings::for_each_leaf(
            self.vm.memory(),
            &regs,
            from,
            DEFAULT_ENTRY_BUDGET,
            |l: &Leaf| {
                // A large page that starts below `from` still covers it: list it.
                if shown < TLB_LINES {
                    c.line(format!(
                        "{:0w$x}: {:0w$x} {} {}",
                        l.va,
                        l.pa,
                        l.flag_letters(),
                        mappings::size_name(l.size.into())
                    ));
                    shown += 1;
                } else {
                    next.get_or_insert(l.va);
                    more += 1;
                }
                ControlFlow::Continue(())
            },
        );
        if shown == 0 {
            c.line(format!("nothing is mapped at or above {from:#x}"));
        }
        if let Some(next) = next {
            c.line(format!(
                "… ({more} more pages; 'monitor info tlb {next:#x}' lists from there)"
            ));
        }
        Self::walk_notes(c, &summary);
        Ok(())
    }

    fn translate(&mut self, c: &mut Console<'_, '_>, addr: &str) -> CmdResult {
        let va = parse_num(addr)?;
        let regs = self.paging()?;
        let mode = regs.mode();
        let mem = self.vm.memory();
        let (levels, result) = paging::translate_explained(mem, &regs, GuestVirtAddr(va));
        if mode == PagingMode::Disabled {
            let gpa = result.map(|t| t.gpa.0).unwrap_or(va);
            c.line(format!(
                "paging is disabled (CR0.PG=0): {va:#x} is guest-physical {gpa:#x}{}",
                if mem.address_in_range(GuestAddress(gpa)) {
                    ""
                } else {
                    " (not guest RAM)"
                }
            ));
            return Ok(());
        }
        c.line(format!(
            "{va:#x}: {mode} paging, CR3={:#x} (vCPU {MONITOR_VCPU})",
            regs.cr3
        ));
        let w = if mode == PagingMode::Bits32 { 8 } else { 16 };
        let n = levels.len();
        for (i, l) in levels.iter().enumerate() {
            let LevelEntry {
                level,
                index,
                entry_gpa,
                entry,
                ..
            } = *l;
            let is_last = i + 1 == n;
            let large = is_last && result.as_ref().is_ok_and(|t| t.page_size > 4096);
            let is_leaf = is_last && result.is_ok();
            c.line(format!(
                "  {:<10} at {:#x} = {entry:#0width$x} {}",
                format!("{level}[{index}]"),
                entry_gpa.0,
                entry_flags(entry, mode, is_leaf, large),
                width = w + 2
            ));
        }
        match result {
            Ok(t) => {
                let ram = if mem.address_in_range(t.gpa) {
                    ""
                } else {
                    ", not guest RAM"
                };
                c.line(format!(
                    "  => guest-physical {:#x} ({} page at {:#x}{ram}; {}, {}, {})",
                    t.gpa.0,
                    mappings::size_name(t.page_size.into()),
                    t.gpa.0 & !(t.page_size - 1),
                    if t.user { "user" } else { "supervisor" },
                    if t.writable { "writable" } else { "read-only" },
                    if t.executable {
                        "executable"
                    } else {
                        "no-execute"
                    },
                ));
            }
            Err(e) => c.line(format!("  => not mapped: {e}")),
        }
        Ok(())
    }

    /// The bytes of a descriptor table at linear address `base` (as far as they are mapped).
    fn read_table(&self, regs: &PagingRegs, base: u64, limit: u16) -> Vec<u8> {
        let mut buf = vec![0u8; (usize::from(limit) + 1).min(MAX_TABLE_BYTES)];
        let n = paging::read_virt(self.vm.memory(), regs, GuestVirtAddr(base), &mut buf);
        buf.truncate(n);
        buf
    }

    fn info_gdt(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        self.info_table(c, |s| s.gdt, descriptors::format_gdt)
    }

    fn info_idt(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        self.info_table(c, |s| s.idt, descriptors::format_idt)
    }

    /// Decodes the descriptor table `which` picks out of vCPU 0's system registers.
    fn info_table<F, L>(
        &mut self,
        c: &mut Console<'_, '_>,
        which: impl Fn(&kvm_bindings::kvm_sregs) -> kvm_bindings::kvm_dtable,
        format: F,
    ) -> CmdResult
    where
        F: Fn(&[u8], u64, u16, TableMode) -> L,
        L: IntoIterator<Item = String>,
    {
        let s = self.vm.state(MONITOR_VCPU)?;
        let regs = self.vm.paging_regs(MONITOR_VCPU)?;
        let mode = TableMode::from_regs(s.sregs.cr0, s.sregs.efer);
        let dt = which(&s.sregs);
        let table = self.read_table(&regs, dt.base, dt.limit);
        c.lines(format(&table, dt.base, dt.limit, mode));
        Ok(())
    }

    fn msr(&mut self, c: &mut Console<'_, '_>, index: &str, value: Option<&str>) -> CmdResult {
        let index = parse_msr(index)?;
        let value = value.map(parse_num).transpose()?;
        let name = registers::msr_name(index)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let read = |vm: &mut Vm| -> Result<u64, MonitorError> {
            vm.read_msrs(MONITOR_VCPU, &[index])?
                .first()
                .map(|m| m.1)
                .ok_or(MonitorError::MsrUnreadable(index))
        };
        match value {
            None => {
                let v = read(self.vm)?;
                c.line(format!("MSR {index:#x}{name} = {v:#018x}"));
            }
            Some(v) => {
                let old = read(self.vm).ok();
                self.vm.write_msr(MONITOR_VCPU, index, v)?;
                let new = read(self.vm)?;
                let was = old.map(|o| format!(" (was {o:#x})")).unwrap_or_default();
                c.line(format!("MSR {index:#x}{name} = {new:#018x}{was}"));
            }
        }
        Ok(())
    }

    fn info_kvm(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        let caps = self.vm.caps();
        c.lines(caps.table().lines());
        let block_irq = caps.supports_debug_flag(kvm_bindings::KVM_GUESTDBG_BLOCKIRQ);
        c.line(format!(
            "{:<18} {}{}",
            "sstep irq",
            on_off(self.vm.step_masks_irq()),
            if block_irq {
                ""
            } else {
                " (no effect: this KVM lacks KVM_GUESTDBG_BLOCKIRQ)"
            }
        ));
        c.line(format!(
            "{:<18} {}",
            "phys",
            if self.vm.phys_mode() {
                "on: addresses are guest-physical"
            } else {
                "off: addresses are virtual"
            }
        ));
        Ok(())
    }

    fn sstep(&mut self, c: &mut Console<'_, '_>, arg: Option<&str>) -> CmdResult {
        const USAGE: &str = "sstep irq [on|off]";
        if let Some(a) = arg {
            self.vm.set_step_masks_irq(parse_on_off(a, USAGE)?);
        }
        let on = self.vm.step_masks_irq();
        c.line(if on {
            "sstep irq on: interrupts stay masked while single-stepping"
        } else {
            "sstep irq off: interrupts may be delivered during a single step"
        });
        if !self
            .vm
            .caps()
            .supports_debug_flag(kvm_bindings::KVM_GUESTDBG_BLOCKIRQ)
        {
            c.line("(this KVM lacks KVM_GUESTDBG_BLOCKIRQ, so steps never mask interrupts)");
        }
        Ok(())
    }

    fn phys(&mut self, c: &mut Console<'_, '_>, arg: Option<&str>) -> CmdResult {
        if let Some(a) = arg {
            self.vm.set_phys_mode(parse_on_off(a, "phys [on|off]")?);
        }
        c.line(if self.vm.phys_mode() {
            "phys on: gdb's addresses are guest-physical"
        } else {
            "phys off: gdb's addresses are virtual, translated by vCPU page tables"
        });
        Ok(())
    }

    fn reset(&mut self, c: &mut Console<'_, '_>) -> CmdResult {
        self.vm.reset()?;
        self.forget_stop_state();
        let rip = self.vm.state(MONITOR_VCPU)?.regs.rip;
        c.line(format!(
            "machine reset to the boot entry state (RIP={rip:#x}, RAM reloaded); breakpoints kept"
        ));
        c.line("gdb still shows the old registers until 'maintenance flush register-cache'");
        Ok(())
    }

    fn dump(&mut self, c: &mut Console<'_, '_>, file: &str) -> CmdResult {
        let path = PathBuf::from(file);
        let mut cpus = Vec::new();
        for id in 0..self.vm.vcpu_count() {
            let s = self.vm.state(id)?;
            let fx = self.vm.xsave(id).ok().map(|x| fx_bytes(&x));
            cpus.push(CoreCpu {
                regs: s.regs,
                sregs: s.sregs,
                fx,
                signal: core_signal(self.vm.frozen(id).or(self.vm.last_stop(id))),
            });
        }
        let regs = self.vm.paging_regs(MONITOR_VCPU)?;
        let mem = self.vm.memory();
        let ram = mappings::ram_regions(mem);
        let class = if self.vm.boot_info().image_is_32bit {
            CoreClass::Elf32
        } else {
            CoreClass::Elf64
        };
        let (mut segments, how, summary) =
            if self.vm.phys_mode() || regs.mode() == PagingMode::Disabled {
                let how = if self.vm.phys_mode() {
                    "phys mode: RAM at its physical addresses".to_string()
                } else {
                    "paging off: RAM identity mapped".to_string()
                };
                (mappings::identity_ram(&ram), how, WalkSummary::default())
            } else {
                let mut leaves = Vec::new();
                let summary = mappings::for_each_leaf(mem, &regs, 0, DEFAULT_ENTRY_BUDGET, |l| {
                    leaves.push(*l);
                    ControlFlow::Continue(())
                });
                let segs = mappings::clip_to_ram(&mappings::merge_segments(leaves), &ram);
                (segs, format!("{} paging mappings", regs.mode()), summary)
            };
        let mut dropped = 0;
        if class == CoreClass::Elf32 {
            // An ELF32 core cannot name virtual addresses above 4 GiB.
            let before = segments.len();
            segments.retain(|s| s.va.checked_add(s.len).is_some_and(|e| e <= 1 << 32));
            dropped = before - segments.len();
        }
        let err = |e| MonitorError::Dump(path.clone(), e);
        let file =
            std::fs::File::create(&path).map_err(|e| MonitorError::Create(path.clone(), e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let size = coredump::write_core(&mut out, class, &cpus, &segments, mem).map_err(err)?;
        let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        c.line(format!(
            "wrote {}: {size} bytes, ELF{} core, {} PT_LOAD segments ({how}), {} vCPU(s)",
            shown.display(),
            if class == CoreClass::Elf32 { 32 } else { 64 },
            segments.len(),
            cpus.len()
        ));
        if dropped > 0 {
            c.line(format!(
                "({dropped} mappings above 4 GiB do not fit an ELF32 core and were left out)"
            ));
        }
        Self::walk_notes(c, &summary);
        Ok(())
    }

    fn dispatch(&mut self, c: &mut Console<'_, '_>, cmd: &str) -> CmdResult {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            [] | ["help"] => c.lines(HELP.lines()),
            ["info", "registers" | "regs"] => self.info_registers(c, None)?,
            ["info", "registers" | "regs", cpu] => self.info_registers(c, Some(cpu))?,
            ["info", "registers" | "regs", ..] => {
                return Err(MonitorError::Usage("info registers [CPU]"));
            }
            ["info", "cpus"] => self.info_cpus(c)?,
            ["info", "mem"] => self.info_mem(c)?,
            ["info", "tlb"] => self.info_tlb(c, None)?,
            ["info", "tlb", from] => self.info_tlb(c, Some(from))?,
            ["info", "tlb", ..] => return Err(MonitorError::Usage("info tlb [ADDR]")),
            ["info", "gdt"] => self.info_gdt(c)?,
            ["info", "idt"] => self.info_idt(c)?,
            ["info", "kvm"] => self.info_kvm(c)?,
            ["translate", addr] => self.translate(c, addr)?,
            ["translate", ..] => return Err(MonitorError::Usage("translate ADDR")),
            ["msr", index] => self.msr(c, index, None)?,
            ["msr", index, value] => self.msr(c, index, Some(value))?,
            ["msr", ..] => return Err(MonitorError::Usage("msr N [VALUE]")),
            ["sstep", "irq"] => self.sstep(c, None)?,
            ["sstep", "irq", v] => self.sstep(c, Some(v))?,
            ["sstep", ..] => return Err(MonitorError::Usage("sstep irq [on|off]")),
            ["phys"] => self.phys(c, None)?,
            ["phys", v] => self.phys(c, Some(v))?,
            ["phys", ..] => return Err(MonitorError::Usage("phys [on|off]")),
            ["reset"] => self.reset(c)?,
            ["reset", ..] => return Err(MonitorError::Usage("reset")),
            ["dump", _, ..] => {
                // The file name is the rest of the line, so it may contain spaces.
                let file = cmd.trim_start()["dump".len()..].trim();
                self.dump(c, file)?;
            }
            ["dump"] => return Err(MonitorError::Usage("dump FILE")),
            _ => return Err(MonitorError::Unknown(cmd.trim().to_string())),
        }
        Ok(())
    }
}

/// One line for an error: its message and its causes.
fn error_line(e: &MonitorError) -> String {
    let mut line = format!("error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        line.push_str(&format!(": {s}"));
        src = s.source();
    }
    line
}

impl<A: GuestArch> MonitorCmd for KvmTarget<'_, A> {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), VmError> {
        let cmd = String::from_utf8_lossy(cmd);
        let mut c = Console {
            out: &mut out,
            pending: 0,
        };
        if let Err(e) = self.dispatch(&mut c, &cmd) {
            log::debug!("monitor {cmd:?}: {e}");
            c.line(error_line(&e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_num("0x1b").ok(), Some(0x1b));
        assert_eq!(parse_num("27").ok(), Some(27));
        assert_eq!(
            parse_num("0xffff_ffff_c000_0000").ok(),
            Some(0xffff_ffff_c000_0000)
        );
        assert!(matches!(parse_num("zzz"), Err(MonitorError::BadNumber(_))));
        assert!(matches!(parse_num("ffff"), Err(MonitorError::BadNumber(_))));
        assert_eq!(parse_msr("efer").ok(), Some(0xc000_0080));
        assert_eq!(parse_msr("0xc0000102").ok(), Some(0xc000_0102));
        assert!(matches!(
            parse_msr("0x1_0000_0000"),
            Err(MonitorError::TooLarge(..))
        ));
        let e = parse_msr("zzz").expect_err("not an MSR");
        assert!(error_line(&e).starts_with("error: \"zzz\" is not an MSR: give a number"));
    }

    #[test]
    fn help_mentions_every_command() {
        for cmd in [
            "info registers",
            "info cpus",
            "info mem",
            "info tlb",
            "translate ADDR",
            "info gdt",
            "info idt",
            "msr N VALUE",
            "info kvm",
            "sstep irq",
            "phys",
            "reset",
            "dump FILE",
        ] {
            assert!(HELP.contains(cmd), "{cmd}");
        }
        assert!(
            HELP.lines().all(|l| l.chars().count() <= 80),
            "help fits an 80-column terminal"
        );
    }
}
