//! Breakpoints that need more than a patched byte.

mod common;

use common::*;

#[test]
fn break_on_a_function_the_guest_has_not_mapped_yet() {
    require_kvm_and_gdb();
    let dir = TestDir::new("break-before-paging");
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("higher_half.elf"));
    let out = k.gdb(&dir, "break-before-paging.gdb", &guest("higher_half.elf"));
    assert_not_contains(&out, "Cannot insert breakpoint");
    assert_contains(&out, "\nBreakpoint 1, hh_tick () at ");
    assert_contains(&out, "#1  0xffffffff8");
    let hits = tagged(&out, "hit");
    assert_eq!(hits.len(), 2, "{out}");
    assert_eq!(hits[1]["counter"], hits[0]["counter"] + 1, "{out}");
    assert_contains(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(k.wait_exit(KVMGDB_TIMEOUT), 0, "stderr:\n{}", k.stderr());
}
