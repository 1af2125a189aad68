//! Register layouts with the real gdb: QEMU's names and order, the system registers, writes
//! that reach KVM, vector registers (ymm when the guest has AVX), and the i386 layout for
//! 32-bit kernels.

mod common;

use common::*;
use kvmgdb::gdb::regs::layout::{I386Full, Layout, X86_64Full};
use kvmgdb::gdb::regs::xml::target_xml;

/// Boots `guest_name` and runs `script` in gdb on it; returns gdb's output.
fn gdb_run(test: &str, guest_name: &str, script: &str) -> String {
    require_kvm_and_gdb();
    let dir = TestDir::new(test);
    let k = Kvmgdb::start(&dir, Boot::guest(guest_name));
    k.gdb_unchecked(&dir, &[script], &guest(guest_name))
}

#[test]
fn system_registers_at_entry_and_written_back() {
    let out = gdb_run("system-registers", "demo.elf", "system-registers.gdb");
    let text = &out;
    let (before, rest) = text.split_at(text.find("--- after stepi").unwrap_or(text.len()));
    let at_entry = registers(before);
    for (name, value) in [
        ("cr0", 0x8001_0033),
        ("cr2", 0),
        ("cr3", 0x9000),
        ("cr4", 0x620),
        ("cr8", 0),
        ("efer", 0x500),
        ("fs_base", 0),
        ("gs_base", 0),
        ("k_gs_base", 0),
    ] {
        assert_reg(&at_entry, name, value, text);
    }
    let written = registers(after(rest, "--- after stepi"));
    for (name, value) in [
        ("cr8", 5),
        ("fs_base", 0x1234),
        ("gs_base", 0x4321),
        ("k_gs_base", 0x5678),
    ] {
        assert_reg(&written, name, value, text);
    }
    // QEMU's flag types decode the control registers.
    assert_contains(text, "[ PE MP ET NE WP PG ]");
    assert_contains(text, "[ LME LMA ]");
}

#[test]
fn general_registers_are_mapped_by_name() {
    let out = gdb_run("register-order", "demo.elf", "register-order.gdb");
    let text = &out;
    let entry = registers(&text[..text.find("--- at step_7").unwrap_or(0)]);
    assert_reg(&entry, "rsp", 0x80000, text);
    assert_reg(&entry, "rbp", 0, text);
    assert_reg(&entry, "rsi", 0x7000, text);
    let at_step7 = after(text, "--- at step_7");
    assert_contains(at_step7, "= 0xabc000");
    let after_ret = after(at_step7, "--- after ret");
    assert_contains(after_ret, "= 1");
    let regs = registers(after_ret);
    assert_reg(&regs, "rax", 0x5555, text);
    assert_reg(&regs, "rbp", 0x1234, text);
}

#[test]
fn sse_and_x87_registers_are_written_back() {
    let out = gdb_run("vector-registers", "demo.elf", "vector-registers.gdb");
    let text = &out;
    let (before, rest) = text.split_at(text.find("--- after stepi").unwrap_or(text.len()));
    // Initial configuration: zero xmm, MXCSR 0x1f80, x87 control word 0x37f.
    assert_contains(before, "= {0x0, 0x0}");
    assert_contains(before, "= 0x1f80");
    assert_contains(before, "= 0x37f");
    assert_contains(rest, "= {0x1122334455667788, 0x0}");
    assert_contains(rest, "= {0, 0, 0, -2}");
    assert_contains(rest, "= 0x9f80");
    assert_contains(rest, "= 1.5");
}

/// Whether KVM gives guests AVX state kvmgdb can show, decided from KVM's CPUID directly
/// (independently of kvmgdb's own check): CPUID.1:ECX.XSAVE and .AVX, XCR0 bit 2, and the
/// AVX component at offset 576.
fn kvm_offers_avx() -> bool {
    let kvm = kvm_ioctls::Kvm::new().expect("cannot open /dev/kvm");
    let cpuid = kvm
        .get_supported_cpuid(256)
        .expect("KVM_GET_SUPPORTED_CPUID failed");
    let leaf = |function: u32, index: u32| {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .copied()
    };
    let both = (1 << 26) | (1 << 28);
    leaf(1, 0).is_some_and(|l| l.ecx & both == both)
        && leaf(0xd, 0).is_some_and(|l| l.eax & 4 != 0)
        && leaf(0xd, 2).is_some_and(|l| (l.eax, l.ebx) == (256, 576))
}

