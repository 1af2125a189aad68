//! gdb against instructions KVM cannot run: one kvmgdb completes, which `stepi` steps over
//! like any other; and one it does not, where the stop is SIGILL at the instruction and the
//! user can move `$pc` past it and continue.

mod common;

use common::*;

#[test]
fn after_sigill_gdb_moves_pc_past_the_instruction_and_continues() {
    let out = demo_session("move-past-internal-error", "move-past-internal-error.gdb");
    let first = tagged_one(&out, "@@first");
    let after = tagged_one(&out, "@@after");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        // PVM's emulator gives up on pxor: SIGILL at it, twice, then past it.
        assert_contains(&out, "SIGILL");
        assert_eq!(first["pc"], 0x400000, "{out}");
        let again = tagged_one(&out, "@@again");
        assert_eq!(
            again["pc"], 0x400000,
            "the same stop, from KVM again:\n{out}"
        );
    } else {
        // Hardware KVM runs it: straight to the breakpoint.
        assert_eq!(first["pc"], 0x400009, "{out}");
    }
    assert_eq!(
        after["pc"], 0x400009,
        "the guest ran on to the breakpoint:\n{out}"
    );
    assert_eq!(
        after["eax"], 42,
        "and ran the instruction after pxor:\n{out}"
    );
}

#[test]
fn stepi_over_a_completed_instruction_ends_after_it_with_its_result() {
    let out = demo_session("stepi-completion", "stepi-completion.gdb");
    let step = tagged_one(&out, "@@step");
    assert_eq!(step["pc"], 0x400005, "one instruction:\n{out}");
    assert_eq!(step["rax"], 16, "popcnt of 0xff00ff:\n{out}");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_contains(&out, "popcnt 1");
    } else {
        assert_contains(&out, "none (every instruction ran in KVM)");
    }
}
