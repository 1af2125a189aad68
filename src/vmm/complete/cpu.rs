//! The vCPU state a completion works on: general-purpose registers, the x87/SSE state
//! (read from KVM only when a completion asks), memory operands through the guest's page
//! tables, and the exceptions the CPU would raise on the way.
//!
//! The x87/SSE state goes through KVM_GET/SET_XSAVE, not KVM_GET/SET_FPU: KVM_SET_FPU
//! writes the legacy region but leaves XSTATE_BV alone, so when the guest's x87 or SSE
//! component is in its initial configuration (XSTATE_BV bit clear, as at reset) the
//! write is ignored by the XRSTOR that loads the guest's state (SDM Vol. 1, 13.8.1), and
//! lost. Measured on PVM: `movd %ecx,%xmm15` completed through KVM_SET_FPU left XMM15 0.

use super::CannotComplete;
use crate::memory::GuestMem;
use crate::vmm::stop::CpuSnapshot;
use crate::x86::paging::{self, GuestVirtAddr, PagingMode, WalkError};
use crate::x86::xsave::{self as area, XsaveBytes};
use crate::x86::{Cr0, Cr4, PTE_ACCESSED, PTE_DIRTY, Rflags};
use iced_x86::{Instruction, OpKind, Register};
use kvm_bindings::{kvm_regs, kvm_sregs, kvm_xsave};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// An exception a completion raises instead of executing the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector (SDM Vol. 3, Table 6-1).
    pub vector: u8,
    /// The error code, for the vectors that push one.
    pub error_code: Option<u32>,
    /// CR2 for a #PF: the linear address that faulted.
    pub cr2: Option<u64>,
}

impl Exception {
    /// #UD, invalid opcode.
    pub const UD: Exception = Exception::plain(6);
    /// #NM, device not available.
    pub const NM: Exception = Exception::plain(7);
    /// #GP(0), general protection.
    pub const GP0: Exception = Exception::with_code(13, 0);
    /// #SS(0), stack-segment fault.
    pub const SS0: Exception = Exception::with_code(12, 0);
    /// #MF, x87 floating-point error.
    pub const MF: Exception = Exception::plain(16);

    const fn plain(vector: u8) -> Exception {
        Exception {
            vector,
            error_code: None,
            cr2: None,
        }
    }

    const fn with_code(vector: u8, code: u32) -> Exception {
        Exception {
            vector,
            error_code: Some(code),
            cr2: None,
        }
    }

    /// #PF at `addr` with `code` (SDM Vol. 3, 4.7).
    fn page_fault(addr: u64, code: u32) -> Exception {
        Exception {
            vector: 14,
            error_code: Some(code),
            cr2: Some(addr),
        }
    }
}

/// #PF error-code bits (SDM Vol. 3, 4.7, Figure 4-12).
const PF_PRESENT: u32 = 1 << 0;
const PF_WRITE: u32 = 1 << 1;
const PF_USER: u32 = 1 << 2;
const PF_RSVD: u32 = 1 << 3;

/// A guest-physical range a completed instruction read or wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Guest-physical start.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// A write (else a read).
    pub write: bool,
}

/// A memory operand, resolved: its linear address and the segment it goes through.
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    /// The linear address (segment base included).
    pub linear: u64,
    /// Whether the segment is SS (a bad address is then #SS, not #GP).
    stack: bool,
}

impl Operand {
    /// The part of the operand `by` bytes in.
    pub fn offset(self, by: u64) -> Operand {
        Operand {
            linear: self.linear.wrapping_add(by),
            ..self
        }
    }
}

/// The state of one completion.
pub struct Cpu<'a> {
    vcpu: &'a VcpuFd,
    mem: &'a GuestMem,
    /// General-purpose registers, changed in place.
    pub regs: kvm_regs,
    /// System registers (read-only here).
    pub sregs: kvm_sregs,
    /// The XSAVE area, once read, normalized (every component XSTATE_BV marks initial
    /// holds its initial configuration).
    xsave: Option<Box<kvm_xsave>>,
    /// Whether the area was changed, and the XSTATE_BV bits of the components changed.
    dirty: bool,
    changed: u64,
    /// Writes held until [`Cpu::commit`], so a fault part-way writes nothing.
    writes: Vec<(GuestAddress, Vec<u8>)>,
    /// Every access made, for the watchpoints.
    pub accesses: Vec<Access>,
    bitness: u32,
}

