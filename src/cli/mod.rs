//! The command line, in two forms: kvmgdb's own (`kvmgdb [OPTIONS] [KERNEL]`, parsed by
//! clap, and the `caps` subcommand) and QEMU's (`kvmgdb -kernel K -append … -s -S`, parsed
//! by [`qemu`]). [`qemu::is_qemu_form`] tells them apart; both become one [`RunOptions`],
//! which [`run`] boots.

pub mod files;
pub mod pvm;
pub mod qemu;

use crate::boot;
use crate::caps::{self, KvmCaps};
use crate::config::{self, GdbAddr, SerialSink};
use crate::gdb::{self, GdbArch, conn::Listener};
use crate::guests;
use crate::runner::{self, Outcome};
use crate::vmm::stop::VcpuStop;
use crate::vmm::{MachineConfig, Vm};
use clap::{Parser, Subcommand};
use files::{FileRole, ModuleSpec};
use pvm::PvmLinux;
use std::io::Write;
use std::path::PathBuf;

pub use files::read_kernel;

/// Process exit status when gdb kills the VM or the guest halts with interrupts off.
pub const EXIT_OK: u8 = 0;
/// Exit status for errors (KVM unavailable, bad kernel image, …).
pub const EXIT_ERROR: u8 = 1;
/// Exit status for a bad command line (clap's convention, kept for the QEMU form).
pub const EXIT_USAGE: u8 = 2;
/// Exit status after a triple fault with no debugger attached.
pub const EXIT_TRIPLE_FAULT: u8 = 4;
/// Exit status after a KVM internal error or failed VM entry with no debugger attached.
pub const EXIT_KVM_ERROR: u8 = 6;

/// kvmgdb: boot a kernel on KVM and debug it with gdb.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "QEMU's form works too: kvmgdb -kernel K [-append ARGS] [-initrd FILES] [-m SIZE] [-s] [-S] … (README, \"QEMU command line\")."
)]
pub struct Args {
    /// Subcommand (`caps`); without one, boot KERNEL.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Kernel image: ELF64 (entered in long mode) or Multiboot v1 (ELF32/ELF64/a.out kludge).
    /// Without it, the embedded demo guest boots.
    pub kernel: Option<PathBuf>,

    /// Anything after the kernel: caught only to be refused with a clear message by
    /// [`parse_from`] (without it, clap takes a second path for a subcommand).
    #[arg(hide = true)]
    pub extra: Vec<std::ffi::OsString>,

    /// Guest RAM, with an optional K, M or G suffix.
    #[arg(short, long, default_value = "128M", value_parser = config::parse_size)]
    pub memory: u64,
    /// vCPUs (1 to 64, and no more than KVM allows): the boot processor starts at the
    /// kernel's entry, the others wait for the kernel's INIT-SIPI-SIPI (QEMU's -smp).
    #[arg(long, default_value = "1", value_parser = config::parse_cpus)]
    pub cpus: usize,

    /// Where the gdb stub listens: HOST:PORT, :PORT (loopback), unix:PATH, or none.
    #[arg(long, default_value = "127.0.0.1:1234")]
    pub gdb: GdbAddr,

    /// Run the guest at once instead of waiting at the entry point for gdb.
    #[arg(long)]
    pub no_wait: bool,

    /// Where COM1 output goes: stdio, none, or a file path.
    #[arg(long, default_value = "stdio")]
    pub serial: SerialSink,

    /// The kernel command line (QEMU's -append).
    #[arg(long, default_value = "")]
    pub append: String,

    /// Initrd or Multiboot modules, QEMU's way: "FILE[ ARGS][,FILE2[ ARGS]]" (",," is a
    /// literal comma). May be given more than once.
    #[arg(long, value_parser = parse_initrd_arg)]
    pub initrd: Vec<Vec<ModuleSpec>>,

    /// End kvmgdb when the guest reboots instead of resetting the machine.
    #[arg(long)]
    pub no_reboot: bool,

    /// The register layout gdb gets: i386 or x86-64 (default: the image's own, README
    /// "gdb architecture").
    #[arg(long, value_name = "i386|x86-64")]
    pub gdb_arch: Option<GdbArch>,

    /// Append the kernel parameters a Linux kernel needs on PVM (done by default when the
    /// host KVM is PVM).
    #[arg(long, conflicts_with = "no_pvm_linux")]
    pub pvm_linux: bool,

    /// Never append the --pvm-linux parameters.
    #[arg(long)]
    pub no_pvm_linux: bool,
}

fn parse_initrd_arg(value: &str) -> Result<Vec<ModuleSpec>, String> {
    files::parse_initrd(value)
}

