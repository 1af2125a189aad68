//! Watchpoints with the real gdb: any length, any number, reads only for `rwatch`,
//! accesses straddling the range, and code running from a watched page.

mod common;

use common::*;

#[test]
fn watch_a_256_byte_struct_in_hardware() {
    let out = demo_session("watch-struct", "watch-struct.gdb");
    assert_contains(&out, "Hardware watchpoint 2: big_struct");
    assert_not_contains(&out, "Software watchpoint");
    let hits = tagged(&out, "hit");
    assert_eq!(hits.len(), 3, "{out}");
    for (i, h) in hits.iter().enumerate() {
        // Stopped right after the store: the word for this counter holds the counter.
        assert_eq!(h["word"], h["counter"], "{out}");
        if i > 0 {
            assert_eq!(h["counter"], hits[i - 1]["counter"] + 1, "{out}");
        }
    }
    assert_contains(
        &out,
        "hw watchpoint  keep y                      big_struct",
    );
}

#[test]
fn six_watchpoints_at_once() {
    let out = demo_session("watch-six", "watch-six.gdb");
    for i in 0..6 {
        assert_contains(&out, &format!("Hardware watchpoint {}: watch6[{i}]", i + 2));
    }
    assert_not_contains(&out, "Software watchpoint");
    assert_not_contains(&out, "Could not insert");
    // Every stop is one of ours, reported with the element that changed; by the sixteenth
    // stop the guest has written every element at least once.
    let stops = tagged(&out, "stop");
    assert_eq!(stops.len(), 16, "{out}");
    for i in 0..6 {
        let shown = format!("\nHardware watchpoint {}: watch6[{i}]\n\nOld value", i + 2);
        assert_contains(&out, &shown);
    }
}

#[test]
fn read_watchpoints_fire_on_reads_only() {
    let out = demo_session("watch-read", "watch-read.gdb");
    assert_contains(&out, "Hardware read watchpoint 2: write_only_word");
    assert_contains(&out, "Hardware read watchpoint 3: read_only_word");
    let stops = tagged(&out, "stop");
    assert_eq!(stops.len(), 3, "{out}");
    assert_eq!(
        out.matches("\nHardware read watchpoint 3: read_only_word\n\nValue = 42\n")
            .count(),
        3,
        "{out}"
    );
    assert_not_contains(
        &out,
        "\nHardware read watchpoint 2: write_only_word\n\nValue",
    );
    // One read per loop iteration: consecutive stops are one tick apart.
    assert_eq!(stops[1]["counter"], stops[0]["counter"] + 1, "{out}");
    assert_eq!(stops[2]["counter"], stops[1]["counter"] + 1, "{out}");
}

#[test]
fn an_access_straddling_the_watched_range_hits() {
    let out = demo_session("watch-straddle", "watch-straddle.gdb");
    assert_contains(
        &out,
        "Hardware watchpoint 2: *((unsigned char *)&straddle_word + 7)",
    );
    let stops = tagged(&out, "stop");
    assert_eq!(stops.len(), 2, "{out}");
    for s in &stops {
        assert_eq!(s["byte"], s["counter"] & 0xff, "{out}");
    }
    assert_eq!(stops[1]["counter"], stops[0]["counter"] + 1, "{out}");
}

#[test]
fn code_keeps_running_from_a_watched_page() {
    let out = demo_session("watch-code-page", "watch-code-page.gdb");
    let stops = tagged(&out, "stop");
    assert_eq!(stops.len(), 3, "{out}");
    for (i, s) in stops.iter().enumerate() {
        assert_eq!(s["guest_bp_hits"], 1, "{out}");
        if i > 0 {
            assert_eq!(s["counter"], stops[i - 1]["counter"] + 1, "{out}");
        }
    }
    assert_not_contains(&out, "SIGILL");
    assert_not_contains(&out, "SIGSEGV");
}

#[test]
fn the_guests_own_int3_reaches_its_handler() {
    let out = demo_session("guest-int3", "guest-int3.gdb");
    let hits = tagged(&out, "hits");
    assert_eq!(hits.len(), 2, "{out}");
    for h in &hits {
        assert_eq!(h["guest_bp_hits"], 1, "{out}");
    }
    assert_eq!(hits[1]["counter"], hits[0]["counter"] + 1, "{out}");
    assert_not_contains(&out, "SIGTRAP");
    assert_not_contains(&out, "SIGILL");
}
