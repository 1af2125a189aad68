//! LLDB as the client (`lldb kernel.elf -o 'gdb-remote ADDR'`): it learns the registers
//! from kvmgdb's target description, and can break, step, read registers and memory.

mod common;

use common::*;

/// Boots `guest_name` and runs LLDB on it with `commands`; returns LLDB's output.
fn lldb_run(test: &str, guest_name: &str, commands: &[&str]) -> String {
    require_kvm();
    require_lldb();
    let dir = TestDir::new(test);
    let k = Kvmgdb::start(&dir, Boot::guest(guest_name));
    k.lldb(&dir, &guest(guest_name), commands)
}

/// The hex value LLDB printed after `name = ` in `text`, e.g. for `address`.
fn value_after(text: &str, name: &str) -> u64 {
    let needle = format!("{name} = 0x");
    let at = text
        .find(&needle)
        .unwrap_or_else(|| panic!("no {needle:?} in output:\n{text}"));
    let hex: String = text[at + needle.len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("bad hex {hex:?}: {e}\n{text}"))
}

/// The part of `text` from the echo of LLDB command `cmd` to the next command.
fn command_output<'a>(text: &'a str, cmd: &str) -> &'a str {
    between(text, &format!("(lldb) {cmd}\n"), "(lldb) ")
}

#[test]
fn lldb_breaks_steps_and_reads_registers_and_memory() {
    let out = lldb_run(
        "lldb-demo",
        "demo.elf",
        &[
            "register read",
            "breakpoint set --address tick",
            "continue",
            "register read rip",
            "stepi",
            "register read rip",
            "memory read --format s --count 1 &message",
            "bt",
        ],
    );
    let text = &out;

    // The general registers at the entry point, by QEMU's names.
    let entry = registers(command_output(text, "register read"));
    for (name, value) in [
        ("rsp", 0x80000),
        ("rsi", 0x7000),
        ("rip", 0x100000),
        ("cr0", 0x8001_0033),
        ("cr3", 0x9000),
        ("cr4", 0x620),
        ("efer", 0x500),
        ("cs", 0x10),
        ("k_gs_base", 0),
    ] {
        assert_eq!(entry.get(name), Some(&value), "{name}; output:\n{text}");
    }

    let tick = value_after(
        command_output(text, "breakpoint set --address tick"),
        "address",
    );
    assert_contains(
        command_output(text, "continue"),
        "stop reason = breakpoint 1.1",
    );
    let rip = value_after(command_output(text, "register read rip"), "rip");
    assert_eq!(rip, tick, "rip at the breakpoint; output:\n{text}");

    let step = text
        .split("(lldb) stepi\n")
        .nth(1)
        .unwrap_or_else(|| panic!("stepi did not run:\n{text}"));
    assert_contains(step, "stop reason = instruction step into");
    let stepped = value_after(command_output(step, "register read rip"), "rip");
    assert!(
        stepped > tick && stepped < tick + 16,
        "rip after stepi: {stepped:#x}, tick at {tick:#x}; output:\n{text}"
    );

    assert_contains(
        command_output(text, "memory read --format s --count 1 &message"),
        "\"hello from the demo guest\"",
    );
    // LLDB unwinds with rbp/rsp/rip: the register roles came out right.
    let bt = command_output(text, "bt");
    assert_contains(bt, "demo.elf`tick");
    assert_contains(bt, "demo.elf`kmain");
}

/// LLDB and gdb show the same values under the same names at the same point of the guest
/// (each on its own, deterministic, run to the first call of `tick`).
#[test]
fn lldb_and_gdb_agree_on_registers() {
    const NAMES: [&str; 15] = [
        "rip",
        "rsp",
        "rbp",
        "rsi",
        "rdi",
        "eflags",
        "cs",
        "ss",
        "fs_base",
        "k_gs_base",
        "cr0",
        "cr3",
        "cr4",
        "efer",
        "mxcsr",
    ];
    let list = NAMES.join(" ");

    let read = format!("register read {list}");
    let from_lldb = lldb_run(
        "lldb-agree",
        "demo.elf",
        &["breakpoint set --address tick", "continue", &read],
    );
    let lldb_regs = registers(command_output(&from_lldb, &read));

    require_gdb();
    let dir = TestDir::new("gdb-agree");
    let k = Kvmgdb::start(&dir, Boot::guest("demo.elf"));
    let info = format!("info registers {list}");
    let from_gdb = k.gdb_ex(
        &dir,
        &guest("demo.elf"),
        &["break *tick", "continue", &info],
    );
    let gdb_regs = registers(&from_gdb);

    for name in NAMES {
        let (l, g) = (lldb_regs.get(name), gdb_regs.get(name));
        assert!(l.is_some(), "LLDB did not show {name}:\n{from_lldb}");
        assert_eq!(
            l, g,
            "{name}: LLDB and gdb differ\nLLDB:\n{from_lldb}\ngdb:\n{from_gdb}"
        );
    }
}

#[test]
fn lldb_debugs_a_32bit_kernel() {
    let out = lldb_run(
        "lldb-multiboot",
        "multiboot.elf",
        &[
            "register read eip eax ebx cr0",
            "breakpoint set --address mb_tick",
            "continue",
            "register read eip",
            "memory read --format x --size 4 --count 1 &mb_magic",
        ],
    );
    let text = &out;
    let entry = registers(command_output(text, "register read eip eax ebx cr0"));
    assert_eq!(entry.get("eax"), Some(&0x2bad_b002), "{text}");
    assert_eq!(entry.get("ebx"), Some(&0x6000), "{text}");
    assert_eq!(entry.get("cr0"), Some(&0x11), "{text}");
    let mb_tick = value_after(
        command_output(text, "breakpoint set --address mb_tick"),
        "address",
    );
    assert_contains(
        command_output(text, "continue"),
        "stop reason = breakpoint 1.1",
    );
    assert_eq!(
        value_after(command_output(text, "register read eip"), "eip"),
        mb_tick,
        "{text}"
    );
    assert_contains(
        command_output(text, "memory read --format x --size 4 --count 1 &mb_magic"),
        "0x2badb002",
    );
}