#[test]
fn ymm_registers_exactly_when_the_guest_has_avx() {
    require_kvm_and_gdb();
    let dir = TestDir::new("ymm");
    let k = Kvmgdb::start(&dir, Boot::guest("demo.elf"));
    if kvm_offers_avx() {
        let out = k.gdb_unchecked(&dir, &["avx-registers.gdb"], &guest("demo.elf"));
        let rest = after(&out, "--- after stepi");
        assert_contains(rest, "= {1, 2, 3, 4, 5, 6, 7, 8}");
        assert_contains(rest, "= {1, 2, 3, 4}");
        assert_contains(rest, "= {0, 0, 0, -1}");
        assert_contains(rest, "ymm0");
    } else {
        // No AVX in the guest CPUID (e.g. PVM): no ymm registers, and gdb says so.
        eprintln!("KVM offers no AVX to guests: checking that ymm registers are absent");
        let out = k.gdb_ex(
            &dir,
            &guest("demo.elf"),
            &["print $ymm0", "info registers ymm0"],
        );
        assert_contains(&out, "= void");
        assert_contains(&out, "Invalid register `ymm0'");
    }
}

/// A register gdb must number as QEMU does: (name, remote number, offset in the `g` packet).
type Expected = (&'static str, usize, usize);

/// gdb reads each target description kvmgdb can serve without complaint, and numbers its
/// registers as QEMU does; with AVX it builds $ymm0 from xmm0 and ymm0h.
#[test]
fn gdb_accepts_every_target_description() {
    require_gdb();
    let dir = TestDir::new("tdesc");
    let cases: [(&str, String, &[Expected], usize); 4] = [
        // (name, description, registers to check, how many registers)
        (
            "x86_64",
            target_xml::<X86_64Full>(false),
            &[("rip", 16, 128), ("k_gs_base", 26, 180), ("efer", 32, 228)],
            66,
        ),
        (
            "x86_64-avx",
            target_xml::<X86_64Full>(true),
            &[("xmm0", 49, 348), ("mxcsr", 65, 604), ("ymm15h", 81, 848)],
            82,
        ),
        (
            "i386",
            target_xml::<I386Full>(false),
            &[("eip", 8, 32), ("k_gs_base", 18, 72), ("mxcsr", 49, 340)],
            50,
        ),
        (
            "i386-avx",
            target_xml::<I386Full>(true),
            &[("fs_base", 16, 64), ("ymm0h", 50, 344), ("ymm7h", 57, 456)],
            58,
        ),
    ];
    for (name, xml, expect, count) in cases {
        let file = dir.join(&format!("{name}.xml"));
        std::fs::write(&file, &xml).expect("write xml");
        let out = gdb_ex_alone(
            &dir,
            &[
                &format!("set tdesc filename {}", file.display()),
                "maint print remote-registers",
            ],
        );
        let text = &out;
        assert!(
            !text.contains("internal-error") && !text.contains("warning"),
            "{name}: gdb complained:\n{text}"
        );
        // "Name Nr Rel Offset Size Type Rmt-Nr g/G-Offset"
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let remote = rows.iter().filter(|r| r.len() == 8).count();
        assert_eq!(remote, count, "{name}: remote registers:\n{text}");
        for (reg, number, offset) in expect {
            let row = rows
                .iter()
                .find(|r| r.first() == Some(reg))
                .unwrap_or_else(|| panic!("{name}: no {reg}:\n{text}"));
            assert_eq!(
                (row[6], row[7]),
                (number.to_string().as_str(), offset.to_string().as_str()),
                "{name}: {reg}"
            );
        }
        if name.ends_with("avx") {
            assert!(
                rows.iter().any(|r| r.first() == Some(&"ymm0")),
                "{name}: gdb built no $ymm0:\n{text}"
            );
        }
    }
    assert_eq!(X86_64Full::regs().len(), 82);
    assert_eq!(I386Full::regs().len(), 58);
}

#[test]
fn i386_layout_for_32bit_kernels() {
    let out = gdb_run(
        "multiboot-registers",
        "multiboot.elf",
        "multiboot-registers.gdb",
    );
    let text = &out;
    assert!(!text.contains("too long"), "{text}");
    assert!(!text.contains("set architecture"), "{text}");
    let (entry, rest) = text.split_at(text.find("--- at mb_tick").unwrap_or(text.len()));
    assert_contains(entry, "= 1");
    let regs = registers(entry);
    assert_reg(&regs, "cr0", 0x11, text);
    assert_reg(&regs, "cr3", 0, text);
    assert_reg(&regs, "efer", 0, text);
    assert_reg(&regs, "cs", 0x10, text);
    assert!(regs.contains_key("eip"), "{text}");
    let rest = after(rest, "--- at mb_tick");
    assert_contains(rest, "= 0x7000");
    assert_contains(rest, "= 0x2badb002");
    assert_contains(rest, "= 1");
    assert!(registers(rest).contains_key("eip"), "{text}");
}
