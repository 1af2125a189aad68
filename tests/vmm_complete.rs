//! The instructions PVM's emulator cannot run and kvmgdb completes itself (src/vmm/complete/,
//! docs/kvm-quirks.md "Completions"): each runs at CPL0 in a guest of a few bytes, and the
//! registers, FPU state and memory after it are checked against what the SDM says the
//! instruction does. On hardware KVM the same guests run natively and the same checks
//! hold; on PVM they pass only if the completions are right.
//!
//! Also: a completion during a step, at a breakpoint and under a watchpoint; the faults a
//! completion raises; an instruction with no completion, which the debugger can move past.

mod vmm_support;

use kvm_bindings::kvm_xsave;
use kvmgdb::vmm::complete::TABLE;
use kvmgdb::vmm::debug::watch::WatchKind;
use kvmgdb::vmm::stop::VcpuStop;
use kvmgdb::x86::xsave::{self, XsaveBytes};
use std::time::Instant;
use vmm_support::*;

/// Whether this machine's KVM is PVM, where these instructions do exit to the VMM.
fn on_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// RFLAGS bits (SDM Vol. 1, 3.4.3).
const CF: u64 = 1 << 0;
const ZF: u64 = 1 << 6;
const AC: u64 = 1 << 18;

/// Data the fault tests use, away from the IDT that [`with_gates`] puts at DATA.
const DATA2: u64 = DATA + 0x1000;

impl Guest {
    /// The XSAVE area as the CPU would load it (components XSTATE_BV marks initial in
    /// their initial configuration).
    fn xsave(&mut self) -> Box<kvm_xsave> {
        xsave::normalized_xsave(&self.vm.xsave(VCPU).expect("xsave"))
    }

    /// Changes the x87 and SSE state (both then marked in XSTATE_BV as holding state).
    fn edit_xsave(&mut self, f: impl FnOnce(&mut kvm_xsave)) {
        let mut x = self.xsave();
        f(&mut x);
        let bv = xsave::xstate_bv(&x) | xsave::BV_X87 | xsave::BV_SSE;
        x.put(xsave::XSTATE_BV, 8, bv.into());
        self.vm.set_xsave(VCPU, &x).expect("set_xsave");
    }

    fn write(&mut self, addr: u64, data: &[u8]) {
        assert_eq!(
            self.vm
                .write_memory(virt(addr), data)
                .expect("write_memory"),
            data.len()
        );
    }

    /// Reads `len` (at most 16) little-endian bytes at `addr`.
    fn read_le(&self, addr: u64, len: usize) -> u128 {
        let mut b = [0u8; 16];
        b[..len].copy_from_slice(&self.read(addr, len));
        u128::from_le_bytes(b)
    }

    fn read_u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.read(addr, 8).try_into().unwrap())
    }

    /// Runs to the `hlt` at `LOAD_ADDR + at`, which must end the run.
    fn run_to_hlt(&mut self, at: u64) {
        let ev = self.cont();
        assert_eq!(ev.stop, VcpuStop::Halted, "stopped at {:#x}", self.rip());
        assert_eq!(self.rip(), LOAD_ADDR + at + 1, "past the final hlt");
    }

    fn xmm(&mut self, n: usize) -> u128 {
        self.xsave().get(xsave::XMM0 + 16 * n, 16)
    }
}

#[test]
fn fwait_and_fninit_reset_the_x87_state() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x9b,                   // +0 fwait           (an exception flagged, but masked)
        0xdb, 0xe3,             // +1 fninit
        0x9b, 0xdb, 0xe3,       // +3 finit
        0xf4,                   // +6 hlt
    ];
    let mut g = boot(CODE);
    g.edit_xsave(|x| {
        x.put(xsave::FCW, 2, 0x0f7f); // other rounding and precision, all masked
        x.put(xsave::FSW, 2, 0x3801); // TOP 7, invalid operation flagged
        x.put(xsave::FTW, 1, 0x80);
        x.put(xsave::FOP, 2, 0x123);
        x.put(xsave::FIP, 4, 0x1234);
        x.put(xsave::FDP, 4, 0x5678);
        x.put(xsave::ST0, 10, 0x4000_8000_0000_0000_0000); // 2.0, physical register 7
    });
    g.run_to_hlt(6);
    let x = g.xsave();
    assert_eq!(x.get(xsave::FCW, 2), 0x37f, "FCW");
    assert_eq!(x.get(xsave::FSW, 2), 0, "FSW");
    assert_eq!(x.get(xsave::FTW, 1), 0, "every tag empty");
    assert_eq!(x.get(xsave::FOP, 2), 0, "FOP");
    assert_eq!(x.get(xsave::FIP, 8), 0, "FIP");
    assert_eq!(x.get(xsave::FDP, 8), 0, "FDP");
    assert_eq!(
        x.get(xsave::ST0 + 16 * 7, 10),
        0x4000_8000_0000_0000_0000,
        "the physical registers keep their contents: with TOP 0, ST7 is register 7"
    );
}

/// A guest whose handler for every vector used below is a `hlt` at `LOAD_ADDR + 0x80`.
const HANDLER: u64 = LOAD_ADDR + 0x80;