impl<'a> Cpu<'a> {
    /// The state at the stop `state`.
    pub fn new(vcpu: &'a VcpuFd, mem: &'a GuestMem, state: CpuSnapshot) -> Cpu<'a> {
        Cpu {
            vcpu,
            mem,
            regs: state.regs,
            sregs: state.sregs,
            xsave: None,
            dirty: false,
            changed: 0,
            writes: Vec::new(),
            accesses: Vec::new(),
            bitness: super::bitness(&state.sregs),
        }
    }

    /// The current privilege level: CS.DPL (SDM Vol. 3, 5.5; SS.DPL is the same).
    pub fn cpl(&self) -> u8 {
        self.sregs.cs.dpl
    }

    /// CR0.
    pub fn cr0(&self) -> Cr0 {
        Cr0::from_bits_retain(self.sregs.cr0)
    }

    /// CR4.
    pub fn cr4(&self) -> Cr4 {
        Cr4::from_bits_retain(self.sregs.cr4)
    }

    /// RFLAGS.
    pub fn rflags(&self) -> Rflags {
        Rflags::from_bits_retain(self.regs.rflags)
    }

    /// The SSE checks every legacy SSE instruction makes before anything else: #UD when
    /// CR0.EM is set or CR4.OSFXSR clear, then #NM when CR0.TS is set (SDM Vol. 2, "SIMD
    /// Floating-Point Exceptions"; Vol. 3, 13.1.3, Table 2-2).
    pub fn sse_unavailable(&self) -> Option<Exception> {
        if self.cr0().contains(Cr0::EM) || !self.cr4().contains(Cr4::OSFXSR) {
            return Some(Exception::UD);
        }
        self.cr0().contains(Cr0::TS).then_some(Exception::NM)
    }

    /// The x87/SSE/AVX state (KVM_GET_XSAVE once), normalized.
    pub fn xsave(&mut self) -> Result<&kvm_xsave, CannotComplete> {
        self.xsave_loaded().map(|x| &*x)
    }

    fn xsave_loaded(&mut self) -> Result<&mut kvm_xsave, CannotComplete> {
        if self.xsave.is_none() {
            let x = self
                .vcpu
                .get_xsave()
                .map_err(|e| CannotComplete::Kvm("KVM_GET_XSAVE", e))?;
            self.xsave = Some(area::normalized_xsave(&x));
        }
        self.xsave
            .as_deref_mut()
            .ok_or(CannotComplete::State("xsave", "no XSAVE area"))
    }

    /// The x87/SSE/AVX state, to change the components `bv` (XSTATE_BV bits): they are
    /// marked as holding state when [`Cpu::commit`] writes the area back.
    pub fn xsave_mut(&mut self, bv: u64) -> Result<&mut kvm_xsave, CannotComplete> {
        self.dirty = true;
        self.changed |= bv;
        self.xsave_loaded()
    }

    /// Writes back what the completion changed, apart from the general-purpose registers
    /// (the caller loads those): the XSAVE area and the held memory writes.
    pub fn commit(&mut self) -> Result<(), CannotComplete> {
        if let (true, Some(x)) = (self.dirty, self.xsave.as_deref_mut()) {
            let bv = area::xstate_bv(x) | self.changed;
            x.put(area::XSTATE_BV, 8, bv.into());
            // SAFETY: `x` is a whole `kvm_xsave` (4 KiB), the size KVM_SET_XSAVE reads.
            unsafe { self.vcpu.set_xsave(x) }
                .map_err(|e| CannotComplete::Kvm("KVM_SET_XSAVE", e))?;
        }
        for (gpa, data) in std::mem::take(&mut self.writes) {
            // Checked to be RAM when the write was translated.
            self.mem
                .write_slice(&data, gpa)
                .map_err(|_| CannotComplete::NotRam("write", gpa.0))?;
        }
        Ok(())
    }

    /// The KVM vCPU, for state that has no accessor here (XCR0).
    pub fn vcpu(&self) -> &VcpuFd {
        self.vcpu
    }

    /// The value of a general-purpose register of any size (AH–BH excluded).
    pub fn gpr(&self, reg: Register) -> Option<u64> {
        let full = *self.gpr_slot(reg)?;
        Some(match reg.size() {
            8 => full,
            4 => full & 0xffff_ffff,
            2 => full & 0xffff,
            _ => full & 0xff,
        })
    }

    /// Writes a general-purpose register as the CPU does: a 32-bit write zero-extends into
    /// the 64-bit register, 16- and 8-bit writes keep the other bits (SDM Vol. 1, 3.4.1.1).
    pub fn set_gpr(&mut self, reg: Register, value: u64) -> Result<(), CannotComplete> {
        let size = reg.size();
        let slot = self
            .gpr_slot_mut(reg)
            .ok_or(CannotComplete::Form("register"))?;
        *slot = match size {
            8 => value,
            4 => value & 0xffff_ffff,
            2 => (*slot & !0xffff) | (value & 0xffff),
            _ => (*slot & !0xff) | (value & 0xff),
        };
        Ok(())
    }

    fn gpr_index(reg: Register) -> Option<usize> {
        if !reg.is_gpr()
            || matches!(
                reg,
                Register::AH | Register::CH | Register::DH | Register::BH
            )
        {
            return None;
        }
        Some(reg.full_register().number())
    }

    fn gpr_slot(&self, reg: Register) -> Option<&u64> {
        let r = &self.regs;
        Some(match Self::gpr_index(reg)? {
            0 => &r.rax,
            1 => &r.rcx,
            2 => &r.rdx,
            3 => &r.rbx,
            4 => &r.rsp,
            5 => &r.rbp,
            6 => &r.rsi,
            7 => &r.rdi,
            8 => &r.r8,
            9 => &r.r9,
            10 => &r.r10,
            11 => &r.r11,
            12 => &r.r12,
            13 => &r.r13,
            14 => &r.r14,
            _ => &r.r15,
        })
    }

    fn gpr_slot_mut(&mut self, reg: Register) -> Option<&mut u64> {
        let r = &mut self.regs;
        Some(match Self::gpr_index(reg)? {
            0 => &mut r.rax,
            1 => &mut r.rcx,
            2 => &mut r.rdx,
            3 => &mut r.rbx,
            4 => &mut r.rsp,
            5 => &mut r.rbp,
            6 => &mut r.rsi,
            7 => &mut r.rdi,
            8 => &mut r.r8,
            9 => &mut r.r9,
            10 => &mut r.r10,
            11 => &mut r.r11,
            12 => &mut r.r12,
            13 => &mut r.r13,
            14 => &mut r.r14,
            _ => &mut r.r15,
        })
    }

    /// The base of segment `seg`: 0 for CS, DS, ES and SS in 64-bit mode, whose FS and GS
    /// keep theirs (SDM Vol. 3, 3.4.4).
    fn segment_base(&self, seg: Register) -> Option<u64> {
        let s = &self.sregs;
        let base = match seg {
            Register::FS => s.fs.base,
            Register::GS => s.gs.base,
            _ if self.bitness == 64 => 0,
            Register::ES => s.es.base,
            Register::CS => s.cs.base,
            Register::SS => s.ss.base,
            Register::DS => s.ds.base,
            _ => return None,
        };
        Some(base)
    }

    /// Resolves memory operand `op` of `insn`: base + index·scale + displacement (the
    /// target for RIP-relative operands, as decoded at RIP) in the address size, plus the
    /// segment base; a 32-bit linear address outside 64-bit mode. Segment limits are not
    /// checked (flat segments are what kernels use).
    pub fn operand(&self, insn: &Instruction, op: u32) -> Result<Operand, CannotComplete> {
        if insn.op_kind(op) != OpKind::Memory {
            return Err(CannotComplete::Form("memory operand"));
        }
        let linear = insn
            .virtual_address(op, 0, |reg, _, _| {
                if reg.is_segment_register() {
                    self.segment_base(reg)
                } else {
                    self.gpr(reg)
                }
            })
            .ok_or(CannotComplete::Form("address"))?;
        let linear = if self.bitness == 64 {
            linear
        } else {
            linear & 0xffff_ffff
        };
        Ok(Operand {
            linear,
            stack: insn.memory_segment() == Register::SS,
        })
    }

    /// Reads `buf.len()` bytes at `at`, or the exception the access raises.
    pub fn read(
        &mut self,
        at: Operand,
        buf: &mut [u8],
    ) -> Result<Option<Exception>, CannotComplete> {
        let mut done = 0;
        while done < buf.len() {
            let va = at.linear.wrapping_add(done as u64);
            let (gpa, chunk) = match self.translate(at, va, buf.len() - done, false)? {
                Ok(t) => t,
                Err(exception) => return Ok(Some(exception)),
            };
            self.mem
                .read_slice(&mut buf[done..done + chunk], gpa)
                .map_err(|_| CannotComplete::NotRam("read", gpa.0))?;
            done += chunk;
        }
        Ok(None)
    }

    /// Writes `data` at `at` (held until [`Cpu::commit`]), or the exception the access
    /// raises.
    pub fn write(&mut self, at: Operand, data: &[u8]) -> Result<Option<Exception>, CannotComplete> {
        let mut done = 0;
        while done < data.len() {
            let va = at.linear.wrapping_add(done as u64);
            let (gpa, chunk) = match self.translate(at, va, data.len() - done, true)? {
                Ok(t) => t,
                Err(exception) => return Ok(Some(exception)),
            };
            if !self.mem.check_range(gpa, chunk) {
                return Err(CannotComplete::NotRam("write", gpa.0));
            }
            self.writes.push((gpa, data[done..done + chunk].to_vec()));
            done += chunk;
        }
        Ok(None)
    }

    /// Translates `va` for an access of up to `len` bytes: the guest-physical address and
    /// how many bytes fit in its page, or the fault the CPU raises. Sets the accessed
    /// bits (and the dirty bit for a write) as the MMU would (SDM Vol. 3, 4.8).
    #[allow(clippy::type_complexity)]
    fn translate(
        &mut self,
        at: Operand,
        va: u64,
        len: usize,
        write: bool,
    ) -> Result<Result<(GuestAddress, usize), Exception>, CannotComplete> {
        let pregs = crate::vmm::stop::paging_regs(&self.sregs);
        let user = self.cpl() == 3;
        let base_code = if write { PF_WRITE } else { 0 } | if user { PF_USER } else { 0 };
        let t = match paging::translate(self.mem, &pregs, GuestVirtAddr(va)) {
            Ok(t) => t,
            Err(WalkError::NotPresent { .. }) => {
                return Ok(Err(Exception::page_fault(va, base_code)));
            }
            Err(WalkError::ReservedBits { .. }) => {
                return Ok(Err(Exception::page_fault(
                    va,
                    base_code | PF_PRESENT | PF_RSVD,
                )));
            }
            Err(WalkError::NonCanonical(_)) => {
                return Ok(Err(if at.stack {
                    Exception::SS0
                } else {
                    Exception::GP0
                }));
            }
            Err(WalkError::TableOutsideRam { gpa, .. }) => {
                return Err(CannotComplete::NotRam("page walk", gpa.0));
            }
            Err(WalkError::AddressTooWide { .. }) => return Err(CannotComplete::Form("address")),
        };
        let paging = pregs.mode() != PagingMode::Disabled;
        if paging {
            // Supervisor writes to read-only pages fault when CR0.WP is set; user pages
            // fault for supervisor data accesses under SMAP unless RFLAGS.AC (SDM Vol. 3,
            // 4.6.1).
            let wp = self.cr0().contains(Cr0::WP);
            let denied = (write && !t.writable && (user || wp))
                || (user && !t.user)
                || (!user
                    && t.user
                    && self.cr4().contains(Cr4::SMAP)
                    && !self.rflags().contains(Rflags::AC));
            if denied {
                return Ok(Err(Exception::page_fault(va, base_code | PF_PRESENT)));
            }
        }
        let left = t.page_size - (va & (t.page_size - 1));
        let chunk = usize::try_from(left).map_or(len, |l| l.min(len));
        if !self.mem.check_range(t.gpa, chunk) {
            return Err(CannotComplete::NotRam("memory operand", t.gpa.0));
        }
        // The A and D bits live in the low byte of every entry, 4- and 8-byte alike; PAE's
        // four PDPTEs have none (SDM Vol. 3, 4.4.1).
        let last = t.levels.len().saturating_sub(1);
        let first = usize::from(pregs.mode() == PagingMode::Pae);
        for (i, level) in t.levels.iter().enumerate().skip(first) {
            let want = PTE_ACCESSED | if write && i == last { PTE_DIRTY } else { 0 };
            if level.entry & want != want {
                let low = (level.entry | want) as u8;
                let _ = self.mem.write_obj(low, level.entry_gpa);
            }
        }
        self.accesses.push(Access {
            gpa: t.gpa.0,
            len: chunk as u64,
            write,
        });
        Ok(Ok((t.gpa, chunk)))
    }
}
