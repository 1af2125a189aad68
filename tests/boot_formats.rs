//! Boot formats and the firmware data on real KVM, with guests of our own (`guests/`):
//! the Multiboot2 guest walks its boot information and the Multiboot v1 guest its modules,
//! both check the BIOS Data Area and the ACPI tables, the mptable guests the MP table,
//! and print what they found on COM1;
//! these tests compare that with what the boot request (in-process, or the QEMU command
//! line's `-append` and `-initrd`) asked for. A gdb session checks the Multiboot2 entry
//! state, the ioapic_route guest where the PIT's interrupts arrive, and `iasl` disassembles
//! the ACPI tables.

mod common;
mod vmm_support;

use common::*;
use kvmgdb::boot::{self, BootRequest, MemWrite, Module};
use kvmgdb::platform::{ACPI_AREA_END, ACPI_RSDP, IOAPIC_BASE, MP_TABLE, PIT_GSI};
use kvmgdb::vmm::MachineConfig;
use kvmgdb::vmm::stop::VcpuStop;
use std::process::Command;
use vmm_support::{Guest, exit_status};

/// RAM of the machines here (the guests need little).
const RAM: u64 = 32 << 20;
/// The status of a guest whose checks all passed (`debug_exit(0x10)`).
const GUEST_OK: u32 = 0x10;

fn guest_image(name: &str) -> (String, Vec<u8>) {
    let path = guest(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path.display().to_string(), bytes)
}

/// Two modules: a string with arguments (QEMU's `-initrd "mod args"`) and a binary blob.
fn modules() -> Vec<Module> {
    vec![
        Module {
            cmdline: "/boot/mod-a.bin arg1 arg2=x".into(),
            data: b"MODULE-A payload".to_vec(),
        },
        Module {
            cmdline: "mod-b".into(),
            data: vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
        },
    ]
}

/// Boots `req` on one vCPU, runs it to its exit and returns what it printed; fails unless
/// it exits with [`GUEST_OK`].
fn run(req: &BootRequest) -> (boot::BootPlan, String) {
    run_on(req, 1)
}

/// [`run`] on a machine of `vcpus` vCPUs: the boot processor runs, the others wait for
/// a start-up IPI.
fn run_on(req: &BootRequest, vcpus: usize) -> (boot::BootPlan, String) {
    require_kvm();
    let plan = boot::plan(req).expect("plan");
    let mut g: Guest = vmm_support::boot_machine(req, MachineConfig::new(req.ram_size, vcpus));
    let ev = g.cont();
    let out = g.serial.text();
    assert_eq!(
        ev.stop,
        VcpuStop::Exit(exit_status(GUEST_OK)),
        "guest output:\n{out}"
    );
    (plan, out)
}

/// Where the modules land: page aligned from the end of the kernel, one after the other.
fn module_addresses(plan: &boot::BootPlan, modules: &[Module]) -> Vec<(u64, u64)> {
    let mut at = plan.info.kernel_end.next_multiple_of(4096);
    modules
        .iter()
        .map(|m| {
            let r = (at, at + m.data.len() as u64);
            at = r.1.next_multiple_of(4096);
            r
        })
        .collect()
}

/// The first bytes of `data` as the guests print them.
fn peek(data: &[u8]) -> String {
    let hex: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
    hex.join(" ")
}

/// What both guests print of the firmware data, for a machine of `cpus` CPUs.
fn assert_firmware_lines(out: &str, cpus: usize) {
    assert_contains(out, "failures: 0\n");
    assert_contains(out, "bda: com1=0x3f8 ebda=0x9fc0 base_kib=639\n");
    assert_contains(out, "rsdp: at 0xe0000 revision 2 checksums ok");
    assert_contains(out, "acpi: FACP len=276 checksum ok\n");
    assert_contains(out, "acpi: DSDT checksum ok, \\_S5 package found\n");
    assert_contains(out, &format!("checksum ok cpus={cpus}\n"));
}