/// Boots `code` (padded to [`HANDLER`], which gets a `hlt`) with #UD, #NM, #GP, #PF and
/// #MF gates at the handler.
fn with_handler(code: &[u8]) -> Guest {
    let mut image = code.to_vec();
    assert!(image.len() <= 0x80);
    image.resize(0x80, 0x90);
    image.push(0xf4);
    let gates: Vec<(usize, u64)> = [6, 7, 13, 14, 16].iter().map(|&v| (v, HANDLER)).collect();
    with_gates(&image, &gates)
}

/// Runs into the handler and returns the exception frame: (error code, if `with_code`;
/// saved RIP).
fn run_into_handler(g: &mut Guest, with_code: bool) -> (Option<u64>, u64) {
    let ev = g.cont();
    assert_eq!(ev.stop, VcpuStop::Halted, "at {:#x}", g.rip());
    assert_eq!(g.rip(), HANDLER + 1, "in the handler");
    let rsp = g.regs().rsp;
    if with_code {
        (Some(g.read_u64(rsp)), g.read_u64(rsp + 8))
    } else {
        (None, g.read_u64(rsp))
    }
}

#[test]
fn fwait_with_an_unmasked_exception_pending_raises_mf() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x9b,                   // +0 fwait
        0xf4,                   // +1 hlt
    ];
    let mut g = with_handler(CODE);
    g.edit_xsave(|x| {
        x.put(xsave::FCW, 2, 0x037e); // invalid operation unmasked
        x.put(xsave::FSW, 2, 0x0081); // and flagged (ES set)
    });
    let (_, rip) = run_into_handler(&mut g, false);
    assert_eq!(
        rip, LOAD_ADDR,
        "#MF is a fault: the frame points at the fwait"
    );
}

#[test]
fn ldmxcsr_and_stmxcsr_go_through_the_sse_state() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbf, 0x00, 0x00, 0x20, 0x00, // +0  mov $DATA, %edi
        0x0f, 0xae, 0x17,             // +5  ldmxcsr (%rdi)
        0x0f, 0xae, 0x5f, 0x04,       // +8  stmxcsr 0x4(%rdi)
        0xf4,                         // +12 hlt
    ];
    let mut g = boot(CODE);
    // Round toward zero, every exception masked, precision flagged.
    g.write(DATA, &0x7fa0u32.to_le_bytes());
    g.run_to_hlt(12);
    assert_eq!(g.xsave().get(xsave::MXCSR, 4), 0x7fa0, "MXCSR loaded");
    assert_eq!(g.read_u32(DATA + 4), 0x7fa0, "MXCSR stored");
}

#[test]
fn ldmxcsr_with_a_reserved_bit_raises_gp_and_loads_nothing() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbf, 0x00, 0x10, 0x20, 0x00, // +0  mov $DATA2, %edi
        0x0f, 0xae, 0x17,             // +5  ldmxcsr (%rdi)
        0xf4,                         // +8  hlt
    ];
    let mut g = with_handler(CODE);
    g.write(DATA2, &0x1_1f80u32.to_le_bytes()); // bit 16 is reserved
    let (code, rip) = run_into_handler(&mut g, true);
    assert_eq!(
        (code, rip),
        (Some(0), LOAD_ADDR + 5),
        "#GP(0) at the ldmxcsr"
    );
    assert_eq!(g.xsave().get(xsave::MXCSR, 4), 0x1f80, "MXCSR unchanged");
}

#[test]
fn a_memory_operand_on_an_unmapped_page_raises_pf_with_cr2() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x48, 0xbf, 0x08, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, // +0 movabs $0x1000000008, %rdi
        0x0f, 0xae, 0x1f,             // +10 stmxcsr (%rdi)
        0xf4,                         // +13 hlt
    ];
    // The entry page tables map the first 4 GiB only.
    let mut g = with_handler(CODE);
    let (code, rip) = run_into_handler(&mut g, true);
    assert_eq!(
        rip,
        LOAD_ADDR + 10,
        "#PF is a fault: the frame points at the stmxcsr"
    );
    assert_eq!(
        code,
        Some(0b010),
        "not present, a write, from the supervisor"
    );
    assert_eq!(g.vm.state(VCPU).unwrap().sregs.cr2, 0x10_0000_0008, "CR2");
}

