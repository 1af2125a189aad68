//! The `monitor` commands, driven through the real gdb against real guests on KVM. The
//! command files live in `gdb-scripts/`; each marks its parts with `echo @@name`, and the
//! tests check gdb's output part by part.
//!
//! Each test's directory is kvmgdb's working directory, where `monitor dump` writes
//! relative paths.

mod common;

use common::*;

/// Boots `guest_name`, connects gdb and runs the command files `scripts` in order; checks
/// that they ran to the end and returns gdb's output with kvmgdb, still running.
fn monitor_session(dir: &TestDir, guest_name: &str, scripts: &[&str]) -> (String, Kvmgdb) {
    let k = Kvmgdb::start(dir, Boot::guest(guest_name));
    let out = k.gdb_unchecked(dir, scripts, &guest(guest_name));
    assert!(
        out.contains("@@end"),
        "the command files did not run to the end:\n{out}"
    );
    (out, k)
}

/// The output between `@@name` and the next `@@` marker.
fn part<'a>(out: &'a str, name: &str) -> &'a str {
    between(out, &format!("@@{name}\n"), "@@")
}

/// The value of the first `$N = value` line.
fn value(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix('$').and_then(|r| r.split_once(" = ")))
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("no value in:\n{text}"))
}

/// The function names of a backtrace, innermost first.
fn frames(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let after_in = l.split(" in ").nth(1).unwrap_or(l);
            let name = after_in.split_whitespace().find(|w| !w.starts_with('#'))?;
            Some(name.to_string())
        })
        .collect()
}

#[test]
fn tour_of_the_monitor_on_the_demo() {
    require_kvm_and_gdb();
    let dir = TestDir::new("tour");
    let (out, _k) = monitor_session(&dir, "demo.elf", &["monitor-tour.gdb"]);

    let help = part(&out, "help");
    for cmd in ["info registers", "translate ADDR", "dump FILE", "sstep irq"] {
        assert_contains(help, cmd);
    }

    let regs = part(&out, "registers");
    for want in [
        "CPU#0 64-bit long mode, CPL 0, 4-level paging",
        "RAX=",
        "R15=",
        "RIP=0000000000",
        "RFL=",
        "CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 code64",
        "SS =0018",
        "LDT=",
        "TR =",
        "GDT=     0000000000000500 0000001f",
        "IDT=",
        "CR0=",
        "CR3=0000000000009000",
        "CR4=",
        "CR8=",
        "DR0=",
        "DR7=",
        "EFER=0000000000000500 [LMA LME]",
        "APIC_BASE=",
        "FS_BASE=",
        "KERNEL_GS_BASE=",
    ] {
        assert_contains(regs, want);
    }
    assert!(regs.lines().count() <= 26, "one screen:\n{regs}");

    assert_contains(part(&out, "cpus"), "* CPU #0: pc=0x0000000000100");

    // The boot identity map: 4 GiB of supervisor read/write pages, merged into one range.
    assert_contains(
        part(&out, "mem"),
        "0000000000000000-0000000100000000 0000000100000000 -rwx",
    );
    let tlb = part(&out, "tlb");
    assert_contains(tlb, "0000000000000000: 0000000000000000 ");
    assert_contains(tlb, "… (1792 more pages; 'monitor info tlb 0x20000000'");
    let top = part(&out, "tlb-top");
    assert_contains(top, "00000000ffe00000: 00000000ffe00000 --P-----W 2M");
    assert!(!top.contains("more pages"), "{top}");

    let tr = part(&out, "translate");
    assert_contains(tr, "PML4[0]");
    assert_contains(tr, "PDPT[0]");
    assert_contains(tr, "PD[0]");
    assert_contains(tr, "=> guest-physical 0x10");
    assert_contains(tr, "(2M page at 0x0; supervisor, writable, executable)");
    let tr = part(&out, "translate-unmapped");
    assert_contains(tr, "PDPT[8]");
    assert_contains(
        tr,
        "=> not mapped: the PDPT entry at guest-physical 0xa040 is 0x0",
    );

    let gdt = part(&out, "gdt");
    assert_contains(gdt, "GDT at 0x500, limit 0x1f");
    assert_contains(
        gdt,
        "0x0010  code64     base=0x0000000000000000 limit=0xffffffff DPL=0 P L=1 D=0 G=1",
    );
    assert_contains(gdt, "0x0018  data ");
    // Older demos have no IDT; newer ones install a vector-3 gate for their own int3.
    let idt = part(&out, "idt");
    if !idt.contains("IDT at 0x0, limit 0: empty") {
        assert_contains(idt, "vectors of 16-byte 64-bit gates");
        assert_contains(idt, "0x03 #BP  int-gate64   0x0010:0x0000000000");
        assert_contains(idt, "(255 vectors without a present gate not shown)");
    }

    let msr = part(&out, "msr");
    assert_contains(msr, "MSR 0xc0000080 (EFER) = 0x0000000000000500");
    assert_contains(
        msr,
        "MSR 0xc0000102 (KERNEL_GS_BASE) = 0x0000000000001234 (was 0x0)",
    );
    assert_eq!(
        msr.matches("(KERNEL_GS_BASE) = 0x0000000000001234").count(),
        2,
        "the decimal read sees the write:\n{msr}"
    );

    let kvm = part(&out, "kvm");
    assert_contains(kvm, "KVM API version    12");
    assert_contains(kvm, "sstep irq          on");

    // What Linux's gdb scripts probe with (any non-empty answer means a QEMU-like stub).
    assert_eq!(
        part(&out, "version").trim(),
        format!("kvmgdb {}", env!("CARGO_PKG_VERSION"))
    );

    let sstep = part(&out, "sstep");
    assert_contains(sstep, "sstep irq off: interrupts may be delivered");
    assert_contains(sstep, "sstep irq on: interrupts stay masked");

    let phys = part(&out, "phys");
    assert_contains(phys, "phys on: gdb's addresses are guest-physical");
    assert_contains(phys, "\"hello from the demo guest\"");
    assert_contains(phys, "phys off");

    let reset = part(&out, "reset");
    assert_contains(reset, "machine reset to the boot entry state (RIP=0x100000");
    let values: Vec<&str> = reset
        .lines()
        .filter_map(|l| l.strip_prefix('$').and_then(|r| r.split_once(" = ")))
        .map(|(_, v)| v.trim())
        .collect();
    // $pc == _start, counter back to 0, and the breakpoint still stops at tick.
    assert_eq!(values, ["1", "0", "1"], "{reset}");
    assert_contains(reset, "Breakpoint 1, tick ()");
}

