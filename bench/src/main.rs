//! The `kvmgdb-bench` binary; everything is in the library (see [`kvmgdb_bench::cli`]).

fn main() -> std::process::ExitCode {
    kvmgdb_bench::cli::main()
}