#[test]
fn popcnt_counts_bits_in_every_size_and_sets_only_zf() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbe, 0x00, 0x00, 0x20, 0x00,       // +0  mov $DATA, %esi
        0xf9,                               // +5  stc
        0xf3, 0x48, 0x0f, 0xb8, 0xc7,       // +6  popcnt %rdi, %rax
        0x66, 0xf3, 0x0f, 0xb8, 0xdf,       // +11 popcnt %di, %bx
        0xf3, 0x0f, 0xb8, 0xcf,             // +16 popcnt %edi, %ecx
        0xf3, 0x48, 0x0f, 0xb8, 0x16,       // +20 popcnt (%rsi), %rdx
        0xf3, 0x4e, 0x0f, 0xb8, 0x5c, 0x96, 0xfc, // +25 popcnt -0x4(%rsi,%r10,4), %r11
        0xf3, 0x4c, 0x0f, 0xb8, 0x4e, 0x08, // +32 popcnt 0x8(%rsi), %r9 (zero)
        0xf4,                               // +38 hlt
    ];
    let mut g = boot(CODE);
    g.write(DATA, &u64::MAX.to_le_bytes());
    g.write(DATA + 8, &0u64.to_le_bytes());
    g.write(DATA + 16, &0x0101u64.to_le_bytes());
    g.edit_regs(|r| {
        r.r10 = 5; // DATA - 4 + 5·4 = DATA + 16
        r.rdi = 0xf0f0_0000_0000_0007;
        r.rbx = 0xdead_0000_0000_ffff;
        r.rcx = u64::MAX;
        r.r9 = 77;
    });
    g.run_to_hlt(38);
    let r = g.regs();
    assert_eq!(r.rax, 11, "64-bit");
    assert_eq!(r.r11, 2, "base + index·scale + displacement");
    assert_eq!(r.rbx, 0xdead_0000_0000_0003, "16-bit keeps the upper bits");
    assert_eq!(r.rcx, 3, "32-bit zero-extends");
    assert_eq!(r.rdx, 64, "from memory");
    assert_eq!(r.r9, 0, "a zero source counts zero");
    assert_eq!(
        r.rflags & (ZF | CF),
        ZF,
        "ZF set for the zero source, CF cleared"
    );
}

#[test]
fn stepping_stac_and_clac_flips_ac_and_ends_after_each() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x0f, 0x01, 0xcb,             // +0  stac
        0x0f, 0x01, 0xca,             // +3  clac
        0xf3, 0x48, 0x0f, 0x1e, 0xc8, // +6  rdsspq %rax  (CET off: a NOP)
        0xf4,                         // +11 hlt
    ];
    let mut g = boot(CODE);
    g.edit_regs(|r| r.rax = 0x1234_5678);
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 3, "one step, one instruction");
    assert_ne!(g.regs().rflags & AC, 0, "stac sets AC");
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 6);
    assert_eq!(g.regs().rflags & AC, 0, "clac clears AC");
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), LOAD_ADDR + 11);
    assert_eq!(
        g.regs().rax,
        0x1234_5678,
        "rdsspq leaves its register alone"
    );
}

#[test]
fn sse_moves_reach_xmm_registers_gprs_and_memory() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbf, 0x00, 0x00, 0x20, 0x00,             // +0  mov $DATA, %edi
        0x66, 0x44, 0x0f, 0x6e, 0xf9,             // +5  movd %ecx, %xmm15
        0x66, 0x48, 0x0f, 0x6e, 0xc8,             // +10 movq %rax, %xmm1
        0xf3, 0x0f, 0x6f, 0x07,                   // +15 movdqu (%rdi), %xmm0
        0x66, 0x0f, 0x6f, 0xd0,                   // +19 movdqa %xmm0, %xmm2
        0x0f, 0x11, 0x47, 0x11,                   // +23 movups %xmm0, 0x11(%rdi)
        0x66, 0x48, 0x0f, 0x7e, 0xcb,             // +27 movq %xmm1, %rbx
        0x66, 0x44, 0x0f, 0x7e, 0xfa,             // +32 movd %xmm15, %edx
        0x66, 0x0f, 0x28, 0x1d, 0x13, 0x00, 0x00, 0x00, // +37 movapd k(%rip), %xmm3
        0x66, 0x0f, 0xd6, 0x5f, 0x30,             // +45 movq %xmm3, 0x30(%rdi)
        0x0f, 0x28, 0xe3,                         // +50 movaps %xmm3, %xmm4
        0x66, 0x0f, 0x11, 0x67, 0x40,             // +53 movupd %xmm4, 0x40(%rdi)
        0xf4,                                     // +58 hlt
        0x90, 0x90, 0x90, 0x90, 0x90,             // +59 (to the 16-byte boundary)
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // +64 k: .quad 0x1122334455667788
        0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, //        .quad 0x99aabbccddeeff00
    ];
    const K: u128 = 0x99aa_bbcc_ddee_ff00_1122_3344_5566_7788;
    const M: u128 = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100;
    let mut g = boot(CODE);
    let bytes: Vec<u8> = (0..16).collect();
    g.write(DATA, &bytes);
    g.edit_xsave(|x| {
        for n in [1, 3, 15] {
            x.put(xsave::XMM0 + 16 * n, 16, u128::MAX);
        }
    });
    g.edit_regs(|r| {
        r.rcx = 0xaaaa_aaaa_8765_4321;
        r.rax = 0x0102_0304_0506_0708;
        r.rbx = 0;
        r.rdx = u64::MAX;
    });
    g.run_to_hlt(58);
    assert_eq!(g.xmm(15), 0x8765_4321, "movd zero-extends into xmm15");
    assert_eq!(g.xmm(1), 0x0102_0304_0506_0708, "movq zero-extends");
    assert_eq!(g.xmm(0), M, "movdqu loads 16 bytes");
    assert_eq!(g.xmm(2), M, "movdqa between registers");
    assert_eq!(g.read(DATA + 0x11, 16), bytes, "movups stores unaligned");
    let r = g.regs();
    assert_eq!(r.rbx, 0x0102_0304_0506_0708, "movq to a GPR");
    assert_eq!(r.rdx, 0x8765_4321, "movd to a 32-bit GPR zero-extends");
    assert_eq!(g.xmm(3), K, "movapd from a RIP-relative operand");
    assert_eq!(g.read_u64(DATA + 0x30), K as u64, "movq stores 8 bytes");
    assert_eq!(g.read_u64(DATA + 0x38), 0, "and only 8");
    assert_eq!(g.xmm(4), K, "movaps");
    assert_eq!(
        u128::from_le_bytes(g.read(DATA + 0x40, 16).try_into().unwrap()),
        K,
        "movupd stores"
    );
}

