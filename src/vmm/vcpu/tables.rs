//! The guest's descriptor tables as the CPU uses them: where an exception's handler is
//! (IDT, real-mode IVT) and what loading a segment selector puts in the segment register
//! (GDT, LDT). Read through the paging registers of the state given, as the CPU reads them.

use crate::memory::GuestMem;
use crate::vmm::stop::paging_regs;
use crate::x86::DEBUG_SLOTS;
use crate::x86::Rflags;
use crate::x86::descriptors::{self, Descriptor, GateKind, TYPE_ACCESSED, TYPE_CODE};
use crate::x86::descriptors::{SegmentDescriptor, TYPE_READ_OR_WRITE, TableMode};
use crate::x86::paging::{GuestVirtAddr, read_virt, write_virt};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

/// Why a selector cannot be loaded into a segment register: the fault a `mov` (or, for
/// CS, a far jump) would take (SDM Vol. 3, 3.4.3, 5.5; Vol. 2, MOV and JMP).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    /// A null selector in CS, or in SS outside 64-bit mode (#GP).
    #[error("a null selector cannot be loaded into {0}")]
    Null(SegReg),
    /// The selector's index is past the GDT's or LDT's limit (#GP).
    #[error("selector {0:#x} is beyond the limit of its descriptor table")]
    BeyondLimit(u16),
    /// The selector names the LDT, and LDTR holds none (#GP).
    #[error("selector {0:#x} names the LDT, and there is none")]
    NoLdt(u16),
    /// The descriptor's bytes are not in guest memory.
    #[error("the descriptor of selector {0:#x} is not readable")]
    Unreadable(u16),
    /// The descriptor is no code or data segment of a kind this register takes (#GP).
    #[error("selector {0:#x} names no segment that {1} can hold")]
    WrongType(u16, SegReg),
    /// The segment is not present (#NP, or #SS for SS).
    #[error("the segment of selector {0:#x} is not present")]
    NotPresent(u16),
}

/// A segment register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegReg {
    /// CS: code.
    Cs,
    /// SS: stack, writable data.
    Ss,
    /// DS.
    Ds,
    /// ES.
    Es,
    /// FS.
    Fs,
    /// GS.
    Gs,
}

impl std::fmt::Display for SegReg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SegReg::Cs => "cs",
            SegReg::Ss => "ss",
            SegReg::Ds => "ds",
            SegReg::Es => "es",
            SegReg::Fs => "fs",
            SegReg::Gs => "gs",
        })
    }
}

/// Selector bit 2, TI: the descriptor is in the LDT (SDM Vol. 3, 3.4.2).
const SELECTOR_TI: u16 = 1 << 2;
/// Selector bits 1:0, RPL.
const SELECTOR_RPL: u16 = 3;
/// Bytes per IDT gate outside IA-32e mode, and in it (SDM Vol. 3, 6.11, 6.14.1); bytes per
/// real-mode interrupt vector (SDM Vol. 3, 20.1.4).
const GATE_BYTES: u64 = 8;
const GATE_BYTES_LONG: u64 = 16;
const IVT_ENTRY_BYTES: u64 = 4;

/// Reads `buf.len()` bytes at linear address `addr` as `sregs`' paging translates it; false
/// if any is unreadable.
fn read_linear(mem: &GuestMem, sregs: &kvm_sregs, addr: u64, buf: &mut [u8]) -> bool {
    read_virt(mem, &paging_regs(sregs), GuestVirtAddr(addr), buf) == buf.len()
}

fn table_mode(sregs: &kvm_sregs) -> TableMode {
    TableMode::from_regs(sregs.cr0, sregs.efer)
}

/// The code or data descriptor `selector` names in the GDT or LDT (SDM Vol. 3, 3.4.2,
/// 3.5.1). The selector must not be null.
fn descriptor(
    mem: &GuestMem,
    sregs: &kvm_sregs,
    selector: u16,
) -> Result<Descriptor, SegmentError> {
    let (base, limit) = if selector & SELECTOR_TI != 0 {
        if sregs.ldt.unusable != 0 || sregs.ldt.present == 0 {
            return Err(SegmentError::NoLdt(selector));
        }
        (sregs.ldt.base, u64::from(sregs.ldt.limit))
    } else {
        (sregs.gdt.base, u64::from(sregs.gdt.limit))
    };
    let offset = u64::from(selector & !7);
    // The limit is the last valid byte: the whole 8-byte descriptor must be within it.
    if offset + 7 > limit {
        return Err(SegmentError::BeyondLimit(selector));
    }
    let mut raw = [0u8; 8];
    if !read_linear(mem, sregs, base.wrapping_add(offset), &mut raw) {
        return Err(SegmentError::Unreadable(selector));
    }
    // A code or data descriptor is 8 bytes in every mode.
    Ok(descriptors::decode(&raw, TableMode::Protected).0)
}