#[test]
fn multiboot2_guest_sees_its_boot_information() {
    let (name, image) = guest_image("multiboot2.elf");
    let modules = modules();
    // The tables list the CPUs of the request (the machine runs one: APs have no start-up
    // protocol yet).
    let req = BootRequest {
        image_name: &name,
        cmdline: "console=ttyS0 loglevel=3",
        modules: &modules,
        vcpus: 3,
        ..BootRequest::new(&image, RAM)
    };
    let (plan, out) = run(&req);
    assert_eq!(plan.info.format, boot::BootFormat::Multiboot2);
    assert_contains(&out, "kvmgdb multiboot2 guest: magic ok\n");
    assert_contains(&out, &format!("cmdline: {name} console=ttyS0 loglevel=3\n"));
    assert_contains(&out, "loader: kvmgdb\n");
    for (m, (start, end)) in modules.iter().zip(module_addresses(&plan, &modules)) {
        let line = format!(
            "module: {start:#x}-{end:#x} {} bytes: {}\n",
            m.cmdline,
            peek(&m.data)
        );
        assert_contains(&out, &line);
    }
    let upper = (RAM - (1 << 20)) >> 10;
    assert_contains(&out, &format!("meminfo: lower=639 upper={upper}\n"));
    let mmap: String = plan
        .memory_map
        .iter()
        .map(|r| format!("mmap: {:#x} {:#x} type {}\n", r.addr, r.size, r.kind as u32))
        .collect();
    assert_contains(&out, &mmap);
    assert_contains(&out, "mmap: 0xe0000 0x10000 type 2\n");
    assert_contains(&out, "rsdp old copy: checksum ok\n");
    assert_contains(&out, "rsdp new copy: checksum ok\n");
    // cmdline, loader name, two modules, meminfo, mmap, two RSDPs, end.
    assert_contains(&out, "tags: 9 ");
    assert_firmware_lines(&out, 3);
}

#[test]
fn multiboot_guest_sees_its_modules() {
    let (name, image) = guest_image("multiboot_mods.elf");
    let modules = modules();
    let req = BootRequest {
        image_name: &name,
        cmdline: "dom0_mem=512M",
        modules: &modules,
        ..BootRequest::new(&image, RAM)
    };
    let (plan, out) = run(&req);
    assert_eq!(plan.info.format, boot::BootFormat::Multiboot);
    assert_contains(&out, &format!("cmdline: {name} dom0_mem=512M\n"));
    assert_contains(&out, "mods_count=2\n");
    for (i, m) in modules.iter().enumerate() {
        let line = format!(
            "module {i}: {} size={} bytes: {}\n",
            m.cmdline,
            m.data.len(),
            peek(&m.data)
        );
        assert_contains(&out, &line);
    }
    assert_firmware_lines(&out, 1);
}

/// The QEMU command line hands the modules over as QEMU does: `-initrd "mod args,mod2"`,
/// each module's string its path and arguments, the command line the kernel's path and
/// `-append`; both Multiboot versions, COM1 on stdout (`-nographic`).
#[test]
fn qemu_command_line_modules() {
    require_kvm();
    let dir = TestDir::new("boot-formats-initrd");
    let modules = modules();
    let paths: Vec<String> = ["a.bin", "b.bin"]
        .iter()
        .zip(&modules)
        .map(|(name, m)| {
            let path = dir.join(name);
            std::fs::write(&path, &m.data).unwrap();
            path.display().to_string()
        })
        .collect();
    let initrd = format!("{} arg1 arg2=x,{}", paths[0], paths[1]);
    let strings = [format!("{} arg1 arg2=x", paths[0]), paths[1].clone()];
    // The guests' line for module i with `string`: multiboot_mods prints its index and
    // size, multiboot2 its address range (checked in-process above).
    let line = |guest_name: &str, i: usize, string: &str, m: &Module| match guest_name {
        "multiboot_mods.elf" => format!(
            "module {i}: {string} size={} bytes: {}\n",
            m.data.len(),
            peek(&m.data)
        ),
        _ => format!(" {string} bytes: {}\n", peek(&m.data)),
    };
    for guest_name in ["multiboot_mods.elf", "multiboot2.elf"] {
        let kernel = guest(guest_name).display().to_string();
        let args = [
            "-kernel",
            &kernel,
            "-append",
            "console=com1",
            "-initrd",
            &initrd,
            "-nographic",
        ];
        let (status, stdout, stderr) = run_kvmgdb(&args, KVMGDB_TIMEOUT);
        assert_eq!(
            status as u32,
            exit_status(GUEST_OK),
            "stderr: {stderr}\n{stdout}"
        );
        assert_contains(&stdout, &format!("cmdline: {kernel} console=com1\n"));
        for (i, (string, m)) in strings.iter().zip(&modules).enumerate() {
            assert_contains(&stdout, &line(guest_name, i, string, m));
        }
        assert_contains(&stdout, "failures: 0\n");
    }
}

