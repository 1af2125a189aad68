//! LLDB as the client (`lldb kernel.elf -o 'gdb-remote ADDR'`): it learns the registers
//! from kvmgdb's target description, and can break, step, read registers and memory.

mod arch_harness;

use arch_harness::{Stub, assert_has, gdb_ex, guest, lldb, registers};

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
fn section<'a>(text: &'a str, cmd: &str) -> &'a str {
    let prompt = format!("(lldb) {cmd}\n");
    let at = text
        .find(&prompt)
        .unwrap_or_else(|| panic!("command {cmd:?} did not run; output:\n{text}"))
        + prompt.len();
    let rest = &text[at..];
    &rest[..rest.find("(lldb) ").unwrap_or(rest.len())]
}

#[test]
fn lldb_breaks_steps_and_reads_registers_and_memory() {
    let elf = guest("demo.elf");
    let stub = Stub::start(&elf);
    let out = lldb(
        &stub,
        &elf,
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
    let text = &out.text;

    // The general registers at the entry point, by QEMU's names.
    let entry = registers(section(text, "register read"));
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

    let tick = value_after(section(text, "breakpoint set --address tick"), "address");
    assert_has(section(text, "continue"), "stop reason = breakpoint 1.1");
    let rip = value_after(section(text, "register read rip"), "rip");
    assert_eq!(rip, tick, "rip at the breakpoint; output:\n{text}");

    let step = text
        .split("(lldb) stepi\n")
        .nth(1)
        .unwrap_or_else(|| panic!("stepi did not run:\n{text}"));
    assert_has(step, "stop reason = instruction step into");
    let stepped = value_after(section(step, "register read rip"), "rip");
    assert!(
        stepped > tick && stepped < tick + 16,
        "rip after stepi: {stepped:#x}, tick at {tick:#x}; output:\n{text}"
    );

    assert_has(
        section(text, "memory read --format s --count 1 &message"),
        "\"hello from the demo guest\"",
    );
    // LLDB unwinds with rbp/rsp/rip: the register roles came out right.
    let bt = section(text, "bt");
    assert_has(bt, "demo.elf`tick");
    assert_has(bt, "demo.elf`kmain");
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
    let elf = guest("demo.elf");
    let list = NAMES.join(" ");

    let stub = Stub::start(&elf);
    let read = format!("register read {list}");
    let from_lldb = lldb(
        &stub,
        &elf,
        &["breakpoint set --address tick", "continue", &read],
    );
    let lldb_regs = registers(section(&from_lldb.text, &read));
    drop(stub);

    let stub = Stub::start(&elf);
    let info = format!("info registers {list}");
    let from_gdb = gdb_ex(&stub, &elf, &["break *tick", "continue", &info]);
    let gdb_regs = registers(&from_gdb.text);

    for name in NAMES {
        let (l, g) = (lldb_regs.get(name), gdb_regs.get(name));
        assert!(l.is_some(), "LLDB did not show {name}:\n{}", from_lldb.text);
        assert_eq!(
            l, g,
            "{name}: LLDB and gdb differ\nLLDB:\n{}\ngdb:\n{}",
            from_lldb.text, from_gdb.text
        );
    }
}

#[test]
fn lldb_debugs_a_32bit_kernel() {
    let elf = guest("multiboot.elf");
    let stub = Stub::start(&elf);
    let out = lldb(
        &stub,
        &elf,
        &[
            "register read eip eax ebx cr0",
            "breakpoint set --address mb_tick",
            "continue",
            "register read eip",
            "memory read --format x --size 4 --count 1 &mb_magic",
        ],
    );
    let text = &out.text;
    let entry = registers(section(text, "register read eip eax ebx cr0"));
    assert_eq!(entry.get("eax"), Some(&0x2bad_b002), "{text}");
    assert_eq!(entry.get("ebx"), Some(&0x6000), "{text}");
    assert_eq!(entry.get("cr0"), Some(&0x11), "{text}");
    let mb_tick = value_after(section(text, "breakpoint set --address mb_tick"), "address");
    assert_has(section(text, "continue"), "stop reason = breakpoint 1.1");
    assert_eq!(
        value_after(section(text, "register read eip"), "eip"),
        mb_tick,
        "{text}"
    );
    assert_has(
        section(text, "memory read --format x --size 4 --count 1 &mb_magic"),
        "0x2badb002",
    );
}