#[test]
fn a_misaligned_movdqa_raises_gp_and_loads_nothing() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbf, 0x00, 0x10, 0x20, 0x00, // +0  mov $DATA2, %edi
        0x66, 0x0f, 0x6f, 0x47, 0x01, // +5  movdqa 0x1(%rdi), %xmm0
        0xf4,                         // +10 hlt
    ];
    let mut g = with_handler(CODE);
    g.edit_xsave(|x| x.put(xsave::XMM0, 16, 0x55));
    let (code, rip) = run_into_handler(&mut g, true);
    assert_eq!(
        (code, rip),
        (Some(0), LOAD_ADDR + 5),
        "#GP(0) at the movdqa"
    );
    assert_eq!(g.xmm(0), 0x55, "xmm0 unchanged");
}

/// Register patterns the XSAVE tests move around.
const XMM3: u128 = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
const YMM3_HI: u128 = 0xfedc_ba98_7654_3210_8899_aabb_ccdd_eeff;

/// Whether the CPU has AVX-512 (CPUID leaf 0DH EAX bits 7:5, which XCR0 takes together),
/// and the XCR0 the compacted-format tests use: x87 | SSE | AVX, and AVX-512 if it has it.
fn avx512_xcr0() -> (bool, u32) {
    let avx512 = std::arch::x86_64::__cpuid_count(0xd, 0).eax & 0xe0 == 0xe0;
    (avx512, if avx512 { 0xe7 } else { 0x07 })
}

/// A guest that runs `xrstor64 (%rdi)` from an XSAVE area at DATA2 holding `area`, with
/// EDX:EAX = `rfbm` ([`xsave_guest`]).
fn xrstor(area: &[(usize, usize, u128)], rfbm: u64) -> Guest {
    xsave_guest([0x48, 0x0f, 0xae, 0x2f], area, rfbm, 7) // xrstor64 (%rdi)
}

/// A guest that runs the 4-byte `insn` with RDI = DATA2, which holds `area`, and EDX:EAX =
/// `rfbm`, after setting CR4.OSXSAVE, and XCR0 to `xcr0` with `xsetbv` (ECX = 0);
/// the vCPU's XMM5 holds 0x55 and its MXCSR 0x1f80 before. With the handler of
/// [`with_handler`]; `insn` is at `LOAD_ADDR + 35`, a `hlt` at +39.
fn xsave_guest(insn: [u8; 4], area: &[(usize, usize, u128)], rfbm: u64, xcr0: u32) -> Guest {
    #[rustfmt::skip]
    let mut code = vec![
        0x0f, 0x20, 0xe0,             // +0  mov %cr4, %rax
        0x48, 0x0d, 0x00, 0x00, 0x04, 0x00, // +3 or $0x40000, %rax  (OSXSAVE)
        0x0f, 0x22, 0xe0,             // +9  mov %rax, %cr4
        0xb8, 0x07, 0x00, 0x00, 0x00, // +12 mov $7, %eax
        0x31, 0xd2,                   // +17 xor %edx, %edx
        0x31, 0xc9,                   // +19 xor %ecx, %ecx
        0x0f, 0x01, 0xd1,             // +21 xsetbv
        0x4c, 0x89, 0xc0,             // +24 mov %r8, %rax
        0x4c, 0x89, 0xca,             // +27 mov %r9, %rdx
        0xbf, 0x00, 0x10, 0x20, 0x00, // +30 mov $DATA2, %edi
    ];
    code[13..17].copy_from_slice(&xcr0.to_le_bytes());
    code.extend_from_slice(&insn); //    +35 insn
    code.push(0xf4); //                  +39 hlt
    let mut g = with_handler(&code);
    let mut bytes = vec![0u8; 1024];
    for &(off, len, v) in area {
        bytes[off..off + len].copy_from_slice(&v.to_le_bytes()[..len]);
    }
    g.write(DATA2, &bytes);
    g.edit_xsave(|x| x.put(xsave::XMM0 + 16 * 5, 16, 0x55));
    g.edit_regs(|r| {
        r.r8 = rfbm & 0xffff_ffff;
        r.r9 = rfbm >> 32;
    });
    g
}

