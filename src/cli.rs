//! The command line: arguments, the `caps` subcommand, and running a kernel.

use crate::boot;
use crate::caps::{self, KvmCaps};
use crate::config::{self, GdbAddr, SerialSink};
use crate::gdb::{self, conn::Listener};
use crate::guests;
use crate::runner::{self, Outcome};
use crate::vmm::stop::VcpuStop;
use crate::vmm::{MachineConfig, Vm};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// Process exit status when gdb kills the VM or the guest halts with interrupts off.
pub const EXIT_OK: u8 = 0;
/// Exit status for errors (KVM unavailable, bad kernel image, …).
pub const EXIT_ERROR: u8 = 1;
/// Exit status for a bad command line (clap's convention).
pub const EXIT_USAGE: u8 = 2;
/// Exit status after a triple fault with no debugger attached.
pub const EXIT_TRIPLE_FAULT: u8 = 4;
/// Exit status after a KVM internal error or failed VM entry with no debugger attached.
pub const EXIT_KVM_ERROR: u8 = 6;

/// kvmgdb: boot a bare-metal kernel on KVM and debug it with gdb.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Subcommand (`caps`); without one, boot KERNEL.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Kernel image: ELF64 (entered in long mode) or Multiboot v1 (ELF32/ELF64/a.out kludge).
    /// Without it, the embedded demo guest boots.
    pub kernel: Option<PathBuf>,

    /// Guest RAM, with an optional K, M or G suffix.
    #[arg(short, long, default_value = "128M", value_parser = config::parse_size)]
    pub memory: u64,

    /// Where the gdb stub listens: HOST:PORT, :PORT (loopback), unix:PATH, or none.
    #[arg(long, default_value = "127.0.0.1:1234")]
    pub gdb: GdbAddr,

    /// Run the guest at once instead of waiting at the entry point for gdb.
    #[arg(long)]
    pub no_wait: bool,

    /// Where COM1 output goes: stdio, none, or a file path.
    #[arg(long, default_value = "stdio")]
    pub serial: SerialSink,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the host KVM's API version and the capabilities a debugger depends on.
    Caps,
}

/// Errors the command line reports before exiting.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// KVM is unavailable.
    #[error(transparent)]
    Kvm(#[from] caps::CapsError),
    /// The kernel file could not be read.
    #[error("cannot read kernel {0}")]
    ReadKernel(PathBuf, #[source] std::io::Error),
    /// The serial output file could not be created.
    #[error("cannot create serial output file {0}")]
    SerialFile(PathBuf, #[source] std::io::Error),
    /// The demo's symbol file could not be written.
    #[error("cannot write the demo guest's ELF file")]
    Demo(#[source] std::io::Error),
    /// The kernel image cannot be booted.
    #[error(transparent)]
    Boot(#[from] boot::LoadError),
    /// The machine could not be built.
    #[error(transparent)]
    Vm(#[from] crate::vmm::VmError),
    /// The stub failed.
    #[error(transparent)]
    Gdb(#[from] gdb::GdbError),
    /// Running the machine without a debugger failed.
    #[error(transparent)]
    Run(#[from] runner::RunError),
}

/// Runs the command line; returns the process exit status.
pub fn run(args: Args) -> Result<u8, CliError> {
    if let Some(Command::Caps) = args.command {
        let kvm = caps::open_kvm()?;
        print!("{}", KvmCaps::query(&kvm).table());
        return Ok(EXIT_OK);
    }
    let (image, symbols) = match &args.kernel {
        Some(path) => (
            std::fs::read(path).map_err(|e| CliError::ReadKernel(path.clone(), e))?,
            path.clone(),
        ),
        None => (
            guests::DEMO_ELF.to_vec(),
            guests::write_demo_elf().map_err(CliError::Demo)?,
        ),
    };
    let serial: Box<dyn Write + Send> = match &args.serial {
        SerialSink::Stdio => Box::new(std::io::stdout()),
        SerialSink::None => Box::new(std::io::sink()),
        SerialSink::File(p) => {
            Box::new(std::fs::File::create(p).map_err(|e| CliError::SerialFile(p.clone(), e))?)
        }
    };
    let kvm = caps::open_kvm()?;
    let kvm_caps = KvmCaps::query(&kvm);
    if !kvm_caps.set_guest_debug {
        return Err(caps::CapsError::NoGuestDebug.into());
    }
    let plan = boot::plan(&image, "", args.memory)?;
    let machine = MachineConfig {
        memory_size: args.memory,
        vcpus: 1,
    };
    let mut vm = Vm::new(kvm, machine, plan, serial)?;

    let outcome = if args.gdb == GdbAddr::None {
        eprintln!("kvmgdb: running {} with no gdb stub", symbols.display());
        runner::run_without_gdb(&mut vm)?
    } else {
        let listener = Listener::bind(&args.gdb)?;
        let at = listener.local_addr();
        if args.gdb.is_exposed() {
            eprintln!(
                "kvmgdb: WARNING: the gdb stub listens on {at}, reachable from other machines; whoever connects controls the guest"
            );
        }
        let target = match &args.gdb {
            GdbAddr::Unix(p) => p.display().to_string(),
            _ => at.clone(),
        };
        eprintln!(
            "kvmgdb: {} gdb on {at}; connect with: gdb {} -ex 'target remote {target}'",
            if args.no_wait {
                "running; attach"
            } else {
                "waiting at the entry point for"
            },
            symbols.display(),
        );
        gdb::serve(&mut vm, &listener, args.no_wait)?
    };
    vm.flush_devices();
    Ok(exit_status(outcome))
}

/// The process exit status for how the machine ended (README: "Exit status").
pub fn exit_status(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::GuestExit(code) => code as u8,
        Outcome::Killed => EXIT_OK,
        Outcome::Fatal(stop) => {
            eprintln!("kvmgdb: the guest stopped: {}", stop.describe());
            match stop {
                VcpuStop::Halted => EXIT_OK,
                VcpuStop::Shutdown => EXIT_TRIPLE_FAULT,
                _ => EXIT_KVM_ERROR,
            }
        }
    }
}