/// The segment register the CPU holds after loading `selector` into `reg` in protected or
/// IA-32e mode, as `mov` (or a far jump, for CS) loads it: base, limit, attributes from
/// the descriptor (SDM Vol. 3, 3.4.3, 5.4.1, 5.5), or the fault it would take. `old` is
/// the register's current value (a null selector in FS or GS keeps its base, which 64-bit
/// code sets through the MSRs). Privilege checks are left out: the debugger may load any
/// segment the guest could load at some privilege.
pub fn load_segment(
    mem: &GuestMem,
    sregs: &kvm_sregs,
    reg: SegReg,
    selector: u16,
    old: &kvm_segment,
) -> Result<kvm_segment, SegmentError> {
    let long_mode = table_mode(sregs) == TableMode::Long && sregs.cs.l != 0;
    if selector & !SELECTOR_RPL == 0 {
        // A null selector: CS never; SS only in 64-bit mode at CPL < 3 (SDM Vol. 3, 5.5,
        // Vol. 2 MOV "In 64-bit mode"); the data registers become unusable.
        let cpl = sregs.cs.selector & SELECTOR_RPL;
        match reg {
            SegReg::Cs => return Err(SegmentError::Null(reg)),
            SegReg::Ss if !(long_mode && cpl < 3 && selector & SELECTOR_RPL == cpl) => {
                return Err(SegmentError::Null(reg));
            }
            _ => {}
        }
        let base = if matches!(reg, SegReg::Fs | SegReg::Gs) {
            old.base
        } else {
            0
        };
        return Ok(kvm_segment {
            base,
            selector,
            unusable: 1,
            ..Default::default()
        });
    }
    let Descriptor::Segment(d) = descriptor(mem, sregs, selector)? else {
        return Err(SegmentError::WrongType(selector, reg));
    };
    let code = d.type_ & TYPE_CODE != 0;
    let read_or_write = d.type_ & TYPE_READ_OR_WRITE != 0;
    let fits = d.code_data
        && match reg {
            SegReg::Cs => code,
            SegReg::Ss => !code && read_or_write,
            _ => !code || read_or_write,
        };
    if !fits {
        return Err(SegmentError::WrongType(selector, reg));
    }
    if !d.present {
        return Err(SegmentError::NotPresent(selector));
    }
    Ok(segment_register(selector, &d))
}

/// The hidden part of a segment register loaded from `d` (SDM Vol. 3, 3.4.3). The CPU sets
/// the descriptor's accessed bit on a load, so the cached type has it (VM entry requires it
/// of usable segments: SDM Vol. 3, 27.3.1.2).
fn segment_register(selector: u16, d: &SegmentDescriptor) -> kvm_segment {
    kvm_segment {
        base: d.base,
        limit: d.byte_limit(),
        selector,
        type_: d.type_ | TYPE_ACCESSED,
        present: 1,
        dpl: d.dpl,
        db: d.db.into(),
        s: 1,
        l: d.long.into(),
        g: d.granularity.into(),
        avl: d.avl.into(),
        unusable: 0,
        padding: 0,
    }
}

/// The linear address of the first instruction of the handler the CPU enters for
/// `vector`: from the IDT gate (SDM Vol. 3, 6.10, 6.12.1, 6.14.1) or, in real mode, the
/// interrupt vector table (SDM Vol. 3, 20.1.4). None when delivery would not reach a
/// handler this can name: no gate, a task gate, not present, or unreadable.
pub fn exception_handler(mem: &GuestMem, sregs: &kvm_sregs, vector: u8) -> Option<u64> {
    let mode = table_mode(sregs);
    let (base, limit) = (sregs.idt.base, u64::from(sregs.idt.limit));
    let size = match mode {
        TableMode::Real => IVT_ENTRY_BYTES,
        TableMode::Protected => GATE_BYTES,
        TableMode::Long => GATE_BYTES_LONG,
    };
    let offset = u64::from(vector) * size;
    if offset + size - 1 > limit {
        return None;
    }
    let mut raw = [0u8; GATE_BYTES_LONG as usize];
    let raw = &mut raw[..size as usize];
    if !read_linear(mem, sregs, base.wrapping_add(offset), raw) {
        return None;
    }
    if mode == TableMode::Real {
        let (segment, ip) = descriptors::ivt_entry(raw)?;
        return Some((u64::from(segment) << 4) + u64::from(ip));
    }
    let Descriptor::Gate(gate) = descriptors::decode(raw, mode).0 else {
        return None;
    };
    if !gate.present || !matches!(gate.kind, GateKind::Interrupt | GateKind::Trap) {
        return None;
    }
    if mode == TableMode::Long {
        // IA-32e gates lead to 64-bit code, where the offset is the linear address.
        return Some(gate.offset);
    }
    let Descriptor::Segment(cs) = descriptor(mem, sregs, gate.selector).ok()? else {
        return None;
    };
    Some(cs.base.wrapping_add(gate.offset) & 0xffff_ffff)
}