#[test]
fn xrstor_loads_the_requested_components_and_initializes_the_absent_ones() {
    let full = [
        (xsave::FCW, 2, 0x027f),
        (xsave::FSW, 2, 0x3800),
        (xsave::MXCSR, 4, 0x7f80),
        (xsave::XMM0 + 16 * 3, 16, XMM3),
        (xsave::YMM_HI + 16 * 3, 16, YMM3_HI),
        (xsave::XSTATE_BV, 8, 0b111),
    ];
    let mut g = xrstor(&full, u64::MAX);
    g.run_to_hlt(39);
    let x = g.xsave();
    assert_eq!(x.get(xsave::FCW, 2), 0x027f, "x87 loaded");
    assert_eq!(x.get(xsave::FSW, 2), 0x3800);
    assert_eq!(x.get(xsave::MXCSR, 4), 0x7f80, "MXCSR loaded");
    assert_eq!(x.get(xsave::XMM0 + 16 * 3, 16), XMM3, "XMM3 loaded");
    assert_eq!(x.get(xsave::XMM0 + 16 * 5, 16), 0, "XMM5 loaded (zeros)");
    assert_eq!(
        x.get(xsave::YMM_HI + 16 * 3, 16),
        YMM3_HI,
        "YMM3's upper half loaded"
    );

    // XSTATE_BV names x87 only: SSE and AVX go to their initial configuration, but the
    // standard form loads MXCSR all the same.
    let mut only_x87 = full;
    only_x87[5] = (xsave::XSTATE_BV, 8, 0b001);
    let mut g = xrstor(&only_x87, u64::MAX);
    g.run_to_hlt(39);
    let x = g.xsave();
    assert_eq!(x.get(xsave::FCW, 2), 0x027f);
    assert_eq!(x.get(xsave::XMM0 + 16 * 5, 16), 0, "XMM5 initialized");
    assert_eq!(x.get(xsave::XMM0 + 16 * 3, 16), 0, "XMM3 initialized");
    assert_eq!(x.get(xsave::MXCSR, 4), 0x7f80, "MXCSR loaded even so");

    // EDX:EAX asks for x87 only: SSE and MXCSR stay as they were.
    let mut g = xrstor(&full, 0b001);
    g.run_to_hlt(39);
    let x = g.xsave();
    assert_eq!(x.get(xsave::FCW, 2), 0x027f);
    assert_eq!(x.get(xsave::XMM0 + 16 * 5, 16), 0x55, "XMM5 untouched");
    assert_eq!(x.get(xsave::MXCSR, 4), 0x1f80, "MXCSR untouched");
}

/// The compacted form, as Linux's `os_xrstor_booting` uses it: components packed in
/// XCOMP_BV order. With AVX-512 (where the CPU has it) the opmask component lands at 832
/// compacted, 1088 in the standard format, so a wrong offset shows.
#[test]
fn xrstor_of_a_compacted_area_finds_each_component_packed() {
    const K1: u128 = 0x1111_2222_3333_4444;
    let (avx512, xcr0) = avx512_xcr0();
    let compacted = 1u128 << 63 | u128::from(xcr0);
    let mut area = vec![
        (xsave::FCW, 2, 0x027f),
        (xsave::MXCSR, 4, 0x7f80),
        (xsave::XMM0 + 16 * 3, 16, XMM3),
        (576 + 16 * 3, 16, YMM3_HI), // AVX, first component: 576 in both formats
        (
            xsave::XSTATE_BV,
            16,
            compacted << 64 | u128::from(xcr0 & 0x27),
        ),
    ];
    if avx512 {
        area.push((832 + 8, 8, K1)); // k1, after the 256 bytes of AVX
    }
    let mut g = xsave_guest([0x48, 0x0f, 0xae, 0x2f], &area, u64::MAX, xcr0);
    g.run_to_hlt(39);
    let x = g.xsave();
    assert_eq!(x.get(xsave::FCW, 2), 0x027f, "x87 loaded");
    assert_eq!(x.get(xsave::MXCSR, 4), 0x7f80, "MXCSR loaded");
    assert_eq!(x.get(xsave::XMM0 + 16 * 3, 16), XMM3, "XMM3 loaded");
    assert_eq!(
        x.get(xsave::YMM_HI + 16 * 3, 16),
        YMM3_HI,
        "YMM3's upper half loaded"
    );
    if avx512 {
        let opmask = std::arch::x86_64::__cpuid_count(0xd, 5).ebx as usize;
        assert_eq!(x.get(opmask + 8, 8), K1, "k1 from its compacted place");
    }
}

