//! Debugging a running guest with the real gdb: breakpoints, registers, single steps,
//! memory and register writes. Each test boots its own kvmgdb and runs one script from
//! `gdb-scripts/`, then checks gdb's output.

mod common;

use common::*;

#[test]
fn break_by_name_continue_and_backtrace() {
    let out = demo_session("break-continue", "break-continue.gdb");
    assert_contains(&out, "Breakpoint 1 at 0x");
    assert_contains(&out, "\nBreakpoint 1, tick () at ");
    let bt = section(&out, "bt");
    let frames: Vec<&str> = bt.lines().collect();
    assert_eq!(frames.len(), 3, "backtrace:\n{bt}");
    assert!(frames[0].starts_with("#0  tick () at "), "backtrace:\n{bt}");
    assert!(
        frames[1].starts_with("#1  0x") && frames[1].contains(" in kmain ("),
        "backtrace:\n{bt}"
    );
    assert!(
        frames[2].starts_with("#2  0x") && frames[2].contains(" in _start () at "),
        "backtrace:\n{bt}"
    );
}

#[test]
fn info_registers_at_a_breakpoint() {
    let out = demo_session("info-registers", "info-registers.gdb");
    let regs = registers(&section(&out, "regs"));
    for name in [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs",
    ] {
        assert!(regs.contains_key(name), "no {name} in:\n{out}");
    }
    let w = tagged_one(&out, "where");
    assert_eq!(regs["rip"], w["tick"], "rip is not &tick:\n{out}");
    assert_eq!(w["rip"], w["tick"], "$rip is not &tick:\n{out}");
    assert_eq!(w["pc"], w["tick"], "$pc is not &tick:\n{out}");
    assert_contains(&out, "<tick>");

    let s = tagged_one(&out, "stack");
    assert_eq!(regs["rsp"], s["rsp"]);
    assert!(
        s["bottom"] <= s["rsp"] && s["rsp"] < s["top"],
        "rsp outside the demo's stack:\n{out}"
    );
    // RBP is the frame pointer of kmain (the guests keep frame pointers): on the same stack.
    assert!(
        s["bottom"] <= regs["rbp"] && regs["rbp"] < s["top"],
        "rbp outside the demo's stack:\n{out}"
    );

    const EFLAGS_FIXED_1: u64 = 1 << 1; // bit 1 always reads as 1 (SDM vol. 1, 3.4.3)
    const EFLAGS_IF: u64 = 1 << 9;
    const EFLAGS_TF: u64 = 1 << 8;
    let eflags = regs["eflags"];
    assert_ne!(eflags & EFLAGS_FIXED_1, 0, "eflags {eflags:#x}:\n{out}");
    assert_eq!(
        eflags & EFLAGS_IF,
        0,
        "the demo never enables interrupts:\n{out}"
    );
    assert_eq!(
        eflags & EFLAGS_TF,
        0,
        "the debugger's TF leaked into eflags:\n{out}"
    );
    assert!(eflags < 1 << 22, "eflags {eflags:#x} has reserved bits set");

    // Flat long-mode segments at CPL0: nonzero selectors with RPL 0.
    for seg in ["cs", "ss", "ds"] {
        let sel = regs[seg];
        assert!(
            sel != 0 && sel & 3 == 0 && sel < 0x10000,
            "{seg}={sel:#x}:\n{out}"
        );
    }
    assert_ne!(regs["cs"], regs["ss"], "cs and ss share a selector:\n{out}");
}

/// Checks each `step pc=… want=…` line of a stepping script.
fn assert_steps(
    out: &str,
    tag: &str,
    count: usize,
) -> Vec<std::collections::BTreeMap<String, u64>> {
    let steps = tagged(out, tag);
    assert_eq!(steps.len(), count, "expected {count} {tag:?} lines:\n{out}");
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(
            s["pc"], s["want"],
            "{tag} line {i}: pc={:#x}, expected {:#x}; output:\n{out}",
            s["pc"], s["want"]
        );
    }
    steps
}

#[test]
fn stepi_through_the_step_sequence() {
    let out = demo_session("stepi-sequence", "stepi-sequence.gdb");
    assert_contains(&out, "Breakpoint 1, step_sequence () at ");
    let steps = assert_steps(&out, "step", 7);
    // The labels are where guests/README.md says they are: step_1 + 0, 1, 6, 10, 11, 14, 18.
    let base = steps[0]["want"];
    let offsets: Vec<u64> = steps.iter().map(|s| s["want"] - base).collect();
    assert_eq!(offsets, [0, 1, 6, 10, 11, 14, 18], "output:\n{out}");
    assert_eq!(
        steps[2]["rax"] & 0xffff_ffff,
        0x1234,
        "after mov $0x1234,%eax"
    );
    assert_eq!(steps[3]["dx"], 0x80, "after mov $0x80,%dx");
    assert_eq!(steps[5]["rax"] & 0xffff_ffff, 0x1235, "after inc %rax");
    assert_eq!(steps[6]["rax"], 0x1236, "after add $1,%rax");
}

#[test]
fn stepi_over_port_io_with_a_breakpoint_on_it() {
    let out = demo_session("stepi-port-io", "stepi-port-io.gdb");
    assert_contains(&out, "Breakpoint 1, ");
    let at = tagged_one(&out, "at");
    assert_eq!(at["pc"], at["want"], "not stopped at step_4:\n{out}");
    // One stepi from the `out` lands on step_5 (not step_6), the next on step_6.
    assert_steps(&out, "stepped", 2);
}

