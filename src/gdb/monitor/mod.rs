//! `monitor` commands (qRcmd): the dispatcher, its help text and the console; one file per
//! command family beside it. The decoding lives in [`crate::inspect`]; the commands fetch
//! machine state from the [`crate::vmm::Vm`] and print. Commands about one vCPU's tables
//! use the thread gdb has selected ([`crate::gdb::threads`]).
//!
//! Every command answers with console output and `Ok`: an unknown command, a bad argument
//! or a failed ioctl is a one-line `error: …` in gdb, never a dropped connection (a target
//! error from a monitor command would end gdbstub's session).

mod cpus;
mod dump;
mod msr;
mod paging;
mod reset;
mod settings;
mod tables;
mod version;

use crate::gdb::regs::layout::Layout;
use crate::gdb::target::KvmTarget;
use crate::inspect::coredump::CoreError;
use crate::vmm::VmError;
use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};
use std::path::PathBuf;

const HELP: &str = "\
kvmgdb monitor commands (numbers: hex with 0x, or decimal):
  help                 this text
  info registers [-a|CPU]
                       every register of the selected thread's vCPU (-a:
                       of each vCPU; CPU: of that one), one screen each:
                       GPRs, RIP, RFLAGS decoded, segments with
                       base/limit/attributes, GDTR/IDTR/LDTR/TR, CR0/2/3/4/8,
                       EFER, DR0-DR7, FS/GS/KERNEL_GS base, APIC base, events
  info cpus            each vCPU: pc, activity (running, halted,
                       wait-for-SIPI), mode, last stop; * marks the
                       selected thread's (thread N is CPU N-1)
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
  info version         kvmgdb's version (QEMU's command; Linux's gdb
                       scripts probe for a QEMU-like stub with it)
  sstep irq [on|off]   on (default): interrupts stay masked during single
                       steps, like QEMU's qqemu.sstep=0x7; off: like 0x5
  phys [on|off]        on: gdb's addresses are guest-physical; off: virtual
  reset                back to the boot entry state, RAM reloaded;
                       breakpoints are kept
  dump FILE            write an ELF core of guest memory, as the selected
                       vCPU maps it, and of every vCPU's registers, one
                       thread each (open it with: gdb KERNEL FILE)
Page-table, descriptor and msr commands use the selected thread's vCPU
(gdb's 'thread N' selects CPU N-1).";

/// Console output is flushed to gdb (one O packet) every this many lines.
const LINES_PER_PACKET: usize = 32;

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

impl<A: Layout> KvmTarget<'_, A> {
    fn dispatch(&mut self, c: &mut Console<'_, '_>, cmd: &str) -> CmdResult {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            [] | ["help"] => c.lines(HELP.lines()),
            ["info", "registers" | "regs"] => self.info_registers(c, None)?,
            ["info", "registers" | "regs", cpu] => self.info_registers(c, Some(cpu))?,
            ["info", "registers" | "regs", ..] => {
                return Err(MonitorError::Usage("info registers [-a|CPU]"));
            }
            ["info", "cpus"] => self.info_cpus(c)?,
            ["info", "mem"] => self.info_mem(c)?,
            ["info", "tlb"] => self.info_tlb(c, None)?,
            ["info", "tlb", from] => self.info_tlb(c, Some(from))?,
            ["info", "tlb", ..] => return Err(MonitorError::Usage("info tlb [ADDR]")),
            ["info", "gdt"] => self.info_gdt(c)?,
            ["info", "idt"] => self.info_idt(c)?,
            ["info", "kvm"] => self.info_kvm(c)?,
            ["info", "version"] => self.info_version(c)?,
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

impl<A: Layout> MonitorCmd for KvmTarget<'_, A> {
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
    use super::msr::parse_msr;
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