#[test]
fn bad_input_gets_one_line_errors_and_the_session_goes_on() {
    require_kvm_and_gdb();
    let dir = TestDir::new("bad-input");
    let (out, _k) = monitor_session(&dir, "demo.elf", &["monitor-bad-input.gdb"]);
    let expected = [
        "error: \"zzz\" is not an MSR",
        "error: usage: monitor translate ADDR",
        "error: unknown monitor command \"frobnicate\"",
        "error: \"banana\" is not a number",
        "error: \"12ab\" is not a number",
        "error: usage: monitor phys [on|off]",
        "error: usage: monitor sstep irq [on|off]",
        "error: no CPU 7",
        "error: 0x100000000 is too large for an MSR number",
        "error: cannot create /nonexistent-kvmgdb-dir/x.core: No such file or directory",
        "error: usage: monitor reset",
        "error: usage: monitor msr N [VALUE]",
    ];
    for (i, want) in expected.iter().enumerate() {
        let p = part(&out, &(i + 1).to_string());
        let lines: Vec<&str> = p.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for case {}:\n{p}", i + 1);
        assert!(lines[0].starts_with(want), "case {}: {:?}", i + 1, lines[0]);
    }
    let after = part(&out, "after");
    assert_eq!(value(after), "1", "$pc is still at tick:\n{after}");
}

#[test]
fn higher_half_guest_translate_mem_and_core() {
    require_kvm_and_gdb();
    let dir = TestDir::new("higher-half");
    let elf = guest("higher_half.elf");
    let (out, _k) = monitor_session(&dir, "higher_half.elf", &["monitor-higher-half.gdb"]);

    let page = value(part(&out, "phys4k")).to_string();
    assert!(page.starts_with("0x"), "{page}");
    let tr = part(&out, "translate");
    for level in ["PML4[511]", "PDPT[511]", "PD[0]", "PT[0]"] {
        assert_contains(tr, level);
    }
    assert_contains(tr, &format!("=> guest-physical {page} (4K page at {page};"));

    let mem = part(&out, "mem");
    assert_contains(
        mem,
        "0000000000000000-0000000040000000 0000000040000000 -rwx",
    );
    assert!(
        mem.lines().any(|l| l.starts_with("ffffffff80000000-")),
        "the higher half is a range:\n{mem}"
    );
    let tlb = part(&out, "tlb");
    assert_contains(
        tlb,
        &format!(
            "ffffffffc0000000: {:016x} ",
            u64::from_str_radix(&page[2..], 16).expect("hex")
        ),
    );
    assert_contains(tlb, " 4K");

    let live = part(&out, "live");
    assert_contains(part(&out, "dump"), "3 PT_LOAD segments");
    let core = dir.join("hh.core");
    let from_core = gdb_on_core(&dir, "core-higher-half.gdb", &elf, &core);
    let c = part(&from_core, "core");
    assert_eq!(value(c), value(live));
    assert_eq!(frames(c), frames(live));
    assert_eq!(frames(c), ["hh_tick", "hh_main", "hh_start64"]);
    assert_contains(c, "0xffffffffc0000000:\t\"4KPAGE!!\"");
}

