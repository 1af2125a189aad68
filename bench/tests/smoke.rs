//! The benchmark must not rot: its smoke run (tiny counts, kvmgdb only) drives every figure
//! through real KVM and the real gdb, verifies every answer, and prints the table. Timing
//! is not judged here. Without KVM or gdb this fails rather than skips.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: the smoke run itself takes a few seconds (most of it the guest filling its
/// pattern under an emulating KVM), a debug build somewhat more.
const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn smoke_run_prints_the_table_and_the_samples() {
    let json = std::env::temp_dir().join(format!("kvmgdb-bench-smoke-{}.json", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvmgdb-bench"))
        .args(["--smoke", "--no-qemu", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start kvmgdb-bench");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let samples = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let status = status.unwrap_or_else(|| panic!("kvmgdb-bench --smoke hung; stderr:\n{err}"));
    assert!(
        status.success(),
        "kvmgdb-bench --smoke failed ({status}); stderr:\n{err}\nstdout:\n{out}"
    );
    assert!(
        out.contains("| figure | kvmgdb | QEMU |"),
        "no table header in:\n{out}"
    );
    assert!(
        out.contains("| Ctrl-C → stop reply, 2 vCPUs (µs) |"),
        "no SMP table (--smoke runs it with 1 and 2 vCPUs):\n{out}"
    );
    assert!(
        out.contains("The QEMU column is empty: --no-qemu was given"),
        "the table does not say why the QEMU column is empty:\n{out}"
    );
    for key in [
        "steps_per_s",
        "sw_bp_hits_per_s",
        "gdb_dump_mib_per_s",
        "peak_rss_mib",
        "smp_ctrl_c_to_stop_us",
        "smp_breakpoint_to_stop_us",
        "smp_resume_all_us",
    ] {
        assert!(
            samples.contains(&format!("\"figure\": \"{key}\"")),
            "no {key} sample in the JSON:\n{samples}"
        );
    }
}
