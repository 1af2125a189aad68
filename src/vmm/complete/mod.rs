//! Instructions this KVM cannot run, completed by the VMM.
//!
//! PVM emulates all CPL0 guest code, and its emulator gives up on some instructions a
//! kernel uses every boot: `fwait`, `ldmxcsr`, `popcnt`, `clac`, SSE moves, `xrstor`,
//! `xsave`, `xgetbv`… Each
//! ends the run in KVM_EXIT_INTERNAL_ERROR (suberror 1, emulation failure) with RIP at the
//! instruction and the vCPU intact (docs/kvm-quirks.md, "Completions"). Hardware KVM runs
//! them all natively, so there this layer never runs.
//!
//! On such an exit ([`quirks::InternalErrorCause::Complete`](super::quirks)) the vCPU thread
//! hands the instruction here: it is read through the guest's page tables, decoded by
//! `iced-x86` in the vCPU's current mode, and looked up by mnemonic in [`TABLE`]. A
//! completion does the instruction on the vCPU's state as the SDM describes it (registers
//! through KVM_GET/SET_REGS/FPU, memory through the guest's page tables), or raises the
//! exception the CPU would raise; it never writes a partial result. Anything not in the
//! table stays an internal error.

mod bits;
mod cet;
mod cpu;
mod flags;
mod fpu;
mod sse;
mod xsave;

pub use cpu::{Access, Exception};

use crate::memory::GuestMem;
use crate::vmm::stop::CpuSnapshot;
use crate::x86::Efer;
use cpu::Cpu;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest x86 instruction: 15 bytes (SDM Vol. 2A, 2.3.11).
pub const MAX_INSN_LEN: usize = 15;

/// What a completion did with the instruction.
#[derive(Debug)]
pub enum Done {
    /// It executed: the registers to load (RIP past it) and the guest-physical ranges it
    /// read or wrote, for the watchpoints.
    Executed {
        /// The general-purpose registers after the instruction.
        regs: kvm_regs,
        /// Memory the instruction accessed.
        accesses: Vec<Access>,
    },
    /// It raised this exception instead: the guest's state is unchanged, and the
    /// exception is to be delivered with RIP at the instruction (every exception here is
    /// a fault, SDM Vol. 3, 6.5).
    Raised(Exception),
}

