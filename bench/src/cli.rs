//! The benchmark's command line and its run: parses the options, launches each stub per
//! repetition, and prints the table (and the JSON samples when asked).
//!
//! The kvmgdb side runs as `kvmgdb-bench --exec-kvmgdb ARGS…`, which calls the same
//! `kvmgdb::cli::main_from` as the `kvmgdb` binary: the benchmark always measures the library it
//! was built with, even when `cargo run -p kvmgdb-bench --bin kvmgdb-bench` did not rebuild `kvmgdb`.

use crate::guest::{BenchGuest, Pattern};
use crate::linux::{self, LinuxBench, Reach};
use crate::measure::{self, BenchError, Counts};
use crate::report;
use crate::smp;
use crate::stub::{self, Kind, StubSpec};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// The hidden first argument that turns this binary into kvmgdb itself.
pub const EXEC_KVMGDB: &str = "--exec-kvmgdb";

/// Benchmark kvmgdb's gdb stub against QEMU's on the same guest.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Repetitions (each launches each stub once); the table shows medians.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Tiny counts and one repetition: checks that every figure still works.
    #[arg(long)]
    smoke: bool,
    /// Measure kvmgdb only.
    #[arg(long)]
    no_qemu: bool,
    /// Do not `apt-get install qemu-system-x86` when QEMU is missing.
    #[arg(long)]
    no_install: bool,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Benchmark this kvmgdb binary instead of the library this benchmark was built with.
    #[arg(long)]
    kvmgdb: Option<PathBuf>,
    /// The gdb binary.
    #[arg(long, default_value = "gdb")]
    gdb: PathBuf,
    /// The guest (default: the bench guest built by build.rs).
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Write every raw sample to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Add the Linux figures: Debian's cloud kernel (fetched with apt-get download into
    /// --linux-cache) booted by both stubs from its bzImage and its vmlinux.
    #[arg(long)]
    linux: bool,
    /// Only the Linux figures (implies --linux).
    #[arg(long)]
    only_linux: bool,
    /// How long each Linux serial run may go on, in seconds ("how far each gets").
    #[arg(long, default_value_t = 90)]
    linux_limit: u64,
    /// Repetitions of the Linux part (each takes minutes).
    #[arg(long, default_value_t = 1)]
    linux_reps: usize,
    /// Where Debian's kernel is cached (default: target/debian-linux of this workspace).
    #[arg(long)]
    linux_cache: Option<PathBuf>,
    /// Only the SMP figures: stop-all and resume-all latency on the SMP guest with each of
    /// --smp-cpus vCPUs, kvmgdb (`--cpus N`) and QEMU (`-smp N`) side by side.
    #[arg(long, conflicts_with = "only_linux")]
    smp: bool,
    /// Leave the SMP figures out.
    #[arg(long, conflicts_with = "smp")]
    no_smp: bool,
    /// The vCPU counts of the SMP figures, e.g. 1,8,64 (the default; --smoke: 1,2).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    smp_cpus: Vec<u16>,
    /// Run everything (this client, the stubs, gdb) on this one CPU. Round trips then
    /// cost context switches instead of cross-CPU wake-ups, which are dear on VMs.
    #[arg(long)]
    pin_cpu: Option<usize>,
}

/// The `kvmgdb-bench` program: kvmgdb itself when the first argument is `--exec-kvmgdb`,
/// otherwise the benchmark.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(EXEC_KVMGDB) {
        return exec_kvmgdb(&argv[2..]);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvmgdb-bench: error: {}", measure::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs kvmgdb exactly as its own `main.rs` does (the `--exec-kvmgdb` mode of the bench
/// binaries).
pub fn exec_kvmgdb(args: &[String]) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let argv = std::iter::once("kvmgdb".to_string()).chain(args.iter().cloned());
    ExitCode::from(kvmgdb::cli::main_from(argv))
}

/// Finds a program given by name on PATH, or checks a given path.
fn resolve(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    stub::which(&p.to_string_lossy())
}

/// Installs QEMU with apt-get, as the project's issue asks; returns why not if it cannot.
fn install_qemu() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root, so `apt-get install -y qemu-system-x86` was not tried".into());
    }
    if stub::which("apt-get").is_none() {
        return Err("no apt-get to install qemu-system-x86 with".into());
    }
    eprintln!("kvmgdb-bench: QEMU is missing; apt-get install -y qemu-system-x86 …");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-qq", "qemu-system-x86"];
    if apt(&install) || (apt(&["update", "-qq"]) && apt(&install)) {
        Ok(())
    } else {
        Err("`apt-get install -y qemu-system-x86` failed".into())
    }
}

