//! `info registers`: every register of a vCPU on one screen, laid out like QEMU's, with the
//! flag registers decoded. The bits and MSRs themselves are [`crate::x86`]'s.

use super::descriptors::{TableMode, format_segment_register};
use crate::x86::msr::{self, ApicBase};
use crate::x86::{Cr0, Cr4, DEBUG_SLOTS, Dr7, Efer, RFLAGS_IOPL_SHIFT, Rflags, dr7_rw_len};
use bitflags::Flags;
use kvm_bindings::{kvm_debugregs, kvm_regs, kvm_sregs, kvm_vcpu_events};
use std::fmt::Write as _;

/// The names of the set flags of `value`, highest bit first, e.g. `[PG AM WP NE ET MP PE]`.
/// Bits without a name are left out.
fn flag_names<F: Flags<Bits = u64>>(value: u64) -> String {
    let mut names: Vec<&str> = F::from_bits_retain(value)
        .iter_names()
        .map(|(n, _)| n)
        .collect();
    // The flag types declare their bits in ascending order; QEMU lists the highest first.
    names.reverse();
    format!("[{}]", names.join(" "))
}

/// The RFLAGS system flags `info registers` names after QEMU's arithmetic letters.
const RFLAGS_SYSTEM: Rflags = Rflags::TF
    .union(Rflags::IF)
    .union(Rflags::NT)
    .union(Rflags::RF)
    .union(Rflags::VM)
    .union(Rflags::AC)
    .union(Rflags::VIF)
    .union(Rflags::VIP)
    .union(Rflags::ID);

/// RFLAGS as QEMU shows it, `[D O S Z A P C]` with `-` for clear bits, followed by the
/// set system flags and IOPL.
pub fn format_rflags(rflags: u64) -> String {
    let flags = Rflags::from_bits_retain(rflags);
    let letters: String = [
        (Rflags::DF, 'D'),
        (Rflags::OF, 'O'),
        (Rflags::SF, 'S'),
        (Rflags::ZF, 'Z'),
        (Rflags::AF, 'A'),
        (Rflags::PF, 'P'),
        (Rflags::CF, 'C'),
    ]
    .iter()
    .map(|&(flag, c)| if flags.contains(flag) { c } else { '-' })
    .collect();
    let system: Vec<&str> = (flags & RFLAGS_SYSTEM)
        .iter_names()
        .map(|(n, _)| n)
        .collect();
    let mut s = format!("RFL={:08x} [{letters}]", rflags);
    for n in system {
        let _ = write!(s, " {n}");
    }
    let _ = write!(s, " IOPL={}", (rflags >> RFLAGS_IOPL_SHIFT) & 3);
    s
}

/// The enabled debug-register breakpoints in DR7 (SDM 17.2.4), e.g. `DR0:exec/1 DR2:write/4`.
pub fn describe_dr7(dr7: u64) -> String {
    let mut out = Vec::new();
    for i in 0..DEBUG_SLOTS {
        if !Dr7::from_bits_retain(dr7).slot_enabled(i) {
            continue;
        }
        let (rw, len) = dr7_rw_len(dr7, i);
        let rw = ["exec", "write", "io", "rw"][rw as usize];
        let len = [1, 2, 8, 4][len as usize];
        out.push(format!("DR{i}:{rw}/{len}"));
    }
    if out.is_empty() {
        "none enabled".into()
    } else {
        out.join(" ")
    }
}

/// The CPU mode in words, e.g. "64-bit long mode, CPL 0".
pub fn cpu_mode(sregs: &kvm_sregs, rflags: u64) -> String {
    let cpl = sregs.cs.dpl & 3;
    let mode = match TableMode::from_regs(sregs.cr0, sregs.efer) {
        TableMode::Real => return "real mode".into(),
        TableMode::Long if sregs.cs.l != 0 => "64-bit long mode",
        TableMode::Long => "compatibility mode",
        TableMode::Protected if Rflags::from_bits_retain(rflags).contains(Rflags::VM) => {
            "virtual-8086 mode"
        }
        TableMode::Protected if sregs.cs.db != 0 => "32-bit protected mode",
        TableMode::Protected => "16-bit protected mode",
    };
    format!("{mode}, CPL {cpl}")
}

/// Everything `info registers` shows for one vCPU. The optional parts come from extra
/// ioctls and are shown as unavailable when those fail.
pub struct RegisterView<'a> {
    /// vCPU index.
    pub id: usize,
    /// General-purpose registers.
    pub regs: &'a kvm_regs,
    /// System registers.
    pub sregs: &'a kvm_sregs,
    /// DR0–DR3, DR6, DR7.
    pub debug: Option<&'a kvm_debugregs>,
    /// MSRs read, by index (KERNEL_GS_BASE is shown).
    pub msrs: &'a [(u32, u64)],
    /// Pending events.
    pub events: Option<&'a kvm_vcpu_events>,
}

