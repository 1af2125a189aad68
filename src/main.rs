//! The `kvmgdb` binary: start logging, run the command line, return its exit status.

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    ExitCode::from(kvmgdb::cli::main_from(std::env::args_os()))
}
