//! The machine a kernel expects, on real KVM: the in-kernel PIC and PIT delivering timer
//! interrupts, COM1's IRQ 4, the RTC, ACPI power-off, the two reset ports, and debugging
//! (software breakpoints, single steps) while the timer fires.

mod vmm_support;

use kvmgdb::vmm::cpuid::{KVM_CPUID_FEATURES, kvm_feature};
use kvmgdb::vmm::stop::VcpuStop;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vmm_support::*;

/// A guest that installs IDT gates for vector 0x20 (IRQ 0, `timer`: counts in `TICKS`) and
/// 0x24 (IRQ 4, `com1`: reads COM1's IIR into `IIR` and counts in `COM1_IRQS`), remaps the
/// PIC to 0x20/0x28 with the master's mask from BL, starts PIT channel 0 in mode 2 with
/// the divisor in SI, writes R8B to COM1's IER, enables interrupts, and spins in `LOOP`
/// (incrementing R9 and R10) until `TICKS` reaches ECX; then exits with status
/// `exit_status(0)`.
#[rustfmt::skip]
const IRQ_GUEST: &[u8] = &[
    0x48, 0x8d, 0x05, 0x87, 0x00, 0x00, 0x00,                               // +0 lea 0x87(%rip),%rax
    0xbf, 0x00, 0x02, 0x20, 0x00,                                           // +7 mov $0x200200,%edi
    0xe8, 0xa9, 0x00, 0x00, 0x00,                                           // +12 call ba <setgate>
    0x48, 0x8d, 0x05, 0x85, 0x00, 0x00, 0x00,                               // +17 lea 0x85(%rip),%rax
    0xbf, 0x40, 0x02, 0x20, 0x00,                                           // +24 mov $0x200240,%edi
    0xe8, 0x98, 0x00, 0x00, 0x00,                                           // +29 call ba <setgate>
    0x66, 0xc7, 0x04, 0x25, 0x00, 0x10, 0x20, 0x00, 0xff, 0x0f,             // +34 movw $0xfff,0x201000
    0x48, 0xc7, 0x04, 0x25, 0x02, 0x10, 0x20, 0x00, 0x00, 0x00, 0x20, 0x00, // +44 movq $0x200000,0x201002
    0x0f, 0x01, 0x1c, 0x25, 0x00, 0x10, 0x20, 0x00,                         // +56 lidt 0x201000
    0xb0, 0x11,                                                             // +64 mov $0x11,%al
    0xe6, 0x20,                                                             // +66 out %al,$0x20
    0xe6, 0xa0,                                                             // +68 out %al,$0xa0
    0xb0, 0x20,                                                             // +70 mov $0x20,%al
    0xe6, 0x21,                                                             // +72 out %al,$0x21
    0xb0, 0x28,                                                             // +74 mov $0x28,%al
    0xe6, 0xa1,                                                             // +76 out %al,$0xa1
    0xb0, 0x04,                                                             // +78 mov $0x4,%al
    0xe6, 0x21,                                                             // +80 out %al,$0x21
    0xb0, 0x02,                                                             // +82 mov $0x2,%al
    0xe6, 0xa1,                                                             // +84 out %al,$0xa1
    0xb0, 0x01,                                                             // +86 mov $0x1,%al
    0xe6, 0x21,                                                             // +88 out %al,$0x21
    0xe6, 0xa1,                                                             // +90 out %al,$0xa1
    0x88, 0xd8,                                                             // +92 mov %bl,%al
    0xe6, 0x21,                                                             // +94 out %al,$0x21
    0xb0, 0xff,                                                             // +96 mov $0xff,%al
    0xe6, 0xa1,                                                             // +98 out %al,$0xa1
    0xb0, 0x34,                                                             // +100 mov $0x34,%al
    0xe6, 0x43,                                                             // +102 out %al,$0x43
    0x66, 0x89, 0xf0,                                                       // +104 mov %si,%ax
    0xe6, 0x40,                                                             // +107 out %al,$0x40
    0x88, 0xe0,                                                             // +109 mov %ah,%al
    0xe6, 0x40,                                                             // +111 out %al,$0x40
    0x66, 0xba, 0xf9, 0x03,                                                 // +113 mov $0x3f9,%dx
    0x44, 0x88, 0xc0,                                                       // +117 mov %r8b,%al
    0xee,                                                                   // +120 out %al,(%dx)
    0xfb,                                                                   // +121 sti
    0x49, 0xff, 0xc1,                                                       // +122 loop: inc %r9
    0x49, 0xff, 0xc2,                                                       // +125 inc %r10
    0x39, 0x0c, 0x25, 0x00, 0x20, 0x20, 0x00,                               // +128 cmp %ecx,0x202000
    0x72, 0xf1,                                                             // +135 jb 7a <loop>
    0xfa,                                                                   // +137 cli
    0x31, 0xc0,                                                             // +138 xor %eax,%eax
    0xe6, 0xf4,                                                             // +140 out %al,$0xf4
    0xff, 0x04, 0x25, 0x00, 0x20, 0x20, 0x00,                               // +142 timer: incl 0x202000
    0x50,                                                                   // +149 push %rax
    0xb0, 0x20,                                                             // +150 mov $0x20,%al
    0xe6, 0x20,                                                             // +152 out %al,$0x20
    0x58,                                                                   // +154 pop %rax
    0x48, 0xcf,                                                             // +155 iretq
    0x50,                                                                   // +157 com1: push %rax
    0x52,                                                                   // +158 push %rdx
    0x66, 0xba, 0xfa, 0x03,                                                 // +159 mov $0x3fa,%dx
    0xec,                                                                   // +163 in (%dx),%al
    0x88, 0x04, 0x25, 0x08, 0x20, 0x20, 0x00,                               // +164 mov %al,0x202008
    0xff, 0x04, 0x25, 0x04, 0x20, 0x20, 0x00,                               // +171 incl 0x202004
    0xb0, 0x20,                                                             // +178 mov $0x20,%al
    0xe6, 0x20,                                                             // +180 out %al,$0x20
    0x5a,                                                                   // +182 pop %rdx
    0x58,                                                                   // +183 pop %rax
    0x48, 0xcf,                                                             // +184 iretq
    0x66, 0x89, 0x07,                                                       // +186 setgate: mov %ax,(%rdi)
    0x66, 0xc7, 0x47, 0x02, 0x10, 0x00,                                     // +189 movw $0x10,0x2(%rdi)
    0x66, 0xc7, 0x47, 0x04, 0x00, 0x8e,                                     // +195 movw $0x8e00,0x4(%rdi)
    0x48, 0xc1, 0xe8, 0x10,                                                 // +201 shr $0x10,%rax
    0x66, 0x89, 0x47, 0x06,                                                 // +205 mov %ax,0x6(%rdi)
    0x48, 0xc1, 0xe8, 0x10,                                                 // +209 shr $0x10,%rax
    0x89, 0x47, 0x08,                                                       // +213 mov %eax,0x8(%rdi)
    0xc7, 0x47, 0x0c, 0x00, 0x00, 0x00, 0x00,                               // +216 movl $0x0,0xc(%rdi)
    0xc3,                                                                   // +223 ret
];
/// Where the guest's counters live.
const TICKS: u64 = 0x20_2000;
const COM1_IRQS: u64 = 0x20_2004;
const IIR: u64 = 0x20_2008;
/// The spin loop: `inc %r9` (+122), `inc %r10` (+125), `cmp` (+128), `jb` (+135).
const LOOP: [u64; 4] = [
    LOAD_ADDR + 122,
    LOAD_ADDR + 125,
    LOAD_ADDR + 128,
    LOAD_ADDR + 135,
];
/// The timer handler's address range (`timer` .. `setgate`).
const HANDLERS: std::ops::Range<u64> = LOAD_ADDR + 142..LOAD_ADDR + 186;
/// PIT input clock (Hz) and divisors.
const PIT_HZ: u64 = 1_193_182;
const DIV_1KHZ: u64 = 1193;
const DIV_10KHZ: u64 = 119;
/// PIC master masks: IRQ 0 only; IRQ 0 and IRQ 4.
const MASK_TIMER: u64 = 0xfe;
const MASK_TIMER_COM1: u64 = 0xee;
/// COM1 IER: transmitter-holding-register-empty interrupt.
const IER_THRE: u64 = 0x02;