/// One line of version text from `program --version`.
fn version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn machine_info() -> Vec<(&'static str, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let kvm = if Path::new("/sys/module/kvm_pvm").exists() {
        "PVM (kvm_pvm: software KVM, CPL0 guest code emulated)"
    } else if Path::new("/sys/module/kvm_intel").exists() {
        "kvm_intel"
    } else if Path::new("/sys/module/kvm_amd").exists() {
        "kvm_amd"
    } else {
        "unknown"
    };
    vec![
        ("cpu", format!("{cpu}, {cores} cores")),
        ("kernel", kernel),
        ("kvm", kvm.into()),
    ]
}

/// Pins this process, and so every process it starts, to one CPU.
fn pin_to(cpu: usize) -> Result<(), BenchError> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(BenchError::Setup(format!("no CPU {cpu}")));
    }
    // SAFETY: `cpu` is below the set's capacity (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread, whose
    // affinity new threads and children inherit.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(BenchError::Setup(format!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn run(args: &Args) -> Result<(), BenchError> {
    let counts = if args.smoke {
        Counts::smoke()
    } else {
        Counts::full()
    };
    let reps = if args.smoke { 1 } else { args.reps.max(1) };

    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| BenchError::Setup(format!("cannot open /dev/kvm read-write: {e}")))?;
    let gdb = resolve(&args.gdb).ok_or_else(|| {
        BenchError::Setup(format!(
            "{} not found; the real-gdb figures need it: apt-get install -y gdb",
            args.gdb.display()
        ))
    })?;
    let guest_path = args
        .guest
        .clone()
        .unwrap_or_else(|| kvmgdb::guests::guest_dir().join("bench.elf"));
    let guest = BenchGuest::load(&guest_path)?;
    let pattern = Pattern::new();

    let kvmgdb_spec = match &args.kvmgdb {
        Some(p) => StubSpec {
            kind: Kind::Kvmgdb,
            program: p.clone(),
            prefix: Vec::new(),
        },
        None => StubSpec {
            kind: Kind::Kvmgdb,
            program: std::env::current_exe()
                .map_err(|e| BenchError::Setup(format!("cannot find this program: {e}")))?,
            prefix: vec![EXEC_KVMGDB.into()],
        },
    };
    let (qemu_spec, qemu_note) = if args.no_qemu {
        (None, Some("--no-qemu was given".to_string()))
    } else {
        let found = resolve(&args.qemu).or_else(|| {
            if args.no_install || args.qemu.components().count() > 1 {
                return None;
            }
            match install_qemu() {
                Ok(()) => resolve(&args.qemu),
                Err(why) => {
                    eprintln!("kvmgdb-bench: {why}");
                    None
                }
            }
        });
        match found {
            Some(program) => (
                Some(StubSpec {
                    kind: Kind::Qemu,
                    program,
                    prefix: Vec::new(),
                }),
                None,
            ),
            None => (
                None,
                Some(format!(
                    "{} was not found{}",
                    args.qemu.display(),
                    if args.no_install {
                        " (and --no-install was given)"
                    } else {
                        " and could not be installed (apt-get install -y qemu-system-x86)"
                    }
                )),
            ),
        }
    };

    if let Some(cpu) = args.pin_cpu {
        pin_to(cpu)?;
    }
    let load_before = loadavg();
    let mut specs = vec![kvmgdb_spec.clone()];
    specs.extend(qemu_spec.clone());
    let mut results = report::Results::default();
    let quick_reps = if args.only_linux || args.smp { 0 } else { reps };
    for rep in 0..quick_reps {
        // Alternate which stub goes first, so drift over the run hits both alike.
        let order: Vec<&StubSpec> = if rep % 2 == 0 {
            specs.iter().collect()
        } else {
            specs.iter().rev().collect()
        };
        for spec in order {
            eprintln!(
                "kvmgdb-bench: repetition {}/{reps}: {}",
                rep + 1,
                spec.kind.name()
            );
            let out = measure::run_rep(spec, &guest, &pattern, &counts, &gdb)?;
            if out.ack_only && !results.ack_only.contains(&spec.kind) {
                results.ack_only.push(spec.kind);
            }
            results.add(rep, spec.kind, out.figs);
        }
    }

    let smp_cpus: Vec<usize> = if !args.smp_cpus.is_empty() {
        args.smp_cpus.iter().map(|&n| usize::from(n)).collect()
    } else if args.smoke {
        vec![1, 2]
    } else {
        vec![1, 8, 64]
    };
    let mut smp_results = smp::SmpResults::default();
    let mut smp_failure = None;
    let smp_guest = if !args.no_smp && !args.only_linux {
        let g = smp::SmpGuest::load(&kvmgdb::guests::guest_dir().join("smp.elf"))?;
        let counts = if args.smoke {
            smp::SmpCounts::smoke(smp_cpus.clone())
        } else {
            smp::SmpCounts::full(smp_cpus.clone())
        };
        smp_failure = smp::run(&specs, &g, &counts, reps, &mut smp_results).err();
        Some((g, counts))
    } else {
        None
    };

    let linux = if args.linux || args.only_linux {
        Some(run_linux(args, &specs, &gdb, &mut results)?)
    } else {
        None
    };

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let date = report::utc_now();
    let mut header: Vec<(&str, String)> = vec![
        ("date", date.clone()),
        ("command", command.clone()),
        ("reps", reps.to_string()),
        ("mode", if args.smoke { "smoke" } else { "timing" }.into()),
    ];
    header.extend(machine_info());
    // Other work on the machine shows up in every figure; say how busy it was.
    header.push((
        "load average before/after",
        format!("{load_before} / {}", loadavg()),
    ));
    header.push(("gdb", version(&gdb)));
    if let Some(q) = &qemu_spec {
        header.push(("qemu", version(&q.program)));
    }
    if quick_reps > 0 {
        header.push(("guest", guest_path.display().to_string()));
    }
    if let Some((g, counts)) = &smp_guest {
        header.push((
            "smp guest",
            format!(
                "guests/smp.c as a Multiboot ELF32 ({}), vCPUs {:?}",
                g.image.display(),
                counts.cpus
            ),
        ));
        for s in &specs {
            header.push((
                match s.kind {
                    Kind::Kvmgdb => "smp command, kvmgdb",
                    Kind::Qemu => "smp command, QEMU",
                },
                s.describe(&g.image, Some(0)).replace(" 0 ", " N "),
            ));
        }
        header.push((
            "smp sampling",
            format!(
                "guest RAM through /proc/PID/mem every {:?} (ppoll, 1 ns timer slack); {} \
                 Ctrl-C and {} breakpoint cycles per launch",
                counts.poll, counts.ctrl_c, counts.bp
            ),
        ));
    }
    header.push((
        "cpu placement",
        match args.pin_cpu {
            Some(cpu) => format!("everything pinned to CPU {cpu} (--pin-cpu)"),
            None => "left to the scheduler".into(),
        },
    ));

    println!(
        "## kvmgdb-bench{}\n",
        if args.smoke {
            " (smoke run: tiny counts, not timings)"
        } else {
            ""
        }
    );
    for (k, v) in &header {
        println!("- {k}: {v}");
    }
    println!();
    if quick_reps > 0 {
        print!("{}", results.table(qemu_note.as_deref()));
    }
    if smp_guest.is_some() {
        println!("\n### SMP: stop-all and resume-all (`--smp`)\n");
        print!("{}", smp_results.table(&smp_cpus, qemu_note.as_deref()));
    }
    if let Some((kernel, reaches)) = &linux {
        println!(
            "\nLinux: Debian {kernel}, `-m {}`, command line `{}`; on PVM kvmgdb with \
             `--pvm-linux`, QEMU with `{}` appended; QEMU with `-cpu host,-cx16`.\n",
            linux::RAM,
            linux::CMDLINE,
            linux::PVM_PARAMS,
        );
        print!(
            "{}",
            linux::reach_table(reaches, Duration::from_secs(args.linux_limit))
        );
    }

    if let Some(path) = &args.json {
        let stubs: Vec<(Kind, String)> = specs
            .iter()
            .map(|s| (s.kind, s.describe(&guest.path, None)))
            .collect();
        let smp_json = smp_guest.as_ref().map(|_| smp_results.json());
        std::fs::write(path, results.json(&header, &stubs, smp_json.as_deref()))
            .map_err(|e| BenchError::Write(path.clone(), e))?;
    }
    smp_failure.map_or(Ok(()), Err)
}

/// The Linux part: fetches the kernel, then runs each stub `--linux-reps` times. Returns
/// the kernel's name and how far each stub got.
fn run_linux(
    args: &Args,
    specs: &[StubSpec],
    gdb: &Path,
    results: &mut report::Results,
) -> Result<(String, Vec<Reach>), BenchError> {
    let cache = args
        .linux_cache
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian-linux"));
    let kernel = crate::debian::fetch(&cache)
        .map_err(|e| BenchError::Setup(format!("cannot obtain Debian's Linux kernel: {e}")))?;
    let name = kernel.abi.clone();
    let bench = LinuxBench {
        kernel,
        limit: Duration::from_secs(args.linux_limit),
        pvm: Path::new("/sys/module/kvm_pvm").exists(),
    };
    let mut reaches = Vec::new();
    for rep in 0..args.linux_reps.max(1) {
        let order: Vec<&StubSpec> = if rep % 2 == 0 {
            specs.iter().collect()
        } else {
            specs.iter().rev().collect()
        };
        for spec in order {
            let (figs, reach) = bench.run_rep(spec, gdb)?;
            results.add(rep, spec.kind, figs);
            reaches.extend(reach);
        }
    }
    Ok((name, reaches))
}