/// A loader that took the ELF entry point instead of the entry address tag's would run
/// `mb2_elf_entry`, which exits with another status: the plan enters at `_start`.
#[test]
fn multiboot2_entry_tag_wins_over_the_elf_entry() {
    let (_, image) = guest_image("multiboot2.elf");
    let plan = boot::plan(&BootRequest::new(&image, RAM)).expect("plan");
    let e_entry = u32::from_le_bytes(image[24..28].try_into().unwrap());
    assert_ne!(plan.info.entry, u64::from(e_entry));
    assert_eq!(plan.bsp().regs.rax, 0x36d7_6289);
}

/// The Multiboot2 entry state as gdb shows it, then a breakpoint on the guest's C entry.
#[test]
fn gdb_multiboot2_entry_state() {
    let out = guest_session("multiboot2-entry", "multiboot2.elf", "multiboot2-entry.gdb");
    assert_contains(&out, "$1 = 1\n");
    let regs = registers(&out);
    assert_reg(&regs, "eax", 0x36d7_6289, &out);
    assert_contains(&out, "$2 = 0x10000\n");
    assert_contains(&out, "$3 = 0x11\n");
    let at_main = after(&out, "--- at mb_main");
    assert_contains(at_main, "$4 = 0x36d76289\n");
    assert_contains(at_main, "$5 = 0x10000\n");
    assert_contains(at_main, "$6 = 1\n");
    assert_contains(at_main, "mb_main (magic=");
    assert_contains(at_main, "_start ()");
}

/// The MADT names the I/O APIC pin of the PIT's IRQ 0 from `platform::PIT_GSI` (an
/// override only when it is not 0): the guest routes pins 0 and 2 to two vectors, masks the
/// PICs, runs the PIT at 1 kHz and counts where its interrupts arrive.
#[test]
fn pit_irq0_arrives_on_the_gsi_the_madt_names() {
    let (_, image) = guest_image("ioapic_route.elf");
    let (_, out) = run(&BootRequest::new(&image, RAM));
    let want = match PIT_GSI {
        0 => "pit irq 0: ioapic pin 0 20, pin 2 0\n",
        _ => "pit irq 0: ioapic pin 0 0, pin 2 20\n",
    };
    assert_contains(&out, want);
}

/// The MP table lists the machine's CPUs: the ELF64 and the Multiboot build of the
/// mptable guest find the floating pointer where kernels look for it, check both
/// checksums, and count one enabled processor per vCPU, the BSP being the CPU they run
/// on; the I/O APIC is the platform's and IRQ 0 arrives on the pin the MADT names.
#[test]
fn mp_table_lists_every_vcpu() {
    for name in ["mptable64.elf", "mptable_mb.elf"] {
        let (_, image) = guest_image(name);
        for cpus in [1, 8] {
            let req = BootRequest {
                vcpus: cpus,
                ..BootRequest::new(&image, RAM)
            };
            let (_, out) = run_on(&req, cpus);
            assert_contains(&out, "failures: 0\n");
            assert_contains(
                &out,
                &format!(
                    "mptable: cpus={cpus} bsp=0 buses=1 ioapic={IOAPIC_BASE:#x} irqs=15 irq0_pin={PIT_GSI} lints=2\n"
                ),
            );
            assert_contains(&out, &format!("floating pointer at {MP_TABLE:#x} rev 4"));
        }
    }
}

