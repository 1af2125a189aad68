//! Breakpoints that need more than a patched byte.

mod common;

use common::*;

#[test]
fn break_on_a_function_the_guest_has_not_mapped_yet() {
    let out = guest_session(
        "break-before-paging",
        "higher_half.elf",
        "break-before-paging.gdb",
    );
    assert_not_contains(&out, "Cannot insert breakpoint");
    assert_contains(&out, "\nBreakpoint 1, hh_tick () at ");
    assert_contains(&out, "#1  0xffffffff8");
    let hits = tagged(&out, "hit");
    assert_eq!(hits.len(), 2, "{out}");
    assert_eq!(hits[1]["counter"], hits[0]["counter"] + 1, "{out}");
}