fn irq_guest(mask: u64, divisor: u64, ier: u64, ticks: u64) -> Guest {
    let mut g = boot(IRQ_GUEST);
    g.edit_regs(|r| {
        r.rbx = mask;
        r.rsi = divisor;
        r.r8 = ier;
        r.rcx = ticks;
    });
    g
}

#[test]
fn the_pit_interrupts_through_the_pic_at_its_programmed_rate() {
    const WANT: u64 = 50;
    let mut g = irq_guest(MASK_TIMER, DIV_1KHZ, 0, WANT);
    let start = Instant::now();
    let ev = g.cont();
    let took = start.elapsed();
    assert_eq!(
        ev.stop,
        VcpuStop::Exit(exit_status(0)),
        "the guest counted its ticks"
    );
    let ticks = u64::from(g.read_u32(TICKS));
    assert!(ticks >= WANT, "{ticks} ticks");
    // 50 ticks at 1 kHz take 50 ms of wall-clock time: not less (a PIT that runs fast or
    // an interrupt storm), and well under the stop timeout.
    let min = Duration::from_micros(WANT * 1_000_000 * DIV_1KHZ / PIT_HZ * 9 / 10);
    assert!(took >= min, "{ticks} ticks in {took:?}: faster than 1 kHz");
    assert_eq!(
        u64::from(g.read_u32(COM1_IRQS)),
        0,
        "IRQ 4 was masked and not enabled"
    );
}