impl Args {
    /// The run these arguments ask for.
    pub fn into_options(self) -> RunOptions {
        RunOptions {
            form: Form::Native,
            kernel: self.kernel,
            memory: self.memory,
            cpus: self.cpus,
            append: self.append,
            initrd: self.initrd.into_iter().flatten().collect(),
            wait: !self.no_wait && self.gdb != GdbAddr::None,
            gdb: self.gdb,
            serial: self.serial,
            no_reboot: self.no_reboot,
            gdb_arch: self.gdb_arch,
            pvm_linux: match (self.pvm_linux, self.no_pvm_linux) {
                (true, _) => PvmLinux::On,
                (_, true) => PvmLinux::Off,
                _ => PvmLinux::Auto,
            },
            notes: Vec::new(),
        }
    }
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the host KVM's API version and the capabilities a debugger depends on.
    Caps,
}

/// Which form a command line was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `kvmgdb [OPTIONS] [KERNEL]`.
    Native,
    /// `kvmgdb -kernel K …`, with QEMU's meanings.
    Qemu,
}

/// Everything a run takes, from either form of the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The form it was written in.
    pub form: Form,
    /// The kernel; `None` boots the embedded demo (native form only).
    pub kernel: Option<PathBuf>,
    /// Bytes of guest RAM.
    pub memory: u64,
    /// Number of vCPUs.
    pub cpus: usize,
    /// The kernel command line.
    pub append: String,
    /// The initrd or Multiboot modules, in order.
    pub initrd: Vec<ModuleSpec>,
    /// Where the gdb stub listens (`None`: no stub).
    pub gdb: GdbAddr,
    /// Wait at the entry point for gdb (`-S`) instead of running at once.
    pub wait: bool,
    /// Where COM1 output goes.
    pub serial: SerialSink,
    /// End kvmgdb on a guest reboot instead of resetting the machine (`-no-reboot`).
    pub no_reboot: bool,
    /// The register layout gdb gets; `None`: the image's own.
    pub gdb_arch: Option<GdbArch>,
    /// Whether the `--pvm-linux` parameters are appended.
    pub pvm_linux: PvmLinux,
    /// Options accepted with a remark, printed on stderr before the boot.
    pub notes: Vec<String>,
}

/// What a command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// `kvmgdb caps`.
    Caps,
    /// Boot a kernel.
    Run(Box<RunOptions>),
}

/// A command line that cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The native form, as clap reports it (also `--help` and `--version`).
    #[error(transparent)]
    Native(#[from] clap::Error),
    /// The QEMU form.
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
}

/// Parses `argv` (the program name first) in whichever form it is written.
pub fn parse_from<I, T>(argv: I) -> Result<Invocation, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::CommandFactory;
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let words: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Help and version, in either form's spelling, are clap's (QEMU's -h and -version).
    let asks = |names: &[&str]| words.iter().any(|w| names.contains(&w.as_str()));
    if asks(&["-h", "-help", "--help"]) {
        return Err(Args::try_parse_from(["kvmgdb", "--help"])
            .unwrap_err()
            .into());
    }
    if asks(&["-V", "-version", "--version"]) {
        return Err(Args::try_parse_from(["kvmgdb", "--version"])
            .unwrap_err()
            .into());
    }
    if qemu::is_qemu_form(&words) {
        return Ok(Invocation::Run(Box::new(qemu::parse(&words)?)));
    }
    let args = Args::try_parse_from(argv)?;
    if let Some(second) = args.extra.first() {
        return Err(Args::command()
            .error(
                clap::error::ErrorKind::TooManyValues,
                format!(
                    "kvmgdb takes one kernel image; got a second: {}",
                    second.to_string_lossy()
                ),
            )
            .into());
    }
    Ok(match args.command {
        Some(Command::Caps) => Invocation::Caps,
        None => Invocation::Run(Box::new(args.into_options())),
    })
}

/// Runs kvmgdb on `argv` as its binary does and returns the process exit status: errors
/// are printed on stderr as one `kvmgdb: error: …` line with their causes (clap prints its
/// own, with usage).
pub fn main_from<I, T>(argv: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let invocation = match parse_from(argv) {
        Ok(i) => i,
        Err(UsageError::Native(e)) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage { EXIT_USAGE } else { EXIT_OK };
        }
        Err(e @ UsageError::Qemu(_)) => {
            eprintln!("kvmgdb: error: {}", error_chain(&e));
            return EXIT_USAGE;
        }
    };
    match run(invocation) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvmgdb: error: {}", error_chain(&e));
            EXIT_ERROR
        }
    }
}