/// Why an instruction could not be completed: it stays an internal error.
#[derive(Debug, thiserror::Error)]
pub enum CannotComplete {
    /// The bytes at RIP could not be read through the guest's page tables.
    #[error("the code at {0:#x} cannot be read through the guest's page tables")]
    CodeUnreadable(u64),
    /// The bytes at RIP are no valid instruction in this mode.
    #[error("the bytes at {0:#x} decode to no valid instruction")]
    Undecodable(u64),
    /// The instruction is not one kvmgdb completes.
    #[error("kvmgdb has no completion for `{0}`")]
    NotInTable(String),
    /// An operand form the completion does not handle (an MMX register, a wider vector).
    #[error("kvmgdb does not complete this form of `{0}`")]
    Form(&'static str),
    /// A state the completion cannot reproduce faithfully (shadow stacks on, say).
    #[error("`{0}` cannot be completed: {1}")]
    State(&'static str, &'static str),
    /// A memory operand outside guest RAM (an MMIO device), or page tables outside RAM.
    #[error("`{0}`'s memory operand at {1:#x} is not guest RAM")]
    NotRam(&'static str, u64),
    /// A KVM ioctl failed.
    #[error("{0} failed")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
}

/// One instruction kvmgdb completes.
pub struct Completion {
    /// Its name in log lines, counts and `monitor info kvm`.
    pub name: &'static str,
    /// The mnemonic iced-x86 decodes it to.
    pub mnemonic: Mnemonic,
    /// Does the instruction on `cpu`; one function serves an instruction family.
    run: Run,
    /// How many times it was completed in this process.
    count: AtomicU64,
}

/// What a completion function does: an exception instead of the instruction, or None
/// once it is done on `cpu`.
type Run = fn(&mut Cpu<'_>, &Instruction) -> Result<Option<Exception>, CannotComplete>;

impl Completion {
    const fn new(name: &'static str, mnemonic: Mnemonic, run: Run) -> Completion {
        Completion {
            name,
            mnemonic,
            run,
            count: AtomicU64::new(0),
        }
    }

    /// How many times this instruction was completed in this process.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Every instruction kvmgdb completes, found on PVM while booting Linux
/// (docs/kvm-quirks.md, "Completions"), with the function of its family.
pub static TABLE: [Completion; 26] = [
    Completion::new("fwait", Mnemonic::Wait, fpu::fwait),
    Completion::new("fninit", Mnemonic::Fninit, fpu::fninit),
    Completion::new("ldmxcsr", Mnemonic::Ldmxcsr, fpu::ldmxcsr),
    Completion::new("stmxcsr", Mnemonic::Stmxcsr, fpu::stmxcsr),
    Completion::new("popcnt", Mnemonic::Popcnt, bits::popcnt),
    Completion::new("clac", Mnemonic::Clac, flags::clac_stac),
    Completion::new("stac", Mnemonic::Stac, flags::clac_stac),
    Completion::new("movd", Mnemonic::Movd, sse::mov),
    Completion::new("movq", Mnemonic::Movq, sse::mov),
    Completion::new("movdqa", Mnemonic::Movdqa, sse::mov),
    Completion::new("movdqu", Mnemonic::Movdqu, sse::mov),
    Completion::new("movaps", Mnemonic::Movaps, sse::mov),
    Completion::new("movups", Mnemonic::Movups, sse::mov),
    Completion::new("movapd", Mnemonic::Movapd, sse::mov),
    Completion::new("movupd", Mnemonic::Movupd, sse::mov),
    Completion::new("xrstor", Mnemonic::Xrstor, xsave::xrstor),
    Completion::new("xrstor64", Mnemonic::Xrstor64, xsave::xrstor),
    Completion::new("xsave", Mnemonic::Xsave, xsave::xsave),
    Completion::new("xsave64", Mnemonic::Xsave64, xsave::xsave),
    Completion::new("xsaveopt", Mnemonic::Xsaveopt, xsave::xsave),
    Completion::new("xsaveopt64", Mnemonic::Xsaveopt64, xsave::xsave),
    Completion::new("xsavec", Mnemonic::Xsavec, xsave::xsavec),
    Completion::new("xsavec64", Mnemonic::Xsavec64, xsave::xsavec),
    Completion::new("xgetbv", Mnemonic::Xgetbv, xsave::xgetbv),
    Completion::new("rdsspd", Mnemonic::Rdsspd, cet::rdssp),
    Completion::new("rdsspq", Mnemonic::Rdsspq, cet::rdssp),
];

/// The table entry for `mnemonic`, if kvmgdb completes it.
pub fn lookup(mnemonic: Mnemonic) -> Option<&'static Completion> {
    TABLE.iter().find(|c| c.mnemonic == mnemonic)
}

/// The decoder's bitness for the vCPU's current mode: 64 in 64-bit mode (EFER.LMA and
/// CS.L), else 32 or 16 from CS.D (SDM Vol. 3, 5.2.1).
pub fn bitness(sregs: &kvm_sregs) -> u32 {
    if Efer::from_bits_retain(sregs.efer).contains(Efer::LMA) && sregs.cs.l != 0 {
        64
    } else if sregs.cs.db != 0 {
        32
    } else {
        16
    }
}

/// Reads and decodes the instruction at the vCPU's RIP.
pub fn decode(mem: &GuestMem, state: &CpuSnapshot) -> Result<Instruction, CannotComplete> {
    let pc = state.linear_rip();
    let mut bytes = [0u8; MAX_INSN_LEN];
    let got = crate::x86::paging::read_virt(
        mem,
        &state.paging_regs(),
        crate::x86::paging::GuestVirtAddr(pc),
        &mut bytes,
    );
    if got == 0 {
        return Err(CannotComplete::CodeUnreadable(pc));
    }
    let mut decoder = Decoder::with_ip(
        bitness(&state.sregs),
        &bytes[..got],
        state.regs.rip,
        DecoderOptions::NONE,
    );
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(CannotComplete::Undecodable(pc));
    }
    Ok(insn)
}

/// Completes `insn`, the instruction at the vCPU's RIP (from [`decode`]), on `vcpu`.
///
/// On [`Done::Executed`] the XSAVE state and memory are already written and the returned
/// registers must be loaded before the vCPU runs; on [`Done::Raised`] nothing was written. A
/// completion that fails with an error has written nothing either, so the stop it
/// becomes shows the state the instruction found.
pub fn complete(
    vcpu: &VcpuFd,
    mem: &GuestMem,
    state: &CpuSnapshot,
    insn: &Instruction,
) -> Result<Done, CannotComplete> {
    let entry = lookup(insn.mnemonic())
        .ok_or_else(|| CannotComplete::NotInTable(format!("{:?}", insn.mnemonic())))?;
    if insn.has_lock_prefix() {
        // LOCK is valid only on read-modify-write memory instructions, none of these
        // (SDM Vol. 2A, LOCK).
        return Ok(Done::Raised(Exception::UD));
    }
    let mut cpu = Cpu::new(vcpu, mem, *state);
    if let Some(exception) = (entry.run)(&mut cpu, insn)? {
        return Ok(Done::Raised(exception));
    }
    cpu.commit()?;
    // The instruction pointer wraps at the code segment's size (SDM Vol. 1, 3.6).
    let ip_mask = match bitness(&state.sregs) {
        64 => u64::MAX,
        32 => 0xffff_ffff,
        _ => 0xffff,
    };
    cpu.regs.rip = cpu.regs.rip.wrapping_add(insn.len() as u64) & ip_mask;
    let n = entry.count.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        log::info!(
            "completed `{}` for the guest (this KVM's emulator cannot run it)",
            entry.name
        );
    } else {
        log::debug!("completed `{}` ({} times)", entry.name, n + 1);
    }
    Ok(Done::Executed {
        regs: cpu.regs,
        accesses: cpu.accesses,
    })
}

/// Delivers `exception` to the guest at its current RIP: CR2 first for a #PF
/// (KVM_SET_SREGS), then the exception through KVM_SET_VCPU_EVENTS, which KVM delivers
/// at the next KVM_RUN (KVM API, KVM_SET_VCPU_EVENTS; without KVM_CAP_EXCEPTION_PAYLOAD,
/// which kvmgdb does not enable, a #PF takes CR2 as it is). `sregs` are the vCPU's current system registers.
/// Returns the system registers now in the vCPU.
pub fn inject(
    vcpu: &VcpuFd,
    sregs: &kvm_sregs,
    exception: Exception,
) -> Result<kvm_sregs, CannotComplete> {
    let mut sregs = *sregs;
    if let Some(cr2) = exception.cr2 {
        sregs.cr2 = cr2;
        vcpu.set_sregs(&sregs)
            .map_err(|e| CannotComplete::Kvm("KVM_SET_SREGS", e))?;
    }
    let mut events = vcpu
        .get_vcpu_events()
        .map_err(|e| CannotComplete::Kvm("KVM_GET_VCPU_EVENTS", e))?;
    events.exception.injected = 1;
    events.exception.pending = 0;
    events.exception.nr = exception.vector;
    events.exception.has_error_code = u8::from(exception.error_code.is_some());
    events.exception.error_code = exception.error_code.unwrap_or(0);
    events.exception_has_payload = 0;
    vcpu.set_vcpu_events(&events)
        .map_err(|e| CannotComplete::Kvm("KVM_SET_VCPU_EVENTS", e))?;
    Ok(sregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode64(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn every_mnemonic_has_one_completion() {
        for (i, c) in TABLE.iter().enumerate() {
            assert!(
                TABLE[i + 1..].iter().all(|d| d.mnemonic != c.mnemonic),
                "{:?} is in the table twice",
                c.mnemonic
            );
        }
    }

    #[test]
    fn the_instructions_linux_needs_decode_to_table_entries() {
        #[rustfmt::skip]
        let cases: &[(&[u8], &str)] = &[
            (&[0x9b], "fwait"),
            (&[0xdb, 0xe3], "fninit"),
            // finit is fwait then fninit: two instructions to the decoder, completed apart.
            (&[0x9b, 0xdb, 0xe3][..1], "fwait"),
            (&[0x0f, 0xae, 0x54, 0x24, 0x04], "ldmxcsr"),    // ldmxcsr 0x4(%rsp)
            (&[0x0f, 0xae, 0x1f], "stmxcsr"),                // stmxcsr (%rdi)
            (&[0xf3, 0x48, 0x0f, 0xb8, 0xc7], "popcnt"),     // popcnt %rdi, %rax
            (&[0x0f, 0x01, 0xca], "clac"),
            (&[0x0f, 0x01, 0xcb], "stac"),
            (&[0x66, 0x44, 0x0f, 0x6e, 0xf9], "movd"),       // movd %ecx, %xmm15
            (&[0xf3, 0x0f, 0x6f, 0x07], "movdqu"),           // movdqu (%rdi), %xmm0
            (&[0x48, 0x0f, 0xae, 0x2f], "xrstor64"),         // xrstor64 (%rdi)
            (&[0xf3, 0x48, 0x0f, 0x1e, 0xc8], "rdsspq"),     // rdsspq %rax
        ];
        for (bytes, name) in cases {
            let insn = decode64(bytes);
            assert_eq!(insn.len(), bytes.len(), "{bytes:x?}");
            let entry = lookup(insn.mnemonic());
            assert_eq!(entry.map(|c| c.name), Some(*name), "{bytes:x?}");
        }
        assert!(lookup(decode64(&[0x0f, 0x0b]).mnemonic()).is_none(), "ud2");
    }

    /// `fninit` against a real vCPU's XSAVE area (PVM runs `fninit` itself, so no guest
    /// reaches this completion there): the stack-ordered slots move to physical order.
    #[test]
    fn fninit_on_a_real_vcpu_keeps_the_physical_registers() {
        use crate::x86::xsave::{self, XsaveBytes};
        let kvm = kvm_ioctls::Kvm::new().expect("KVM not available: cannot open /dev/kvm");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        let mem = crate::memory::create_guest_memory(1 << 20).expect("guest RAM");
        let mut x = xsave::normalized_xsave(&vcpu.get_xsave().expect("KVM_GET_XSAVE"));
        const TWO: u128 = 0x4000_8000_0000_0000_0000;
        x.put(xsave::FSW, 2, 5 << 11); // TOP 5
        x.put(xsave::ST0, 16, TWO); // ST(0): physical register 5
        x.put(xsave::FTW, 1, 1 << 5);
        x.put(
            xsave::XSTATE_BV,
            8,
            u128::from(xsave::xstate_bv(&x) | xsave::BV_X87),
        );
        // SAFETY: `x` is a whole 4 KiB `kvm_xsave`.
        unsafe { vcpu.set_xsave(&x) }.expect("KVM_SET_XSAVE");
        let state = CpuSnapshot {
            regs: vcpu.get_regs().expect("KVM_GET_REGS"),
            sregs: vcpu.get_sregs().expect("KVM_GET_SREGS"),
        };
        let insn = Decoder::with_ip(16, &[0xdb, 0xe3], 0, DecoderOptions::NONE).decode();
        let done = complete(&vcpu, &mem, &state, &insn).expect("fninit completes");
        let Done::Executed { regs, accesses } = done else {
            panic!("fninit raised {done:?} at reset (CR0.EM and TS clear)");
        };
        assert_eq!(regs.rip, state.regs.rip + 2);
        assert!(accesses.is_empty());
        let x = xsave::normalized_xsave(&vcpu.get_xsave().expect("KVM_GET_XSAVE"));
        assert_eq!(x.get(xsave::FCW, 2), 0x37f);
        assert_eq!(x.get(xsave::FSW, 2), 0);
        assert_eq!(x.get(xsave::FTW, 1), 0);
        assert_eq!(
            x.get(xsave::ST0 + 16 * 5, 16),
            TWO,
            "ST(5) is register 5 now"
        );
        assert_eq!(x.get(xsave::ST0, 16), 0);
    }

    #[test]
    fn the_mode_comes_from_efer_lma_and_cs() {
        let mut s = kvm_sregs::default();
        assert_eq!(bitness(&s), 16);
        s.cs.db = 1;
        assert_eq!(bitness(&s), 32);
        s.cs.l = 1;
        // CS.L outside long mode: compatibility rules do not apply, CS.D decides.
        assert_eq!(bitness(&s), 32);
        s.efer = Efer::LMA.bits();
        s.cs.db = 0;
        assert_eq!(bitness(&s), 64);
    }
}