/// The exceptions a stepped instruction most often raises, most likely first: #PF, #GP,
/// #UD, #DE (SDM Vol. 3, 6.15).
pub const STEP_FAULT_VECTORS: [u8; DEBUG_SLOTS] = [14, 13, 6, 0];

/// The handlers a single step from linear address `rip` may enter through the IDT when the
/// stepped instruction faults ([`STEP_FAULT_VECTORS`], in that order, each address once),
/// for execute breakpoints that end the step at the handler's first instruction. A handler
/// at `rip` itself is left out: a breakpoint there would fire before the stepped
/// instruction ran. Empty in real mode (the IVT is out of scope) and where the IDT or its
/// gates cannot be read.
pub fn step_fault_handlers(
    mem: &GuestMem,
    sregs: &kvm_sregs,
    rip: u64,
) -> [Option<u64>; DEBUG_SLOTS] {
    let mut out = [None; DEBUG_SLOTS];
    if table_mode(sregs) == TableMode::Real {
        return out;
    }
    let mut n = 0;
    for vector in STEP_FAULT_VECTORS {
        let Some(handler) = exception_handler(mem, sregs, vector) else {
            continue;
        };
        if handler != rip && !out.contains(&Some(handler)) {
            out[n] = Some(handler);
            n += 1;
        }
    }
    out
}

/// Where a single step started: what the frame of a fault its instruction raised holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepFrom {
    /// RIP of the stepped instruction (a fault's frame saves it: SDM Vol. 3, 6.5).
    pub rip: u64,
    /// CS selector.
    pub cs: u16,
    /// RFLAGS as the guest has it, without the trap flag KVM steps with (KVM hides that
    /// one from KVM_GET_REGS).
    pub rflags: u64,
}

/// At a handler's first instruction, entered from a fault of the instruction a step ran
/// from `from`: takes out of the frame the trap flag the step put in it, when the guest's
/// own RFLAGS had none. The CPU saves RFLAGS, with the TF KVM steps with, before it clears
/// TF (SDM Vol. 3, 6.12.1.3), and the handler's `iret` would turn single-stepping on in
/// the guest. The frame (RIP, CS, RFLAGS, after an error code or not: SDM Vol. 3, 6.12.1,
/// 6.14.2) is recognised by its saved RIP and CS; anything else is left alone. True if
/// the trap flag was taken out.
pub fn untrap_fault_frame(
    mem: &GuestMem,
    regs: &kvm_regs,
    sregs: &kvm_sregs,
    from: StepFrom,
) -> bool {
    let tf = Rflags::TF.bits();
    if from.rflags & tf != 0 {
        return false;
    }
    let long = table_mode(sregs) == TableMode::Long;
    let (word, sp) = if long {
        (8, regs.rsp)
    } else {
        (4, sregs.ss.base.wrapping_add(regs.rsp) & 0xffff_ffff)
    };
    let mut raw = [0u8; 32];
    let raw = &mut raw[..4 * word];
    if !read_linear(mem, sregs, sp, raw) {
        return false;
    }
    let at = |i: usize| {
        let mut b = [0u8; 8];
        b[..word].copy_from_slice(&raw[i * word..(i + 1) * word]);
        u64::from_le_bytes(b)
    };
    let rip_mask = if long { u64::MAX } else { 0xffff_ffff };
    // Without an error code the frame starts at RSP, with one a word above.
    let Some(first) = (0..2).find(|&e| {
        at(e) & rip_mask == from.rip & rip_mask && at(e + 1) & 0xffff == u64::from(from.cs)
    }) else {
        return false;
    };
    let saved = at(first + 2);
    if saved & tf == 0 {
        return false;
    }
    // TF is bit 8: byte 1 of the saved RFLAGS, a write that never crosses a page.
    let byte_at = sp.wrapping_add((word * (first + 2)) as u64 + 1);
    let byte = [((saved & !tf) >> 8) as u8];
    write_virt(mem, &paging_regs(sregs), GuestVirtAddr(byte_at), &byte) == 1
}