#[test]
fn read_memory_at_higher_half_addresses() {
    require_kvm_and_gdb();
    let dir = TestDir::new("higher-half");
    let mut k = Kvmgdb::start_tcp(&dir, Boot::guest("higher_half.elf"));
    // The script ends on an error by design (reading an unmapped page).
    let out = k.gdb_unchecked(&dir, &["higher-half.gdb"], &guest("higher_half.elf"));
    assert_contains(&out, "Breakpoint 1, hh_main () at ");
    assert_contains(&out, "Breakpoint 2, hh_tick () at ");
    let w = tagged_one(&out, "where");
    assert_eq!(w["pc"], w["hh_tick"]);
    assert!(
        w["pc"] >= 0xffff_ffff_8000_0000,
        "not a higher-half pc:\n{out}"
    );

    let message = section(&out, "message");
    assert!(
        message.starts_with("0xffffffff8")
            && message.contains(" <hh_message>:\t\"virtual is not physical\""),
        "x/s hh_message:\n{out}"
    );
    let bytes = section(&out, "bytes");
    let lines: Vec<&str> = bytes.lines().collect();
    assert_eq!(lines.len(), 2, "x/16xb &hh_message:\n{out}");
    // "virtual is not p"
    assert!(
        lines[0].ends_with("<hh_message>:\t0x76\t0x69\t0x72\t0x74\t0x75\t0x61\t0x6c\t0x20"),
        "x/16xb &hh_message:\n{out}"
    );
    assert!(
        lines[1].ends_with("<hh_message+8>:\t0x69\t0x73\t0x20\t0x6e\t0x6f\t0x74\t0x20\t0x70"),
        "x/16xb &hh_message:\n{out}"
    );
    let page = section(&out, "4k");
    assert_eq!(
        page,
        "0xffffffffc0000000:\t0x34\t0x4b\t0x50\t0x41\t0x47\t0x45\t0x21\t0x21\n\
         0xffffffffc0000000:\t\"4KPAGE!!\"\n",
        "x/8xb hh_4k_virt, x/s hh_4k_virt:\n{out}"
    );
    // The next 4 KiB page has no mapping; that error, and only that one, ends the script.
    let unmapped = section(&out, "unmapped");
    assert!(
        unmapped.starts_with("0xffffffffc0001000:\t")
            && unmapped.contains("higher-half.gdb:")
            && unmapped.contains(": Error in sourced command file:\n")
            && unmapped.contains("\nCannot access memory at address 0xffffffffc0001000\n"),
        "x/xb on an unmapped page:\n{out}"
    );
    assert_eq!(
        out.matches("Error in sourced command file").count(),
        1,
        "output:\n{out}"
    );
    assert_contains(&out, "\n[Inferior 1 (process 1) detached]\n");
    assert!(
        k.is_running(),
        "kvmgdb ended after gdb detached:\n{}",
        k.stderr()
    );
    assert_contains(&k.serial_output(), "kvmgdb higher-half guest\n");
    assert_not_contains(&k.serial_output(), "does not map");
}

#[test]
fn set_var_writes_memory_and_registers() {
    let out = demo_session("set-var", "set-var.gdb");
    assert_eq!(
        tagged_one(&out, "memory")["counter"],
        1001,
        "output:\n{out}"
    );
    assert_contains(&out, "<message>:\t\"Jello from the demo guest\"");
    assert!(
        out.lines()
            .any(|l| l.starts_with('$') && l.ends_with(" = 0x1234")),
        "p/x $rax after set var $rax = 0x1234:\n{out}"
    );
    assert_eq!(
        tagged_one(&out, "after-stepi")["rax"],
        0x1234,
        "output:\n{out}"
    );
    let after = tagged_one(&out, "after-continue");
    assert_eq!(after["r12"], 0x1122_3344_5566_7788, "output:\n{out}");
    assert_eq!(after["counter"], 1002, "output:\n{out}");
}

#[test]
fn hardware_breakpoint() {
    let out = demo_session("hbreak", "hbreak.gdb");
    assert_contains(&out, "Hardware assisted breakpoint 1 at 0x");
    assert_eq!(
        out.matches("\nBreakpoint 1, tick () at ").count(),
        3,
        "expected three hits at tick:\n{out}"
    );
    let counters: Vec<u64> = tagged(&out, "hit").iter().map(|h| h["counter"]).collect();
    assert_eq!(counters, [0, 1, 2], "output:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("1       hw breakpoint  keep y ") && l.contains(" in tick at ")),
        "info breakpoints:\n{out}"
    );
    assert_contains(&out, "\tbreakpoint already hit 3 times");
}

#[test]
fn breakpoint_hit_twenty_times_in_a_loop() {
    let out = demo_session("breakpoint-loop", "breakpoint-loop.gdb");
    let hits = tagged(&out, "hit");
    assert_eq!(hits.len(), 21, "output:\n{out}");
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h["i"], i as u64);
        assert_eq!(h["counter"], i as u64, "hit {i}: output:\n{out}");
        assert_eq!(h["bp_loop_hits"], i as u64, "hit {i}: output:\n{out}");
    }
    assert_eq!(out.matches("\nBreakpoint 1, tick () at ").count(), 21);
}