/// The lines of `info registers` for one vCPU: about 24, one screen.
pub fn format_registers(v: &RegisterView<'_>) -> Vec<String> {
    let (r, s) = (v.regs, v.sregs);
    let mode = TableMode::from_regs(s.cr0, s.efer);
    let mut l = vec![format!(
        "CPU#{} {}, {} paging",
        v.id,
        cpu_mode(s, r.rflags),
        crate::x86::paging::PagingRegs {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer
        }
        .mode()
    )];
    if mode == TableMode::Long {
        push_gprs64(&mut l, r);
    } else {
        // Outside IA-32e mode the guest sees only the low halves, as QEMU shows them.
        let gprs = [
            ("EAX", r.rax),
            ("EBX", r.rbx),
            ("ECX", r.rcx),
            ("EDX", r.rdx),
            ("ESI", r.rsi),
            ("EDI", r.rdi),
            ("EBP", r.rbp),
            ("ESP", r.rsp),
        ];
        for row in gprs.chunks(4) {
            let cells: Vec<String> = row
                .iter()
                .map(|(n, v)| format!("{n}={:08x}", *v as u32))
                .collect();
            l.push(cells.join(" "));
        }
        l.push(format!(
            "EIP={:08x} {}",
            r.rip as u32,
            format_rflags(r.rflags).replacen("RFL", "EFL", 1)
        ));
    }
    for (name, seg) in [
        ("ES", &s.es),
        ("CS", &s.cs),
        ("SS", &s.ss),
        ("DS", &s.ds),
        ("FS", &s.fs),
        ("GS", &s.gs),
        ("LDT", &s.ldt),
        ("TR", &s.tr),
    ] {
        l.push(format_segment_register(name, seg, mode));
    }
    l.push(format!("GDT=     {:016x} {:08x}", s.gdt.base, s.gdt.limit));
    l.push(format!("IDT=     {:016x} {:08x}", s.idt.base, s.idt.limit));
    l.push(format!(
        "CR0={:08x} {} CR2={:016x} CR3={:016x}",
        s.cr0,
        flag_names::<Cr0>(s.cr0),
        s.cr2,
        s.cr3
    ));
    l.push(format!(
        "CR4={:08x} {} CR8={:x}",
        s.cr4,
        flag_names::<Cr4>(s.cr4),
        s.cr8
    ));
    match v.debug {
        Some(d) => {
            l.push(format!(
                "DR0={:016x} DR1={:016x} DR2={:016x} DR3={:016x}",
                d.db[0], d.db[1], d.db[2], d.db[3]
            ));
            l.push(format!(
                "DR6={:016x} DR7={:016x} ({})",
                d.dr6,
                d.dr7,
                describe_dr7(d.dr7)
            ));
        }
        None => l.push("DR0-DR7: unavailable (KVM_GET_DEBUGREGS failed)".into()),
    }
    l.push(format!(
        "EFER={:016x} {} APIC_BASE={:016x} {} (APIC at {:#x})",
        s.efer,
        flag_names::<Efer>(s.efer),
        s.apic_base,
        flag_names::<ApicBase>(s.apic_base),
        s.apic_base & msr::APIC_BASE_ADDR_MASK
    ));
    let kgs = v
        .msrs
        .iter()
        .find(|m| m.0 == msr::KERNEL_GS_BASE)
        .map_or("unavailable".to_string(), |m| format!("{:016x}", m.1));
    l.push(format!(
        "FS_BASE={:016x} GS_BASE={:016x} KERNEL_GS_BASE={kgs}",
        s.fs.base, s.gs.base
    ));
    if let Some(e) = v.events {
        l.push(format_events(e));
    }
    l
}

/// The 64-bit general-purpose registers four to a line, then RIP and RFLAGS.
fn push_gprs64(l: &mut Vec<String>, r: &kvm_regs) {
    let gprs = [
        ("RAX", r.rax),
        ("RBX", r.rbx),
        ("RCX", r.rcx),
        ("RDX", r.rdx),
        ("RSI", r.rsi),
        ("RDI", r.rdi),
        ("RBP", r.rbp),
        ("RSP", r.rsp),
        ("R8 ", r.r8),
        ("R9 ", r.r9),
        ("R10", r.r10),
        ("R11", r.r11),
        ("R12", r.r12),
        ("R13", r.r13),
        ("R14", r.r14),
        ("R15", r.r15),
    ];
    for row in gprs.chunks(4) {
        let cells: Vec<String> = row.iter().map(|(n, v)| format!("{n}={v:016x}")).collect();
        l.push(cells.join(" "));
    }
    l.push(format!("RIP={:016x} {}", r.rip, format_rflags(r.rflags)));
}