#[test]
fn com1_raises_irq_4_when_its_transmitter_interrupt_is_enabled() {
    // KVM delivers an irqfd's edge from a workqueue, so it lands some time after the
    // eventfd write: the guest runs 500 ms (500 ticks) to leave it room on a loaded host.
    let mut g = irq_guest(MASK_TIMER_COM1, DIV_1KHZ, IER_THRE, 500);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    assert!(g.read_u32(COM1_IRQS) >= 1, "no IRQ 4");
    // IIR as the handler read it: THR empty (0x2), FIFOs (0xc0); reading it acknowledged
    // the interrupt, so it did not storm.
    assert_eq!(g.read(IIR, 1)[0], 0xc2);
    assert!(
        g.read_u32(COM1_IRQS) < 5,
        "IRQ 4 kept firing after the guest acknowledged it"
    );
}

#[test]
fn breakpoints_and_steps_skip_nothing_and_stay_out_of_the_timer_handler() {
    // A 10 kHz timer that never lets the loop end.
    let mut g = irq_guest(MASK_TIMER, DIV_10KHZ, 0, u64::from(u32::MAX));
    g.vm.add_sw_breakpoint(VCPU, LOOP[1]).expect("breakpoint");
    let mut last_r9 = None;
    for hit in 0..30 {
        let ev = g.cont();
        assert_eq!(ev.stop, VcpuStop::SwBreakpoint(LOOP[1]), "hit {hit}");
        let r = g.regs();
        assert_eq!(r.rip, LOOP[1]);
        // One loop turn per hit: the instruction under the breakpoint ran exactly once.
        assert_eq!(r.r9, r.r10 + 1, "hit {hit}");
        if let Some(l) = last_r9 {
            assert_eq!(
                r.r9,
                l + 1,
                "hit {hit}: an instruction was skipped or rerun"
            );
        }
        last_r9 = Some(r.r9);
    }
    assert!(g.vm.remove_sw_breakpoint(LOOP[1]));
    // Let the timer run, then step through the loop: every step lands on the loop's next
    // instruction, never in the handler, with interrupts pending all the while.
    let ticks_before = g.read_u32(TICKS);
    std::thread::sleep(Duration::from_millis(20));
    g.vm.add_sw_breakpoint(VCPU, LOOP[0]).expect("breakpoint");
    assert_eq!(g.cont().stop, VcpuStop::SwBreakpoint(LOOP[0]));
    assert!(g.vm.remove_sw_breakpoint(LOOP[0]));
    assert!(
        g.read_u32(TICKS) > ticks_before,
        "the timer fired between the hits"
    );
    let r9 = g.regs().r9;
    for i in 0..400 {
        assert_eq!(g.step().stop, VcpuStop::Step, "step {i}");
        let rip = g.rip();
        assert!(
            !HANDLERS.contains(&rip),
            "step {i} went into a handler at {rip:#x}"
        );
        assert_eq!(rip, LOOP[(i + 1) % LOOP.len()], "step {i}");
    }
    assert_eq!(g.regs().r9, r9 + 100, "every inc ran once");
    // The control: with interrupts let in during steps, the same steps do enter the
    // handler, so the check above can fail.
    g.vm.set_step_masks_irq(false);
    std::thread::sleep(Duration::from_millis(5));
    let entered = (0..400).any(|_| {
        g.step();
        HANDLERS.contains(&g.rip())
    });
    assert!(
        entered,
        "400 unmasked steps under a 10 kHz timer never took an interrupt"
    );
}