/// `xsavec` writes what `xrstor` of the compacted form reads: components in use packed in
/// XCOMP_BV order, XSTATE_BV = RFBM & in use, XCOMP_BV = bit 63 | RFBM.
#[test]
fn xsavec_writes_a_compacted_area() {
    const K1: u64 = 0x1111_2222_3333_4444;
    let (avx512, xcr0) = avx512_xcr0();
    let mut g = xsave_guest([0x48, 0x0f, 0xc7, 0x27], &[], u64::MAX, xcr0); // xsavec64 (%rdi)
    let opmask = std::arch::x86_64::__cpuid_count(0xd, 5).ebx as usize;
    g.edit_xsave(|x| {
        x.put(xsave::FCW, 2, 0x027f);
        x.put(xsave::XMM0 + 16 * 3, 16, XMM3);
        x.put(xsave::YMM_HI + 16 * 3, 16, YMM3_HI);
        let mut bv = xsave::xstate_bv(x) | xsave::BV_AVX;
        if avx512 {
            x.put(opmask + 8, 8, K1.into());
            bv |= 1 << 5;
        }
        x.put(xsave::XSTATE_BV, 8, bv.into());
    });
    g.run_to_hlt(39);
    let at = |off: usize, len: usize| g.read_le(DATA2 + off as u64, len);
    let in_use: u128 = if avx512 { 0b10_0111 } else { 0b111 };
    assert_eq!(
        at(xsave::XSTATE_BV, 8),
        in_use,
        "XSTATE_BV: the components in use"
    );
    assert_eq!(
        at(xsave::XSTATE_BV + 8, 8),
        1 << 63 | u128::from(xcr0),
        "XCOMP_BV"
    );
    assert_eq!(at(xsave::FCW, 2), 0x027f, "x87");
    assert_eq!(at(xsave::XMM0 + 16 * 3, 16), XMM3, "XMM3");
    assert_eq!(
        at(576 + 16 * 3, 16),
        YMM3_HI,
        "AVX first in the extended region"
    );
    if avx512 {
        assert_eq!(at(832 + 8, 8), u128::from(K1), "k1 packed after AVX");
    }
}

#[test]
fn xrstor_of_a_component_outside_xcr0_raises_gp() {
    // XSTATE_BV bit 9 (PKRU) while XCR0 is x87 | SSE | AVX: #GP(0), nothing loaded.
    let area = [
        (xsave::FCW, 2, 0x027f),
        (xsave::XSTATE_BV, 8, 0b10_0000_0011),
    ];
    let mut g = xrstor(&area, u64::MAX);
    let (code, rip) = run_into_handler(&mut g, true);
    assert_eq!(
        (code, rip),
        (Some(0), LOAD_ADDR + 35),
        "#GP(0) at the xrstor"
    );
    assert_eq!(g.xsave().get(xsave::FCW, 2), 0x037f, "FCW unchanged");
}

#[test]
fn xsave_writes_the_requested_components_and_their_xstate_bv_bits() {
    const FILL: u128 = u128::from_le_bytes([0xaa; 16]);
    // The area is 0xaa everywhere but XSTATE_BV, which has a bit outside RFBM.
    let mut area: Vec<(usize, usize, u128)> = (0..64).map(|i| (16 * i, 16, FILL)).collect();
    area.push((xsave::XSTATE_BV, 16, 1 << 9));
    let mut g = xsave_guest([0x48, 0x0f, 0xae, 0x27], &area, 0b011, 7); // xsave64 (%rdi)
    g.edit_xsave(|x| {
        x.put(xsave::FCW, 2, 0x027f);
        x.put(xsave::MXCSR, 4, 0x7f80);
        x.put(xsave::XMM0 + 16 * 3, 16, XMM3);
        x.put(xsave::YMM_HI + 16 * 3, 16, 0x77);
    });
    g.run_to_hlt(39);
    let at = |off: usize, len: usize| g.read_le(DATA2 + off as u64, len);
    assert_eq!(at(xsave::FCW, 2), 0x027f, "x87 saved");
    assert_eq!(at(xsave::MXCSR, 4), 0x7f80, "MXCSR saved");
    assert_eq!(at(xsave::XMM0 + 16 * 3, 16), XMM3, "XMM3 saved");
    assert_eq!(at(xsave::XMM0 + 16 * 5, 16), 0x55, "XMM5 saved");
    assert_eq!(
        at(xsave::YMM_HI + 16 * 3, 16),
        FILL,
        "AVX not requested: untouched"
    );
    assert_eq!(
        at(464, 16),
        FILL,
        "the legacy region's software bytes untouched"
    );
    assert_eq!(
        at(xsave::XSTATE_BV, 8),
        (1 << 9) | 0b011,
        "x87 and SSE marked, the bit outside RFBM kept"
    );
    assert_eq!(
        at(xsave::XSTATE_BV + 8, 8),
        0,
        "XCOMP_BV untouched (it was 0)"
    );
}

#[test]
fn xgetbv_reads_xcr0() {
    let mut g = xsave_guest([0x0f, 0x01, 0xd0, 0x90], &[], 0, 7); // xgetbv; nop
    g.edit_regs(|r| r.rdx = u64::MAX);
    g.run_to_hlt(39);
    assert_eq!(
        (g.regs().rax, g.regs().rdx),
        (7, 0),
        "XCR0 as the guest set it"
    );
}

