//! The figures users feel: the real `gdb` in batch mode, timing itself with its embedded
//! Python, against a stub the benchmark has launched.

use crate::guest::{BenchGuest, LoopState, Pattern};
use crate::measure::{BenchError, Counts};
use crate::stub::{Kind, Stub};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one gdb run measured.
pub struct GdbFigures {
    /// `stepi`s per second.
    pub stepi_per_s: f64,
    /// gdb's own CPU time while stepping, in % of the wall time.
    pub stepi_gdb_cpu: f64,
    /// `dump binary memory` throughput.
    pub dump_mib_per_s: f64,
    /// gdb's own CPU time while dumping, in % of the wall time.
    pub dump_gdb_cpu: f64,
}

/// Marks the lines the script prints for the benchmark.
const MARK: &str = "KVMGDB-BENCH";
/// gdb gets this long for the whole script.
const GDB_TIMEOUT: Duration = Duration::from_secs(300);

/// The gdb command file: connect, `stepi` N times, dump the pattern, detach.
fn script(kind: Kind, port: u16, n: u32, dump: &Path, from: u64, to: u64) -> String {
    // qemu-system-x86_64 always describes an x86-64 CPU; gdb needs to be told before it
    // connects or it refuses the 'g' reply of a 32-bit guest.
    let arch = match kind {
        Kind::Qemu => "set architecture i386:x86-64\n",
        Kind::Kvmgdb => "",
    };
    format!(
        "set pagination off\n\
         set confirm off\n\
         set width 0\n\
         {arch}\
         target remote 127.0.0.1:{port}\n\
         printf \"{MARK} START %u %u\\n\", (unsigned int)$pc, (unsigned int)$eax\n\
         python import time, resource\n\
         python kb_cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])\n\
         python kb_c0 = kb_cpu(); kb_t0 = time.perf_counter()\n\
         set $kb_i = 0\n\
         while $kb_i < {n}\n\
         stepi\n\
         set $kb_i = $kb_i + 1\n\
         end\n\
         python print(\"{MARK} STEPI %.9f %.9f\" % (time.perf_counter() - kb_t0, kb_cpu() - kb_c0))\n\
         printf \"{MARK} END %u %u\\n\", (unsigned int)$pc, (unsigned int)$eax\n\
         python kb_c0 = kb_cpu(); kb_t0 = time.perf_counter()\n\
         dump binary memory {} {from:#x} {to:#x}\n\
         python print(\"{MARK} DUMP %.9f %.9f\" % (time.perf_counter() - kb_t0, kb_cpu() - kb_c0))\n\
         detach\n",
        dump.display()
    )
}

/// Runs gdb against `stub` (stopped or running; gdb stops it on connect).
pub fn run(
    gdb: &Path,
    stub: &Stub,
    guest: &BenchGuest,
    pattern: &Pattern,
    counts: &Counts,
) -> Result<GdbFigures, BenchError> {
    let tmp = std::env::temp_dir();
    let tag = format!("kvmgdb-bench-{}-{}", std::process::id(), stub.port);
    let script_path = tmp.join(format!("{tag}.gdb"));
    let dump_path = tmp.join(format!("{tag}.bin"));
    let out_path = tmp.join(format!("{tag}.out"));
    let from = guest.pattern.start;
    let to = from + counts.gdb_dump as u64;
    let text = script(stub.kind, stub.port, counts.gdb_stepi, &dump_path, from, to);
    std::fs::write(&script_path, text).map_err(|e| BenchError::Write(script_path.clone(), e))?;
    let out_file =
        std::fs::File::create(&out_path).map_err(|e| BenchError::Write(out_path.clone(), e))?;
    let err_file = out_file
        .try_clone()
        .map_err(|e| BenchError::Write(out_path.clone(), e))?;
    let mut child = Command::new(gdb)
        .args(["-nx", "-batch", "-x"])
        .arg(&script_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_file))
        .stderr(Stdio::from(err_file))
        .spawn()
        .map_err(|e| BenchError::Gdb(format!("cannot run {}: {e}", gdb.display())))?;
    let deadline = Instant::now() + GDB_TIMEOUT;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let dump = std::fs::read(&dump_path).unwrap_or_default();
    for p in [&script_path, &dump_path, &out_path] {
        let _ = std::fs::remove_file(p);
    }
    let tail = || {
        let lines: Vec<&str> = output.lines().filter(|l| !l.starts_with("0x")).collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    };
    match status {
        None => {
            return Err(BenchError::Gdb(format!(
                "did not finish within {GDB_TIMEOUT:?}; its output:\n{}",
                tail()
            )));
        }
        Some(st) if !st.success() => {
            return Err(BenchError::Gdb(format!(
                "exited with {st}; its output:\n{}",
                tail()
            )));
        }
        Some(_) => {}
    }
    let field = |key: &str| -> Option<Vec<f64>> {
        output.lines().find_map(|l| {
            let rest = l.strip_prefix(MARK)?.trim().strip_prefix(key)?;
            rest.split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<Vec<f64>>>()
        })
    };
    let missing = |what: &str| {
        BenchError::Gdb(format!(
            "its output has no {what} line (is gdb built with Python?):\n{}",
            tail()
        ))
    };
    let start = field("START").ok_or_else(|| missing("START"))?;
    let end = field("END").ok_or_else(|| missing("END"))?;
    let stepi = field("STEPI").ok_or_else(|| missing("STEPI"))?;
    let dump_t = field("DUMP").ok_or_else(|| missing("DUMP"))?;
    if stepi.len() < 2 || dump_t.len() < 2 || start.len() < 2 || end.len() < 2 {
        return Err(BenchError::Gdb(format!(
            "malformed marker lines:\n{}",
            tail()
        )));
    }
    let (stepi_s, dump_s) = (stepi[0], dump_t[0]);

    // Verify: the steps moved exactly N instructions, and the dump is the pattern.
    let state = |v: &[f64], what: &str| -> Result<LoopState, BenchError> {
        let pc = v[0] as u64;
        let index = guest.loop_index(pc).ok_or_else(|| {
            BenchError::Verify(format!(
                "gdb {what}: pc {pc:#x} is outside the guest's loop"
            ))
        })?;
        Ok(LoopState {
            index,
            eax: v[1] as u32,
        })
    };
    let before = state(&start, "before stepi")?;
    let after = state(&end, "after stepi")?;
    let want = before.steps(u64::from(counts.gdb_stepi));
    if after != want {
        return Err(BenchError::Verify(format!(
            "gdb: {} stepi went from {before:?} to {after:?}, expected {want:?}",
            counts.gdb_stepi
        )));
    }
    if dump.len() != counts.gdb_dump {
        return Err(BenchError::Verify(format!(
            "gdb dumped {} bytes, expected {}",
            dump.len(),
            counts.gdb_dump
        )));
    }
    pattern
        .verify(from, &dump)
        .map_err(|m| BenchError::Verify(format!("gdb dump: {m}")))?;
    Ok(GdbFigures {
        stepi_per_s: f64::from(counts.gdb_stepi) / stepi_s,
        stepi_gdb_cpu: stepi[1] / stepi_s * 100.0,
        dump_mib_per_s: counts.gdb_dump as f64 / (1 << 20) as f64 / dump_s,
        dump_gdb_cpu: dump_t[1] / dump_s * 100.0,
    })
}