/// A guest that reads RTC registers 0x00 (indexed with the NMI-mask bit set), 0x00, 0x02,
/// 0x04, 0x07, 0x08, 0x09, 0x32, 0x0a, 0x0b and 0x0d into `RTC_OUT`, then exits.
#[rustfmt::skip]
const RTC_GUEST: &[u8] = &[
    0x48, 0x8d, 0x35, 0x16, 0x00, 0x00, 0x00, // +0 lea 0x16(%rip),%rsi
    0xbf, 0x00, 0x30, 0x20, 0x00,             // +7 mov $0x203000,%edi
    0xb9, 0x0b, 0x00, 0x00, 0x00,             // +12 mov $0xb,%ecx
    0xac,                                     // +17 lods %ds:(%rsi),%al
    0xe6, 0x70,                               // +18 out %al,$0x70
    0xe4, 0x71,                               // +20 in $0x71,%al
    0xaa,                                     // +22 stos %al,%es:(%rdi)
    0xe2, 0xf8,                               // +23 loop 11 <_start+0x11>
    0x31, 0xc0,                               // +25 xor %eax,%eax
    0xe6, 0xf4,                               // +27 out %al,$0xf4
    // +29 regs: the registers read (0x80 | 0: seconds, with the NMI-mask bit set)
    0x80, 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32, 0x0a, 0x0b, 0x0d,
];
const RTC_OUT: u64 = 0x20_3000;

fn bcd(v: u8) -> i64 {
    i64::from(v >> 4) * 10 + i64::from(v & 0xf)
}

/// Seconds since 1970 of a UTC date (days from civil, proleptic Gregorian).
fn unix(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss
}

#[test]
fn the_rtc_reads_back_the_host_time_in_bcd() {
    let mut g = boot(RTC_GUEST);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = g.read(RTC_OUT, 11);
    assert!(
        r[..8].iter().all(|b| b & 0xf < 10 && b >> 4 < 10),
        "not BCD: {r:x?}"
    );
    let year = bcd(r[7]) * 100 + bcd(r[6]);
    let guest = unix(year, bcd(r[5]), bcd(r[4]), bcd(r[3]), bcd(r[2]), bcd(r[1]));
    assert!(
        (host - guest).abs() <= 5,
        "guest {guest}, host {host}: {r:x?}"
    );
    assert!(
        bcd(r[1]) - bcd(r[0]) <= 1,
        "the NMI-mask bit selected another register"
    );
    assert_eq!(r[8] & 0x7f, 0x26, "status A: 32.768 kHz base, 1024 Hz rate");
    assert_eq!(r[9], 0x02, "status B: 24-hour BCD");
    assert_eq!(r[10], 0x80, "status D: valid time");
}

/// A guest that writes SLP_TYP = 5 with SLP_EN (0x3400) to the PM1a control block.
#[rustfmt::skip]
const S5_GUEST: &[u8] = &[
    0x66, 0xba, 0x04, 0x06, // +0 mov $0x604,%dx
    0x66, 0xb8, 0x00, 0x34, // +4 mov $0x3400,%ax
    0x66, 0xef,             // +8 out %ax,(%dx)
    0xeb, 0xf4,             // +10 jmp 0 <_start>
];

#[test]
fn acpi_s5_powers_the_machine_off_with_status_0() {
    let mut g = boot(S5_GUEST);
    assert_eq!(g.cont().stop, VcpuStop::Exit(0));
}