#[test]
fn a_watchpoint_on_the_memory_a_completion_writes_is_reported_after_it() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbf, 0x00, 0x00, 0x20, 0x00, // +0  mov $DATA, %edi
        0x0f, 0xae, 0x5f, 0x08,       // +5  stmxcsr 0x8(%rdi)
        0xf3, 0x0f, 0x6f, 0x47, 0x20, // +9  movdqu 0x20(%rdi), %xmm0
        0xf4,                         // +14 hlt
    ];
    let mut g = boot(CODE);
    g.vm.add_watchpoint(VCPU, DATA + 10, 1, WatchKind::Write)
        .expect("add_watchpoint");
    g.vm.add_watchpoint(VCPU, DATA + 0x2f, 1, WatchKind::Read)
        .expect("add_watchpoint");
    let ev = g.cont();
    assert_eq!(
        ev.stop,
        VcpuStop::Watch {
            kind: WatchKind::Write,
            addr: DATA + 10
        }
    );
    assert_eq!(g.rip(), LOAD_ADDR + 9, "reported after the stmxcsr");
    assert_eq!(g.read_u32(DATA + 8), 0x1f80, "and the store done");
    let ev = g.cont();
    assert_eq!(
        ev.stop,
        VcpuStop::Watch {
            kind: WatchKind::Read,
            addr: DATA + 0x2f
        }
    );
    assert_eq!(g.rip(), LOAD_ADDR + 14, "reported after the movdqu");
    g.run_to_hlt(14);
}

#[test]
fn breakpoints_at_and_after_a_completed_instruction_are_reported() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xf3, 0x48, 0x0f, 0xb8, 0xc7, // +0  popcnt %rdi, %rax
        0xf3, 0x48, 0x0f, 0xb8, 0xdf, // +5  popcnt %rdi, %rbx
        0xff, 0xc1,                   // +10 inc %ecx
        0xf4,                         // +12 hlt
    ];
    let mut g = boot(CODE);
    g.edit_regs(|r| r.rdi = 0xff);
    g.vm.add_sw_breakpoint(VCPU, LOAD_ADDR + 5)
        .expect("add_sw_breakpoint");
    g.vm.add_hw_breakpoint(LOAD_ADDR + 10)
        .expect("add_hw_breakpoint");
    let ev = g.cont();
    assert_eq!(ev.stop, VcpuStop::SwBreakpoint(LOAD_ADDR + 5));
    assert_eq!(
        (g.regs().rax, g.regs().rbx),
        (8, 0),
        "the first popcnt only"
    );
    let ev = g.cont();
    assert!(
        matches!(ev.stop, VcpuStop::HwBreakpoint { addr, .. } if addr == LOAD_ADDR + 10),
        "{:?}",
        ev.stop
    );
    assert_eq!(g.regs().rbx, 8, "the popcnt under the breakpoint ran once");
    assert_eq!(
        g.regs().rcx,
        0,
        "the instruction at the hardware breakpoint has not run"
    );
    g.run_to_hlt(12);
}

#[test]
fn after_an_instruction_kvm_cannot_run_the_debugger_can_move_on() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x66, 0x0f, 0xef, 0xd1,       // +0 pxor %xmm1, %xmm2 (no completion)
        0xff, 0xc1,                   // +4 inc %ecx
        0xf4,                         // +6 hlt
    ];
    let mut g = boot(CODE);
    if !on_pvm() {
        // Hardware KVM runs pxor: nothing to move past.
        g.run_to_hlt(6);
        return;
    }
    let internal = VcpuStop::InternalError { suberror: 1 };
    assert_eq!(g.cont().stop, internal);
    assert_eq!(g.rip(), LOAD_ADDR, "at the instruction");
    assert_eq!(g.vm.frozen(VCPU), None, "an internal error freezes nothing");
    // Unchanged, the vCPU meets the same instruction again.
    assert_eq!(g.cont().stop, internal);
    assert_eq!(g.rip(), LOAD_ADDR);
    g.edit_regs(|r| r.rip += 4);
    g.run_to_hlt(6);
    assert_eq!(g.regs().rcx, 1, "the guest ran on from the new RIP");
}