/// Pending and injected events, interrupt shadow and NMI masking in one line.
fn format_events(e: &kvm_vcpu_events) -> String {
    /// KVM_X86_SHADOW_INT_MOV_SS and KVM_X86_SHADOW_INT_STI (KVM API, KVM_GET_VCPU_EVENTS).
    const SHADOW_MOV_SS: u8 = 1;
    const SHADOW_STI: u8 = 2;
    let mut parts = Vec::new();
    let ex = &e.exception;
    if ex.injected != 0 || ex.pending != 0 {
        let mut s = format!(
            "exception {} {}",
            ex.nr,
            if ex.pending != 0 {
                "pending"
            } else {
                "injected"
            }
        );
        if ex.has_error_code != 0 {
            let _ = write!(s, " (error code {:#x})", ex.error_code);
        }
        parts.push(s);
    }
    if e.interrupt.injected != 0 {
        parts.push(format!("interrupt {:#x} injected", e.interrupt.nr));
    }
    if e.interrupt.shadow & SHADOW_STI != 0 {
        parts.push("STI shadow".into());
    }
    if e.interrupt.shadow & SHADOW_MOV_SS != 0 {
        parts.push("MOV-SS shadow".into());
    }
    if e.nmi.pending != 0 || e.nmi.injected != 0 {
        parts.push("NMI pending".into());
    }
    if e.nmi.masked != 0 {
        parts.push("NMIs masked".into());
    }
    if e.smi.smm != 0 {
        parts.push("in SMM".into());
    }
    if e.triple_fault.pending != 0 {
        parts.push("triple fault pending".into());
    }
    if parts.is_empty() {
        "events: none pending".into()
    } else {
        format!("events: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_segment;

    #[test]
    fn rflags_like_qemu() {
        assert_eq!(format_rflags(0x2), "RFL=00000002 [-------] IOPL=0");
        assert_eq!(format_rflags(0x246), "RFL=00000246 [---Z-P-] IF IOPL=0");
        assert_eq!(
            format_rflags(0x3_3c95),
            "RFL=00033c95 [DOS-APC] RF VM IOPL=3"
        );
    }

    #[test]
    fn dr7_decoding() {
        assert_eq!(describe_dr7(0x400), "none enabled");
        // DR0 local exec len 1; DR2 global write len 4 (SDM Figure 17-1).
        let dr7 = 0x400 | 1 | (0b10 << 4) | (0b01 << 24) | (0b11 << 26);
        assert_eq!(describe_dr7(dr7), "DR0:exec/1 DR2:write/4");
    }

    #[test]
    fn one_screen_for_a_long_mode_cpu() {
        let seg = |selector, type_, l| kvm_segment {
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            s: 1,
            l,
            g: 1,
            ..Default::default()
        };
        let sregs = kvm_sregs {
            cs: seg(0x10, 0xb, 1),
            ds: seg(0x18, 0x3, 0),
            ss: seg(0x18, 0x3, 0),
            cr0: 0x8005_0033,
            cr3: 0x9000,
            cr4: 0x620,
            efer: 0x500,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        let regs = kvm_regs {
            rip: 0x10_0000,
            rflags: 0x2,
            rsp: 0x8_0000,
            ..Default::default()
        };
        let debug = kvm_debugregs {
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            ..Default::default()
        };
        let lines = format_registers(&RegisterView {
            id: 0,
            regs: &regs,
            sregs: &sregs,
            debug: Some(&debug),
            msrs: &[(msr::KERNEL_GS_BASE, 0x1234)],
            events: Some(&kvm_vcpu_events::default()),
        });
        assert!(lines.len() <= 25, "{}", lines.len());
        let text = lines.join("\n");
        for want in [
            "CPU#0 64-bit long mode, CPL 0, 4-level paging",
            "RSP=0000000000080000",
            "RIP=0000000000100000 RFL=00000002",
            "CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 code64 [-RA]",
            "GDT=     0000000000000000 00000000",
            "CR0=80050033 [PG AM WP NE ET MP PE]",
            "CR4=00000620 [OSXMMEXCPT OSFXSR PAE]",
            "DR7=0000000000000400 (none enabled)",
            "EFER=0000000000000500 [LMA LME]",
            "APIC_BASE=00000000fee00900 [EN BSP] (APIC at 0xfee00000)",
            "KERNEL_GS_BASE=0000000000001234",
            "events: none pending",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
