//! `kvmgdb-fuzz`: the RSP fuzzer's command line (see `kvmgdb_bench::fuzz`).
//!
//! By default it runs kvmgdb as itself (`kvmgdb-fuzz --exec-kvmgdb ARGS…`, the benchmark's
//! trick), so it always fuzzes the library it was built with.

use clap::Parser;
use kvmgdb_bench::cli::{EXEC_KVMGDB, exec_kvmgdb};
use kvmgdb_bench::fuzz::{self, Config, Program};
use std::path::PathBuf;
use std::process::ExitCode;

/// Fuzz kvmgdb's gdb stub with seeded RSP traffic against a live VM on the demo guest.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The seed: the same seed gives the same traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many packets to send.
    #[arg(long, default_value_t = 100_000)]
    packets: u64,
    /// The smoke profile: the rare expensive actions come more often.
    #[arg(long)]
    smoke: bool,
    /// Run the oracles every this many packets.
    #[arg(long, default_value_t = 200)]
    check_every: u64,
    /// Fuzz this kvmgdb binary instead of the library this fuzzer was built with.
    #[arg(long)]
    kvmgdb: Option<PathBuf>,
    /// Print each finding as it happens, and where the time went.
    #[arg(long, short)]
    verbose: bool,
    /// Stop (and fail) after this many seconds.
    #[arg(long)]
    time_limit: Option<u64>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(EXEC_KVMGDB) {
        return exec_kvmgdb(&argv[2..]);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let kvmgdb = match args.kvmgdb {
        Some(path) => Program {
            path,
            prefix: Vec::new(),
        },
        None => match std::env::current_exe() {
            Ok(path) => Program {
                path,
                prefix: vec![EXEC_KVMGDB.to_string()],
            },
            Err(e) => {
                eprintln!("kvmgdb-fuzz: error: cannot find my own executable: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut cfg = Config::new(kvmgdb, args.seed, args.packets);
    cfg.smoke = args.smoke;
    cfg.check_every = args.check_every.max(1);
    cfg.verbose = args.verbose;
    cfg.time_limit = args.time_limit.map(std::time::Duration::from_secs);
    match fuzz::run(&cfg) {
        Ok(out) => {
            print!("{}", out.report());
            if out.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            let mut msg = format!("kvmgdb-fuzz: error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}