/// A guest that counts its boots in CMOS byte 0x40 (which a reset keeps) and prints 'A',
/// 'B', 'C' on its first, second and third; it resets through 0xcf9 on the first, through
/// the keyboard controller on the second, and exits on the third.
#[rustfmt::skip]
const RESET_GUEST: &[u8] = &[
    0xb0, 0x40,             // +0 mov $0x40,%al
    0xe6, 0x70,             // +2 out %al,$0x70
    0xe4, 0x71,             // +4 in $0x71,%al
    0x88, 0xc3,             // +6 mov %al,%bl
    0xfe, 0xc0,             // +8 inc %al
    0xe6, 0x71,             // +10 out %al,$0x71
    0x66, 0xba, 0xf8, 0x03, // +12 mov $0x3f8,%dx
    0x88, 0xd8,             // +16 mov %bl,%al
    0x04, 0x41,             // +18 add $0x41,%al
    0xee,                   // +20 out %al,(%dx)
    0x80, 0xfb, 0x00,       // +21 cmp $0x0,%bl
    0x74, 0x09,             // +24 je 23 <_start+0x23>
    0x80, 0xfb, 0x01,       // +26 cmp $0x1,%bl
    0x74, 0x0d,             // +29 je 2c <_start+0x2c>
    0x31, 0xc0,             // +31 xor %eax,%eax
    0xe6, 0xf4,             // +33 out %al,$0xf4
    0x66, 0xba, 0xf9, 0x0c, // +35 mov $0xcf9,%dx
    0xb0, 0x06,             // +39 mov $0x6,%al
    0xee,                   // +41 out %al,(%dx)
    0xeb, 0xf7,             // +42 jmp 23 <_start+0x23>
    0xb0, 0xfe,             // +44 mov $0xfe,%al
    0xe6, 0x64,             // +46 out %al,$0x64
    0xeb, 0xfa,             // +48 jmp 2c <_start+0x2c>
];
/// The `cmp $0, %bl` after the guest printed its boot's letter.
const AFTER_PRINT: u64 = LOAD_ADDR + 21;

#[test]
fn resets_by_0xcf9_and_the_keyboard_controller_rerun_the_guest() {
    let mut g = boot(RESET_GUEST);
    // The breakpoint survives each reset and shows every boot.
    g.vm.add_sw_breakpoint(VCPU, AFTER_PRINT)
        .expect("breakpoint");
    for letters in ["A", "AB", "ABC"] {
        let ev = g.cont();
        assert_eq!(ev.stop, VcpuStop::SwBreakpoint(AFTER_PRINT));
        assert_eq!(g.serial.text(), letters);
    }
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
}

#[test]
fn with_no_reboot_a_reset_ends_the_machine_with_status_0() {
    let mut g = boot_configured(RESET_GUEST, |m| m.no_reboot = true);
    assert_eq!(g.cont().stop, VcpuStop::Exit(0));
    assert_eq!(g.serial.text(), "A");
}

/// A guest that stores CPUID leaf 1 EBX and ECX, leaf 0x4000_0000 EBX, ECX and EDX and leaf
/// 0x4000_0001 EAX at `CPUID_OUT`, then exits.
#[rustfmt::skip]
const CPUID_GUEST: &[u8] = &[
    0xb8, 0x01, 0x00, 0x00, 0x00,             // +0 mov $0x1,%eax
    0x0f, 0xa2,                               // +5 cpuid
    0x89, 0x1c, 0x25, 0x00, 0x30, 0x20, 0x00, // +7 mov %ebx,0x203000
    0x89, 0x0c, 0x25, 0x04, 0x30, 0x20, 0x00, // +14 mov %ecx,0x203004
    0xb8, 0x00, 0x00, 0x00, 0x40,             // +21 mov $0x40000000,%eax
    0x0f, 0xa2,                               // +26 cpuid
    0x89, 0x1c, 0x25, 0x08, 0x30, 0x20, 0x00, // +28 mov %ebx,0x203008
    0x89, 0x0c, 0x25, 0x0c, 0x30, 0x20, 0x00, // +35 mov %ecx,0x20300c
    0x89, 0x14, 0x25, 0x10, 0x30, 0x20, 0x00, // +42 mov %edx,0x203010
    0xb8, 0x01, 0x00, 0x00, 0x40,             // +49 mov $0x40000001,%eax
    0x0f, 0xa2,                               // +54 cpuid
    0x89, 0x04, 0x25, 0x14, 0x30, 0x20, 0x00, // +56 mov %eax,0x203014
    0x31, 0xc0,                               // +63 xor %eax,%eax
    0xe6, 0xf4,                               // +65 out %al,$0xf4
];
const CPUID_OUT: u64 = 0x20_3000;
/// CPUID.01H:ECX: CMPXCHG16B and the hypervisor bit.
const ECX_CX16: u32 = 1 << 13;
const ECX_HYPERVISOR: u32 = 1 << 31;

