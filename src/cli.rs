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

    /// Anything after the kernel: caught only to be refused with a clear message by
    /// [`parse_args`] (without it, clap takes a second path for a subcommand).
    #[arg(hide = true)]
    pub extra: Vec<std::ffi::OsString>,

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

/// Parses the process's command line as [`Args`], refusing a second kernel image.
pub fn parse_args() -> Result<Args, clap::Error> {
    parse_args_from(std::env::args_os())
}

/// Parses `argv` (the program name first) as [`Args`], refusing a second kernel image.
pub fn parse_args_from<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::CommandFactory;
    let args = Args::try_parse_from(argv)?;
    if let Some(second) = args.extra.first() {
        return Err(Args::command().error(
            clap::error::ErrorKind::TooManyValues,
            format!(
                "kvmgdb takes one kernel image; got a second: {}",
                second.to_string_lossy()
            ),
        ));
    }
    Ok(args)
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
    /// The kernel path names something other than a regular file.
    #[error("kernel {0} is {1}, not a regular file")]
    KernelNotAFile(PathBuf, &'static str),
    /// The kernel file is larger than guest RAM, so no part of it can be what gets loaded.
    #[error(
        "kernel {path} is {size} bytes, larger than guest RAM ({ram} MiB): give more with --memory"
    )]
    KernelTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// Guest RAM in MiB.
        ram: u64,
    },
    /// The serial output file could not be created.
    #[error("cannot create serial output file {0}")]
    SerialFile(PathBuf, #[source] std::io::Error),
    /// The demo's symbol file could not be written.
    #[error("cannot write the demo guest's ELF file")]
    Demo(#[source] std::io::Error),
    /// The kernel image cannot be booted.
    #[error("cannot boot {0}")]
    Boot(PathBuf, #[source] boot::LoadError),
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
        Some(path) => (read_kernel(path, args.memory)?, path.clone()),
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
    let plan = boot::plan(&boot::BootRequest::new(&image, args.memory))
        .map_err(|e| CliError::Boot(symbols.clone(), e))?;
    let machine = MachineConfig::new(args.memory, 1);
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

/// Reads the kernel file at `path` for a machine with `ram` bytes of RAM, refusing at once
/// what cannot be a kernel: anything but a regular file (a directory, a device such as
/// /dev/zero that never ends, a FIFO that would block), and a file larger than guest RAM
/// (a sparse giant would cost its whole size in memory and seconds of reading).
///
/// The path is `stat`ed before it is opened, so a device is never opened at all (opening
/// some has side effects); it is opened with `O_NONBLOCK`, so a FIFO swapped in meanwhile
/// cannot block the open, and the opened descriptor is checked again with `fstat`, so what
/// is read is what was checked. The read stops one byte past `ram` whatever happens to the
/// file while it is read.
pub fn read_kernel(path: &std::path::Path, ram: u64) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |e| CliError::ReadKernel(path.to_path_buf(), e);
    let check = |meta: &std::fs::Metadata| {
        if let Some(kind) = not_a_file(&meta.file_type()) {
            return Err(CliError::KernelNotAFile(path.to_path_buf(), kind));
        }
        if meta.len() > ram {
            return Err(CliError::KernelTooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                ram: ram >> 20,
            });
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(io_err)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    check(&meta)?;
    let mut image = Vec::with_capacity(meta.len() as usize);
    let mut file = file.take(ram + 1);
    // The first bytes tell whether this can be a kernel at all: a file of anything else
    // (say, a sparse file of zeros that fits in RAM) is refused before the rest is read.
    (&mut file)
        .take(boot::PREFIX_LEN as u64)
        .read_to_end(&mut image)
        .map_err(io_err)?;
    boot::check_prefix(&image).map_err(|e| CliError::Boot(path.to_path_buf(), e))?;
    file.read_to_end(&mut image).map_err(io_err)?;
    if image.len() as u64 > ram {
        // The file grew past RAM while we read it.
        return Err(CliError::KernelTooLarge {
            path: path.to_path_buf(),
            size: image.len() as u64,
            ram: ram >> 20,
        });
    }
    Ok(image)
}

/// What a non-regular file is, for the error message; None for a regular file.
fn not_a_file(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a file of an unknown kind"
    })
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