/// `e` and its sources, joined by ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// Errors the command line reports before exiting.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// KVM is unavailable.
    #[error(transparent)]
    Kvm(#[from] caps::CapsError),
    /// A file could not be read.
    #[error("cannot read {0} {1}")]
    ReadFile(FileRole, PathBuf, #[source] std::io::Error),
    /// A path names something other than a regular file.
    #[error("{0} {1} is {2}, not a regular file")]
    NotAFile(FileRole, PathBuf, &'static str),
    /// A file (or, for an ELF kernel, the part its headers describe) is larger than guest
    /// RAM, so it cannot be what gets loaded.
    #[error(
        "{role} {path} {} {size} bytes, larger than guest RAM ({ram} MiB): give more with --memory (QEMU form: -m)",
        if *elf_part { "loads" } else { "is" }
    )]
    TooLarge {
        /// What the file is for.
        role: FileRole,
        /// The file.
        path: PathBuf,
        /// Its size, or the end of its ELF-described part.
        size: u64,
        /// Whether `size` is the ELF-described part rather than the whole file.
        elf_part: bool,
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

/// Runs what the command line asked for; returns the process exit status.
pub fn run(invocation: Invocation) -> Result<u8, CliError> {
    match invocation {
        Invocation::Caps => {
            let kvm = caps::open_kvm()?;
            print!("{}", KvmCaps::query(&kvm).table());
            Ok(EXIT_OK)
        }
        Invocation::Run(options) => run_kernel(&options),
    }
}

/// Boots the kernel `o` names and serves gdb (or runs it unattended) until it ends.
fn run_kernel(o: &RunOptions) -> Result<u8, CliError> {
    let (image, symbols) = match &o.kernel {
        Some(path) => (read_kernel(path, o.memory)?, path.clone()),
        None => (
            guests::DEMO_ELF.to_vec(),
            guests::write_demo_elf().map_err(CliError::Demo)?,
        ),
    };
    let modules = files::read_modules(&o.initrd, o.memory)?;
    let (cmdline, cmdline_note) = kernel_cmdline(o, &image, &symbols);
    let serial: Box<dyn Write + Send> = match &o.serial {
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
    crate::vmm::check_vcpus(o.cpus, &kvm_caps)?;
    let image_name = symbols.to_string_lossy();
    let plan = boot::plan(&boot::BootRequest {
        image: &image,
        image_name: &image_name,
        cmdline: &cmdline,
        modules: &modules,
        ram_size: o.memory,
        vcpus: o.cpus,
    })
    .map_err(|e| CliError::Boot(symbols.clone(), e))?;
    // Notes only once the boot is planned: a refused image gets its one error line alone.
    for note in &o.notes {
        eprintln!("kvmgdb: note: {note}");
    }
    if let Some(note) = cmdline_note {
        eprintln!("{note}");
    }
    let image_is_32bit = plan.info.image_is_32bit;
    let arch = o
        .gdb_arch
        .unwrap_or_else(|| GdbArch::for_image(image_is_32bit));
    let machine = MachineConfig {
        no_reboot: o.no_reboot,
        ..MachineConfig::new(o.memory, o.cpus)
    };
    let mut vm = Vm::new(kvm, machine, plan, serial)?;
    // A console on COM1 takes input too: what is typed (or piped) into kvmgdb, when the
    // serial port is on standard output.
    if o.serial == SerialSink::Stdio && crate::vmm::devices::serial::stdin_is_interactive() {
        vm.attach_serial_input(Box::new(std::io::stdin()))?;
    }

    let outcome = if o.gdb == GdbAddr::None {
        eprintln!("kvmgdb: running {} with no gdb stub", symbols.display());
        runner::run_without_gdb(&mut vm)?
    } else {
        let listener = Listener::bind(&o.gdb)?;
        let at = listener.local_addr();
        if o.gdb.is_exposed() {
            eprintln!(
                "kvmgdb: WARNING: the gdb stub listens on {at}, reachable from other machines; whoever connects controls the guest"
            );
        }
        let target = match &o.gdb {
            GdbAddr::Unix(p) => p.display().to_string(),
            _ => at.clone(),
        };
        // gdb takes its architecture from the symbol file; say so when the layout differs
        // from the image's own (README, "gdb architecture").
        let set_arch = if arch == GdbArch::for_image(image_is_32bit) {
            String::new()
        } else {
            format!("-ex 'set architecture {}' ", arch.gdb_name())
        };
        eprintln!(
            "kvmgdb: {} gdb on {at}; connect with: gdb {} {set_arch}-ex 'target remote {target}'",
            if o.wait {
                "waiting at the entry point for"
            } else {
                "running; attach"
            },
            symbols.display(),
        );
        gdb::serve(&mut vm, &listener, !o.wait, arch)?
    };
    vm.flush_devices();
    Ok(exit_status(outcome))
}

/// The kernel command line: `-append`'s, plus the `--pvm-linux` parameters where they
/// apply; and the line for stderr that says so when they were added without being asked
/// for (or that `--pvm-linux` found no Linux kernel).
fn kernel_cmdline(
    o: &RunOptions,
    image: &[u8],
    path: &std::path::Path,
) -> (String, Option<String>) {
    let linux = pvm::linux_kind(image);
    let pvm_host = o.pvm_linux == PvmLinux::Auto && linux.is_some() && pvm::host_kvm_is_pvm();
    let apply = pvm::applies(o.pvm_linux, linux.is_some(), pvm_host);
    let note = match (o.pvm_linux, linux) {
        (PvmLinux::Auto, Some(kind)) if apply => Some(format!(
            "kvmgdb: the host KVM is PVM: appending \"{}\" to the {kind}'s command line (--no-pvm-linux: leave it as given)",
            pvm::PVM_LINUX_PARAMS
        )),
        (PvmLinux::On, None) => Some(format!(
            "kvmgdb: note: --pvm-linux: {} is not a Linux kernel; its command line is left as given",
            path.display()
        )),
        _ => None,
    };
    (pvm::with_preset(&o.append, apply), note)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(argv: &[&str]) -> RunOptions {
        match parse_from(std::iter::once("kvmgdb").chain(argv.iter().copied())) {
            Ok(Invocation::Run(o)) => *o,
            other => panic!("{argv:?}: {other:?}"),
        }
    }

    #[test]
    fn native_form_options() {
        let o = options(&[
            "--append",
            "console=ttyS0 nokaslr",
            "--initrd",
            "a.cpio",
            "--initrd",
            "m1 x=1,m2",
            "--no-reboot",
            "--gdb-arch",
            "x86-64",
            "--pvm-linux",
            "-m",
            "64M",
            "k.elf",
        ]);
        assert_eq!(o.form, Form::Native);
        assert_eq!(o.kernel, Some("k.elf".into()));
        assert_eq!(o.append, "console=ttyS0 nokaslr");
        let items: Vec<(&str, &str)> = o
            .initrd
            .iter()
            .map(|m| (m.path.to_str().unwrap(), m.cmdline.as_str()))
            .collect();
        assert_eq!(
            items,
            [("a.cpio", "a.cpio"), ("m1", "m1 x=1"), ("m2", "m2")]
        );
        assert!(o.no_reboot && o.wait);
        assert_eq!(o.gdb_arch, Some(GdbArch::X86_64));
        assert_eq!(o.pvm_linux, PvmLinux::On);
        assert_eq!(o.memory, 64 << 20);

        // The defaults: the image's own layout, the preset where it applies.
        let o = options(&["k.elf"]);
        assert_eq!((o.gdb_arch, o.pvm_linux), (None, PvmLinux::Auto));
        assert_eq!(options(&["--no-pvm-linux", "k"]).pvm_linux, PvmLinux::Off);
        assert_eq!(
            options(&["--gdb-arch", "i386", "k"]).gdb_arch,
            Some(GdbArch::I386)
        );
        // No stub, nothing to wait for.
        assert!(!options(&["--gdb", "none", "k"]).wait);
        assert!(!options(&["--no-wait", "k"]).wait);
    }

    #[test]
    fn native_form_refusals() {
        for bad in [
            &["--gdb-arch", "arm", "k"][..],
            &["--pvm-linux", "--no-pvm-linux", "k"],
            &["--initrd", "", "k"],
            &["-m", "512", "k"],
        ] {
            let argv = std::iter::once("kvmgdb").chain(bad.iter().copied());
            assert!(
                matches!(parse_from(argv), Err(UsageError::Native(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_form_decides_the_parser() {
        let o = options(&["-kernel", "k", "-m", "512"]);
        assert_eq!((o.form, o.memory), (Form::Qemu, 512 << 20));
        let argv = ["kvmgdb", "-kernel", "k", "-vga", "std"];
        match parse_from(argv) {
            Err(UsageError::Qemu(e)) => {
                assert_eq!(e.to_string(), "unsupported QEMU option -vga")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_from(["kvmgdb", "caps"]),
            Ok(Invocation::Caps)
        ));
    }
}