#[test]
fn the_guest_sees_the_hypervisor_leaves_and_only_runnable_features() {
    let mut g = boot(CPUID_GUEST);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    let ecx = g.read_u32(CPUID_OUT + 4);
    assert_eq!(g.read_u32(CPUID_OUT) >> 24, VCPU as u32, "leaf 1 APIC id");
    assert_ne!(ecx & ECX_HYPERVISOR, 0);
    assert_eq!(&g.read(CPUID_OUT + 8, 12), b"KVMKVMKVM\0\0\0");
    let pv = g.read_u32(CPUID_OUT + 0x14);
    assert_eq!(pv, g.vm.cpuid(KVM_CPUID_FEATURES, 0).unwrap().eax);
    if g.vm.machine_facts().pvm {
        // PVM's emulator cannot run `lock cmpxchg16b`; it honours the hidden bit.
        assert_eq!(ecx & ECX_CX16, 0, "CX16 shown on PVM");
        assert_eq!(pv & kvm_feature::PV_UNHALT, 0, "a hypercall feature on PVM");
    }
}

/// A guest that writes EDX:EAX to MSR ECX, then exits; any #GP is a triple fault (the
/// entry IDT is empty).
#[rustfmt::skip]
const WRMSR_GUEST: &[u8] = &[
    0x0f, 0x30, // +0 wrmsr
    0x31, 0xc0, // +2 xor %eax,%eax
    0xe6, 0xf4, // +4 out %al,$0xf4
];

#[test]
fn every_advertised_paravirtual_msr_takes_the_guests_write() {
    use kvm_feature::*;
    // The MSR each feature is driven by, and a value Linux writes to it.
    let area = DATA | 1;
    let msrs = [
        (CLOCKSOURCE2, 0x4b56_4d01, area),
        (STEAL_TIME, 0x4b56_4d03, area),
        (PV_EOI, 0x4b56_4d04, area),
        (ASYNC_PF_INT, 0x4b56_4d05, 0xec),
        (POLL_CONTROL, 0x4b56_4d06, 0),
    ];
    let pv = boot(WRMSR_GUEST)
        .vm
        .cpuid(KVM_CPUID_FEATURES, 0)
        .unwrap()
        .eax;
    let mut tried = 0;
    for (feature, msr, value) in msrs {
        if pv & feature == 0 {
            continue;
        }
        tried += 1;
        let mut g = boot(WRMSR_GUEST);
        g.edit_regs(|r| {
            r.rcx = msr;
            r.rax = value & 0xffff_ffff;
            r.rdx = value >> 32;
        });
        assert_eq!(
            g.cont().stop,
            VcpuStop::Exit(exit_status(0)),
            "wrmsr {msr:#x} (feature {feature:#x} advertised) faulted"
        );
    }
    assert!(
        tried >= 2,
        "kvmclock and steal time at least are advertised"
    );
}

#[test]
fn serial_input_raises_the_receive_interrupt() {
    use std::io::Write;
    /// COM1 IER: received-data interrupt.
    const IER_RDA: u64 = 0x01;
    let mut g = irq_guest(MASK_TIMER_COM1, DIV_1KHZ, IER_RDA, 500);
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    g.vm.attach_serial_input(Box::new(theirs))
        .expect("serial input");
    g.vm.resume(&[(VCPU, false)]).expect("resume");
    ours.write_all(b"x").expect("write");
    assert_eq!(
        wait_stop(&mut g.vm, STOP_TIMEOUT).stop,
        VcpuStop::Exit(exit_status(0))
    );
    assert!(g.read_u32(COM1_IRQS) >= 1, "no IRQ 4 for the input");
    // IIR as the handler read it: received data available (0x4), FIFOs (0xc0).
    assert_eq!(g.read(IIR, 1)[0], 0xc4);
}

