//! What a fuzz run found: the counters, and per kind of finding the first reproducers (the
//! exact bytes the fuzzer sent since its last sync point, with the seed that regenerates the
//! whole run).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A class of finding. All must be zero in a clean run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// kvmgdb's stderr shows a Rust panic.
    Panic,
    /// kvmgdb exited without being told to (`k`/`vKill`).
    Crash,
    /// The stub kept the connection open but did not answer within the time bound.
    Hang,
    /// An answer the RSP manual or the guest's real state rules out.
    Wrong,
    /// The stub ended a session the protocol did not end (no `D`, `k`, or close by us).
    Dropped,
    /// The guest died (triple fault, KVM error, halt, exit) without the fuzzer asking.
    GuestDeath,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 6] = [
        Class::Panic,
        Class::Crash,
        Class::Hang,
        Class::Wrong,
        Class::Dropped,
        Class::GuestDeath,
    ];

    /// The counter's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Class::Panic => "panics",
            Class::Crash => "crashes",
            Class::Hang => "hangs",
            Class::Wrong => "wrong answers",
            Class::Dropped => "dropped sessions",
            Class::GuestDeath => "guest deaths",
        }
    }
}

/// One finding.
#[derive(Clone, Debug)]
pub struct Finding {
    /// Its class.
    pub class: Class,
    /// A short label that groups findings of one cause (e.g. "after bad checksum").
    pub label: String,
    /// What exactly was wrong.
    pub detail: String,
    /// The bytes sent since the last sync point, oldest first.
    pub bytes: Vec<u8>,
    /// Whether the session was in no-ack mode.
    pub no_ack: bool,
    /// Packets sent in the run before this finding.
    pub at_packet: u64,
}

/// Reproducers kept per label.
const KEEP_PER_LABEL: usize = 3;

/// The run's totals.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Packets (and junk items: stray bytes, NAKs, interrupts) sent.
    pub packets: u64,
    /// Client sessions (connections).
    pub sessions: u64,
    /// kvmgdb processes started.
    pub vms: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// The run hit its time limit before sending all its packets.
    pub timed_out: bool,
    counts: BTreeMap<Class, u64>,
    /// Per (class, label): the count and the first reproducers.
    groups: BTreeMap<(Class, String), (u64, Vec<Finding>)>,
}

impl Outcome {
    /// An empty outcome for a run from `seed`.
    pub fn new(seed: u64) -> Outcome {
        Outcome {
            seed,
            ..Outcome::default()
        }
    }

    /// Records a finding.
    pub fn record(&mut self, f: Finding) {
        *self.counts.entry(f.class).or_default() += 1;
        let g = self
            .groups
            .entry((f.class, f.label.clone()))
            .or_insert((0, Vec::new()));
        g.0 += 1;
        if g.1.len() < KEEP_PER_LABEL {
            g.1.push(f);
        }
    }

    /// The count of a class.
    pub fn count(&self, class: Class) -> u64 {
        self.counts.get(&class).copied().unwrap_or(0)
    }

    /// True when every counter that must be zero is, and the run was not cut short.
    pub fn clean(&self) -> bool {
        !self.timed_out && Class::ALL.iter().all(|&c| self.count(c) == 0)
    }

    /// The report: the counters, then each kind of finding with its reproducers.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "kvmgdb-fuzz: seed {}, {} packets, {} sessions, {} VMs, {:.1} s",
            self.seed, self.packets, self.sessions, self.vms, self.seconds
        );
        if self.timed_out {
            let _ = writeln!(s, "kvmgdb-fuzz: the run hit its time limit");
        }
        let _ = writeln!(s, "| counter | count |\n|---|---|");
        let _ = writeln!(s, "| packets | {} |", self.packets);
        let _ = writeln!(s, "| sessions | {} |", self.sessions);
        for c in Class::ALL {
            let _ = writeln!(s, "| {} | {} |", c.name(), self.count(c));
        }
        for ((class, label), (n, found)) in &self.groups {
            let _ = writeln!(s, "\n{}: {label}: {n}", class.name());
            for f in found {
                let _ = writeln!(
                    s,
                    "  at packet {} ({} mode): {}\n    bytes: {}",
                    f.at_packet,
                    if f.no_ack { "no-ack" } else { "ack" },
                    f.detail,
                    super::escape(&f.bytes)
                );
            }
        }
        s
    }
}