/// Not a check but a measurement, printed: the wall-clock cost of each completion from a
/// loop of N of them (with `cargo test --test vmm_complete -- --nocapture`). On PVM it
/// also checks that every one of them went through the completion layer; on hardware KVM
/// none does (the instructions run natively) and the figures are the guest's own.
#[test]
fn cost_of_each_completion() {
    const N: u32 = 2000;
    #[rustfmt::skip]
    let cases: &[(&str, &[u8])] = &[
        ("fwait", &[0x9b]),
        ("fninit", &[0xdb, 0xe3]),
        ("ldmxcsr", &[0x0f, 0xae, 0x17]),              // ldmxcsr (%rdi)
        ("stmxcsr", &[0x0f, 0xae, 0x1f]),              // stmxcsr (%rdi)
        ("popcnt", &[0xf3, 0x48, 0x0f, 0xb8, 0xc7]),   // popcnt %rdi, %rax
        ("clac", &[0x0f, 0x01, 0xca]),                 // clac
        ("movd", &[0x66, 0x44, 0x0f, 0x6e, 0xf9]),     // movd %ecx, %xmm15
        ("rdsspq", &[0xf3, 0x48, 0x0f, 0x1e, 0xc8]),   // rdsspq %rax
        ("xrstor64", &[0x48, 0x0f, 0xae, 0x2f]),       // xrstor64 (%rdi): x87, initial
        // For comparison: a port I/O exit the VMM handles (no device at port 0x80).
        ("out", &[0xe6, 0x80]),                        // out %al, $0x80
    ];
    let mut report = String::new();
    for (name, insn) in cases {
        #[rustfmt::skip]
        let mut code = vec![
            0xbf, 0x00, 0x00, 0x20, 0x00, // mov $DATA, %edi
            0xb9, 0, 0, 0, 0,             // mov $N, %ecx
        ];
        code[6..10].copy_from_slice(&N.to_le_bytes());
        code.extend_from_slice(insn); // 1: the instruction
        code.extend_from_slice(&[0xff, 0xc9]); // dec %ecx
        let back = -(insn.len() as i8 + 4);
        code.extend_from_slice(&[0x75, back as u8]); // jnz 1b
        // The end must exit at once: under the in-kernel irqchip a `hlt` blocks in KVM, and
        // the halt watcher reports it only after about 200 ms.
        code.extend_from_slice(&[0xe6, 0xf4]); // out %al, $0xf4 (isa-debug-exit)
        let mut g = boot(&code);
        g.write(DATA, &0x1f80u32.to_le_bytes());
        // xrstor needs CR4.OSXSAVE; XCR0 stays x87 and EDX:EAX is whatever the loop has.
        let mut sregs = g.vm.state(VCPU).expect("state").sregs;
        sregs.cr4 |= 1 << 18;
        g.vm.set_sregs(VCPU, sregs).expect("set_sregs");
        let count = || {
            TABLE
                .iter()
                .find(|c| c.name == *name)
                .map_or(0, |c| c.count())
        };
        let before = count();
        let start = Instant::now();
        let ev = g.cont();
        let elapsed = start.elapsed();
        assert!(
            matches!(ev.stop, VcpuStop::Exit(_)),
            "{name}: {:?}",
            ev.stop
        );
        let completed = count() - before;
        // Each lap exits to the VMM, or none does (hardware KVM; PVM runs `fninit` itself).
        assert!(
            completed == 0 || completed >= u64::from(N),
            "{name}: {completed} completions"
        );
        report += &format!(
            "{name}: {:.1} µs per instruction ({completed} completions)\n",
            elapsed.as_secs_f64() * 1e6 / f64::from(N)
        );
    }
    println!("{report}");
}

#[test]
fn a_step_onto_a_completion_that_faults_ends_at_the_handler() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbf, 0x00, 0x10, 0x20, 0x00, // +0  mov $DATA2, %edi
        0x0f, 0xae, 0x17,             // +5  ldmxcsr (%rdi)  (a reserved bit: #GP)
        0xf4,                         // +8  hlt
    ];
    let mut g = with_handler(CODE);
    g.write(DATA2, &0x1_1f80u32.to_le_bytes());
    g.steps(1);
    assert_eq!(g.step().stop, VcpuStop::Step);
    assert_eq!(g.rip(), HANDLER, "at the #GP handler's first instruction");
    let rsp = g.regs().rsp;
    assert_eq!(
        g.read_u64(rsp + 8),
        LOAD_ADDR + 5,
        "the frame points at the ldmxcsr"
    );
}

#[test]
fn a_guest_completing_instructions_in_a_loop_can_be_interrupted() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xf3, 0x48, 0x0f, 0xb8, 0xc7,             // +0  1: popcnt %rdi, %rax
        0xff, 0xc1,                               // +5     inc %ecx
        0x89, 0x0c, 0x25, 0x00, 0x00, 0x20, 0x00, // +7     mov %ecx, DATA
        0xeb, 0xf0,                               // +14    jmp 1b
    ];
    let mut g = boot(CODE);
    g.vm.resume(&[(VCPU, false)]).expect("resume");
    // Wait for the guest to go round a few times (the first KVM_RUN of a vCPU can take
    // tens of ms on a busy PVM machine).
    let deadline = Instant::now() + STOP_TIMEOUT;
    while g.read_u32(DATA) < 10 {
        assert!(Instant::now() < deadline, "the loop did not run");
        assert!(
            g.vm.poll_event().is_none(),
            "a completed instruction is no stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stops = g.vm.stop_all();
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].stop, VcpuStop::Kicked);
    assert!(g.regs().rcx >= 10, "{} laps", g.regs().rcx);
    assert!(g.rip() < LOAD_ADDR + CODE.len() as u64);
}

#[test]
fn popcnt_is_completed_in_32_bit_protected_mode() {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xbe, 0x00, 0x00, 0x20, 0x00, // +0  mov $DATA, %esi
        0xf3, 0x0f, 0xb8, 0xc7,       // +5  popcnt %edi, %eax
        0xf3, 0x0f, 0xb8, 0x1e,       // +9  popcnt (%esi), %ebx
        0xf4,                         // +13 hlt
    ];
    let mut g = boot_multiboot(CODE);
    g.write(DATA, &0x8000_0001u32.to_le_bytes());
    g.edit_regs(|r| r.rdi = 0xffff);
    let ev = g.cont();
    assert_eq!(ev.stop, VcpuStop::Halted, "at {:#x}", g.rip());
    assert_eq!(g.rip(), multiboot_entry() + 14);
    assert_eq!((g.regs().rax, g.regs().rbx), (16, 2));
}