/// A guest that masks both PICs, enables its local APIC (SVR 0x1ff), points IOAPIC pin 2
/// (redirection entry 0x14/0x15: vector 0x30, edge, fixed, to APIC 0) at a handler that
/// counts in `TICKS` and writes the LAPIC's EOI, starts the PIT at 1 kHz, and exits after
/// 20 ticks: the PIT reaches the IOAPIC where the MADT's IRQ 0 → GSI 2 override says.
#[rustfmt::skip]
const IOAPIC_GUEST: &[u8] = &[
    0x48, 0x8d, 0x05, 0x94, 0x00, 0x00, 0x00,                               // +0 lea 0x94(%rip),%rax
    0xbf, 0x00, 0x03, 0x20, 0x00,                                           // +7 mov $0x200300,%edi
    0x66, 0x89, 0x07,                                                       // +12 mov %ax,(%rdi)
    0x66, 0xc7, 0x47, 0x02, 0x10, 0x00,                                     // +15 movw $0x10,0x2(%rdi)
    0x66, 0xc7, 0x47, 0x04, 0x00, 0x8e,                                     // +21 movw $0x8e00,0x4(%rdi)
    0x48, 0xc1, 0xe8, 0x10,                                                 // +27 shr $0x10,%rax
    0x66, 0x89, 0x47, 0x06,                                                 // +31 mov %ax,0x6(%rdi)
    0x48, 0xc1, 0xe8, 0x10,                                                 // +35 shr $0x10,%rax
    0x89, 0x47, 0x08,                                                       // +39 mov %eax,0x8(%rdi)
    0xc7, 0x47, 0x0c, 0x00, 0x00, 0x00, 0x00,                               // +42 movl $0x0,0xc(%rdi)
    0x66, 0xc7, 0x04, 0x25, 0x00, 0x10, 0x20, 0x00, 0xff, 0x0f,             // +49 movw $0xfff,0x201000
    0x48, 0xc7, 0x04, 0x25, 0x02, 0x10, 0x20, 0x00, 0x00, 0x00, 0x20, 0x00, // +59 movq $0x200000,0x201002
    0x0f, 0x01, 0x1c, 0x25, 0x00, 0x10, 0x20, 0x00,                         // +71 lidt 0x201000
    0xb0, 0xff,                                                             // +79 mov $0xff,%al
    0xe6, 0x21,                                                             // +81 out %al,$0x21
    0xe6, 0xa1,                                                             // +83 out %al,$0xa1
    0xbf, 0xf0, 0x00, 0xe0, 0xfe,                                           // +85 mov $0xfee000f0,%edi
    0xc7, 0x07, 0xff, 0x01, 0x00, 0x00,                                     // +90 movl $0x1ff,(%rdi)
    0xbf, 0x00, 0x00, 0xc0, 0xfe,                                           // +96 mov $0xfec00000,%edi
    0xc7, 0x07, 0x14, 0x00, 0x00, 0x00,                                     // +101 movl $0x14,(%rdi)
    0xc7, 0x47, 0x10, 0x30, 0x00, 0x00, 0x00,                               // +107 movl $0x30,0x10(%rdi)
    0xc7, 0x07, 0x15, 0x00, 0x00, 0x00,                                     // +114 movl $0x15,(%rdi)
    0xc7, 0x47, 0x10, 0x00, 0x00, 0x00, 0x00,                               // +120 movl $0x0,0x10(%rdi)
    0xb0, 0x34,                                                             // +127 mov $0x34,%al
    0xe6, 0x43,                                                             // +129 out %al,$0x43
    0xb0, 0xa9,                                                             // +131 mov $0xa9,%al
    0xe6, 0x40,                                                             // +133 out %al,$0x40
    0xb0, 0x04,                                                             // +135 mov $0x4,%al
    0xe6, 0x40,                                                             // +137 out %al,$0x40
    0xfb,                                                                   // +139 sti
    0x83, 0x3c, 0x25, 0x00, 0x20, 0x20, 0x00, 0x14,                         // +140 cmpl $0x14,0x202000
    0x72, 0xf6,                                                             // +148 jb 8c <_start+0x8c>
    0xfa,                                                                   // +150 cli
    0x31, 0xc0,                                                             // +151 xor %eax,%eax
    0xe6, 0xf4,                                                             // +153 out %al,$0xf4
    0xff, 0x04, 0x25, 0x00, 0x20, 0x20, 0x00,                               // +155 timer: incl 0x202000
    0x57,                                                                   // +162 push %rdi
    0xbf, 0xb0, 0x00, 0xe0, 0xfe,                                           // +163 mov $0xfee000b0,%edi
    0xc7, 0x07, 0x00, 0x00, 0x00, 0x00,                                     // +168 movl $0x0,(%rdi)
    0x5f,                                                                   // +174 pop %rdi
    0x48, 0xcf,                                                             // +175 iretq
];

#[test]
fn the_pit_interrupts_through_ioapic_pin_2() {
    let mut g = boot(IOAPIC_GUEST);
    assert_eq!(g.cont().stop, VcpuStop::Exit(exit_status(0)));
    assert!(g.read_u32(TICKS) >= 20);
}