/// The ACPI tables as a plan writes them, each table by its signature, found by following
/// the RSDP's XSDT and RSDT and the FADT's DSDT and FACS (FIRMWARE_CTRL) pointers (the RSDP itself is not a
/// table `iasl` reads from a file; the unit tests and the guests check it).
fn acpi_tables(cpus: usize) -> Vec<(String, Vec<u8>)> {
    let plan = boot::plan(&BootRequest {
        vcpus: cpus,
        ..BootRequest::new(&guest_image("multiboot2.elf").1, RAM)
    })
    .expect("plan");
    let area = plan
        .writes
        .iter()
        .find_map(|w| match w {
            MemWrite::Bytes { gpa, data } if *gpa == ACPI_RSDP => Some(data.clone()),
            _ => None,
        })
        .expect("the plan writes the ACPI tables at ACPI_RSDP");
    let u32_at = |a: u64, off: u64| {
        let o = (a - ACPI_RSDP + off) as usize;
        u32::from_le_bytes(area[o..o + 4].try_into().unwrap())
    };
    let u64_at = |a: u64, off: u64| {
        let o = (a - ACPI_RSDP + off) as usize;
        u64::from_le_bytes(area[o..o + 8].try_into().unwrap())
    };
    let table = |a: u64| {
        assert!((ACPI_RSDP..ACPI_AREA_END).contains(&a), "table at {a:#x}");
        let o = (a - ACPI_RSDP) as usize;
        let t = area[o..o + u32_at(a, 4) as usize].to_vec();
        (String::from_utf8_lossy(&t[..4]).into_owned(), t)
    };
    let xsdt = u64_at(ACPI_RSDP, 24);
    let mut tables = vec![table(xsdt), table(u32_at(ACPI_RSDP, 16).into())];
    for i in 0..(u32_at(xsdt, 4) as u64 - 36) / 8 {
        tables.push(table(u64_at(xsdt, 36 + 8 * i)));
    }
    let fadt = u64_at(xsdt, 36);
    tables.push(table(u64_at(fadt, 140)));
    tables.push(table(u32_at(fadt, 36).into()));
    tables
}

/// The ACPI tables disassemble with ACPICA's `iasl` without an error, and it reads back
/// the fields the VMM's devices answer to.
#[test]
fn iasl_disassembles_the_acpi_tables() {
    require_iasl();
    let dir = TestDir::new("iasl");
    let mut dsl = String::new();
    for (sig, bytes) in acpi_tables(2) {
        let file = dir.join(&format!("{sig}.dat"));
        std::fs::write(&file, &bytes).unwrap();
        let out = Command::new("iasl")
            .arg("-d")
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .expect("run iasl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d {sig}:\n{text}");
        assert_not_contains(&text, "Error");
        let table = std::fs::read_to_string(dir.join(&format!("{sig}.dsl")))
            .unwrap_or_else(|e| panic!("iasl wrote no {sig}.dsl: {e}\n{text}"));
        assert_not_contains(&table, "Invalid");
        dsl.push_str(&table);
    }
    // The fields, one line after the other, without iasl's "[offset]" columns.
    let fields: String = dsl
        .lines()
        .map(|l| match l.trim_start().strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(l, |(_, f)| f),
            None => l,
        })
        .flat_map(|l| l.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    for field in [
        "Name (\\_S5, Package (0x04) // _S5_: S5 System State { 0x05, 0x05, Zero, Zero })",
        "SCI Interrupt : 0009",
        "SMI Command Port : 00000000",
        "PM1A Event Block Address : 00000600",
        "PM1A Control Block Address : 00000604",
        "PM Timer Block Address : 00000608",
        "Reset Register Supported (V2) : 1",
        "Hardware Reduced (V5) : 0",
        "Reset Register : [Generic Address Structure] Space ID : 01 [SystemIO] Bit Width : 08",
        "Address : 0000000000000CF9",
        "Value to cause reset : 06",
        "FADT Minor Revision : 05",
        "Local Apic Address : FEE00000",
        "PC-AT Compatibility : 1",
        "Subtable Type : 01 [I/O APIC] Length : 0C I/O Apic ID : 00 Reserved : 00 Address : FEC00000 Interrupt : 00000000",
        "Source : 09 Interrupt : 00000009 Flags (decoded below) : 000D Polarity : 1 Trigger Mode : 3",
    ] {
        assert!(fields.contains(field), "iasl shows no {field:?}:\n{dsl}");
    }
    // The SCI's override, and the PIT's when its IRQ 0 is not on GSI 0 (platform::PIT_GSI).
    let pit = format!(
        "Source : 00 Interrupt : {PIT_GSI:08X} Flags (decoded below) : 0005 Polarity : 1 Trigger Mode : 1"
    );
    assert_eq!(fields.contains(&pit), PIT_GSI != 0, "{pit:?} in:\n{dsl}");
    assert_eq!(
        fields.matches("[Interrupt Source Override]").count(),
        1 + usize::from(PIT_GSI != 0),
        "{dsl}"
    );
    assert_eq!(
        fields
            .matches("Subtable Type : 00 [Processor Local APIC]")
            .count(),
        2,
        "{dsl}"
    );
}
