//! The RSP fuzzer's smoke run (`kvmgdb_bench::fuzz`): a few thousand packets of seeded
//! hostile traffic against a live kvmgdb on the demo guest, every counter that must be 0
//! checked. The long run is the documented `kvmgdb-fuzz` command (README, "Fuzzing").

mod common;

use common::*;
use kvmgdb_bench::fuzz::{self, Config, Program};
use std::time::Duration;

/// The smoke run's seed: fixed, so a failure replays exactly.
const SEED: u64 = 8;
/// Enough packets to cover every action several times.
const PACKETS: u64 = 3000;
/// The test's bound; the run takes a few seconds when the stub is healthy.
const TIME_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn fuzz_smoke_run_finds_nothing() {
    require_kvm();
    let program = Program {
        path: kvmgdb_bin().to_path_buf(),
        prefix: Vec::new(),
    };
    let mut cfg = Config::new(program, SEED, PACKETS);
    cfg.smoke = true;
    cfg.check_every = 100;
    cfg.time_limit = Some(TIME_LIMIT);
    let out = fuzz::run(&cfg).unwrap_or_else(|e| panic!("the fuzz run failed: {e}"));
    let report = out.report();
    eprintln!("{report}");
    assert!(out.packets >= PACKETS, "{report}");
    assert!(
        out.sessions > 1 && out.vms > 1,
        "the run must reconnect and reboot: {report}"
    );
    assert!(out.clean(), "{report}");
}