#[test]
fn dump_writes_a_core_gdb_reads_like_the_live_guest() {
    require_kvm_and_gdb();
    let dir = TestDir::new("dump");
    let elf = guest("demo.elf");
    let (out, k) = monitor_session(&dir, "demo.elf", &["monitor-dump.gdb"]);
    let live = part(&out, "live");
    assert_eq!(value(live), "2", "counter after three stops at tick");
    let dump = part(&out, "dump");
    let core = dir.join("demo.core");
    assert_contains(dump, &format!("wrote {}: ", core.display()));
    assert_contains(
        dump,
        "ELF64 core, 1 PT_LOAD segments (4-level paging mappings)",
    );
    drop(k);

    let from_core = gdb_on_core(&dir, "core-demo.gdb", &elf, &core);
    let c = part(&from_core, "core");
    assert_eq!(value(c), value(live), "p counter");
    assert_eq!(frames(c), frames(live));
    assert_eq!(frames(c), ["tick", "kmain", "_start"]);
    assert_contains(&from_core, "Program terminated with signal SIGTRAP");
}

#[test]
fn multiboot_guest_registers_and_elf32_core() {
    require_kvm_and_gdb();
    let dir = TestDir::new("multiboot");
    let elf = guest("multiboot.elf");
    let (out, k) = monitor_session(&dir, "multiboot.elf", &["monitor-multiboot.gdb"]);
    let regs = part(&out, "registers");
    assert_contains(regs, "CPU#0 32-bit protected mode, CPL 0, no paging");
    assert_contains(regs, "EAX=");
    assert_contains(regs, "EIP=00100");
    assert_contains(
        regs,
        "CS =0010 0000000000000000 ffffffff 00c09b00 DPL=0 code32",
    );
    assert_contains(
        part(&out, "mem"),
        "paging is disabled (CR0.PG=0): virtual addresses are physical",
    );
    assert_contains(
        part(&out, "translate"),
        "0x100000 is guest-physical 0x100000",
    );
    assert_contains(part(&out, "dump"), "ELF32 core, 1 PT_LOAD segments");
    let live = part(&out, "live");
    drop(k);

    let from_core = gdb_on_core(&dir, "core-multiboot.gdb", &elf, &dir.join("mb.core"));
    let c = part(&from_core, "core");
    assert_eq!(value(c), value(live), "p mb_counter");
    assert_eq!(frames(c), frames(live));
    assert_eq!(frames(c), ["mb_tick", "mb_main", "_start"]);
}

#[test]
fn helper_commands_of_kvmgdb_gdb() {
    require_kvm_and_gdb();
    let dir = TestDir::new("helpers");
    let (out, _k) = monitor_session(
        &dir,
        "higher_half.elf",
        &["kvmgdb.gdb", "monitor-helpers.gdb"],
    );
    let pt = part(&out, "pt");
    assert_contains(pt, "0xffffffffc0000000: 4-level paging");
    assert_contains(pt, "PT[0]");
    assert_contains(pt, "0xffffffff80"); // &hh_counter, evaluated by gdb
    assert!(
        part(&out, "pagetables")
            .lines()
            .any(|l| l.starts_with("ffffffff80000000-"))
    );
    assert_contains(part(&out, "tlb"), "ffffffffc0000000: ");
    assert_contains(part(&out, "gdt"), "code64");
    assert_contains(part(&out, "idt"), "IDT at 0x0");
    assert_contains(part(&out, "sysregs"), "CR3=");
    assert_contains(part(&out, "cpus"), "hardware breakpoint");
    let msr = part(&out, "msr");
    assert_contains(msr, "(EFER) = ");
    assert_contains(msr, "(KERNEL_GS_BASE) = 0x0000000000000042");
    assert_contains(part(&out, "kvm-caps"), "SET_GUEST_DEBUG");
    assert_contains(part(&out, "sstep"), "sstep irq on");
    let phys = part(&out, "phys");
    assert_eq!(phys.matches("\"4KPAGE!!\"").count(), 2, "{phys}");
    assert_contains(part(&out, "coredump"), "helpers.core");
    assert!(dir.join("helpers.core").is_file());
    let reset = part(&out, "reset");
    assert_contains(reset, "hh_entry ()");
    assert_eq!(value(reset), "1", "$pc == hh_entry after kvm-reset");
}
