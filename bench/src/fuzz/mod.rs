//! kvmgdb-fuzz: a seeded RSP fuzzer against a live kvmgdb on its demo guest.
//!
//! The traffic is random packets and packets mutated from real gdb transcripts
//! (`bench/fuzz-corpus.txt`), with every packet kind gdb sends, malformed arguments, bad
//! checksums, stray bytes, NAKs, Ctrl-C at random times, oversized packets, ack and no-ack
//! sessions, disconnects and reconnects, and `k` (answered by booting a new VM). The
//! oracles: the stub answers within a time bound, kvmgdb neither panics nor exits unasked,
//! guest memory reads back as the fuzzer wrote it, code reads back as the image has it,
//! registers are the vCPU's (stable between two `g`, sane for the demo's long mode, a `P`
//! reads back), breakpoints hit after junk, and no session ends that the protocol did not
//! end. A run is a pure function of its seed, so the seed and the reproducer bytes
//! printed with each finding are enough to replay it.

pub mod corpus;
mod driver;
pub mod outcome;
pub mod rng;
pub mod target;
pub mod vm;
pub mod wire;

pub use outcome::{Class, Outcome};
pub use vm::Program;

/// Errors that stop a fuzz run before it has a result.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    /// The guest image or the register layout cannot be read.
    #[error("cannot model the demo guest")]
    Target(#[from] target::TargetError),
    /// kvmgdb would not start (three times in a row).
    #[error("cannot start kvmgdb")]
    Vm(#[from] vm::VmError),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The seed of every random choice.
    pub seed: u64,
    /// Stop after this many packets.
    pub packets: u64,
    /// The smoke profile: the rare expensive actions (kill and reboot, 16 MiB packets) come
    /// more often, so a short run still covers them.
    pub smoke: bool,
    /// Run the oracles after this many packets.
    pub check_every: u64,
    /// How to start kvmgdb.
    pub kvmgdb: Program,
    /// Print each finding as it happens, and where the time went.
    pub verbose: bool,
    /// Stop (and fail) a run that takes longer than this.
    pub time_limit: Option<std::time::Duration>,
}

impl Config {
    /// A run of `packets` packets from `seed` with the default check interval.
    pub fn new(kvmgdb: Program, seed: u64, packets: u64) -> Config {
        Config {
            seed,
            packets,
            smoke: false,
            check_every: 200,
            kvmgdb,
            verbose: false,
            time_limit: None,
        }
    }
}

/// Runs the fuzzer.
pub fn run(cfg: &Config) -> Result<Outcome, FuzzError> {
    driver::run(cfg)
}

/// Bytes as text: printable ASCII as is, everything else (and `\`) as `\xNN`. Long runs
/// of one byte are shortened to `<N × \xNN>`.
pub fn escape(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let run = bytes[i..].iter().take_while(|&&c| c == b).count();
        let one = if (0x20..0x7f).contains(&b) && b != b'\\' {
            (b as char).to_string()
        } else {
            format!("\\x{b:02x}")
        };
        if run > 16 {
            let _ = write!(s, "<{run} × {one}>");
            i += run;
        } else {
            s.push_str(&one);
            i += 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_is_readable() {
        assert_eq!(super::escape(b"$?#3f\x03\\"), "$?#3f\\x03\\x5c");
        assert_eq!(super::escape(&[b'0'; 20]), "<20 × 0>");
    }
}
