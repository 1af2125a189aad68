//! SSE moves between XMM registers and general-purpose registers or memory: `movd`,
//! `movq`, `movdqa`, `movdqu`, `movaps`, `movups`, `movapd`, `movupd` (legacy encodings,
//! XMM0–15). The registers are read and written in the XSAVE area (`cpu.rs` says why not
//! through KVM_SET_FPU); the upper YMM halves stay as they are, as legacy SSE leaves them
//! (SDM Vol. 1, 14.1.3).

use super::CannotComplete;
use super::cpu::{Cpu, Exception};
use crate::x86::xsave::{BV_SSE, XMM0, XsaveBytes};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// The 16-byte alignment the aligned forms demand of a memory operand (#GP(0) otherwise:
/// SDM Vol. 2B, MOVDQA, MOVAPS, MOVAPD).
const ALIGN: u64 = 16;

/// Where a move reads or writes.
enum Place {
    Xmm(usize),
    Gpr(Register),
    Mem(u32),
}

fn place(insn: &Instruction, op: u32) -> Result<Place, CannotComplete> {
    match insn.op_kind(op) {
        OpKind::Register => {
            let reg = insn.op_register(op);
            if reg.is_xmm() && reg.number() < 16 {
                Ok(Place::Xmm(reg.number()))
            } else if reg.is_gpr32() || reg.is_gpr64() {
                Ok(Place::Gpr(reg))
            } else {
                // MMX registers (and anything wider) are other instructions' business.
                Err(CannotComplete::Form("SSE move"))
            }
        }
        OpKind::Memory => Ok(Place::Mem(op)),
        _ => Err(CannotComplete::Form("SSE move")),
    }
}

/// The move: `size` bytes (4 for `movd`, 8 for `movq`, 16 for the rest) from the source
/// operand to the destination; an XMM destination of `movd`/`movq` is zero-extended to
/// 128 bits, a 32-bit GPR destination zero-extends to 64 (SDM Vol. 2A, MOVD/MOVQ).
pub fn mov(cpu: &mut Cpu<'_>, insn: &Instruction) -> Result<Option<Exception>, CannotComplete> {
    let (dest, source) = (place(insn, 0)?, place(insn, 1)?);
    let size = match insn.mnemonic() {
        Mnemonic::Movd => 4,
        Mnemonic::Movq => 8,
        _ => 16,
    };
    if let Some(e) = cpu.sse_unavailable() {
        return Ok(Some(e));
    }
    let aligned = matches!(
        insn.mnemonic(),
        Mnemonic::Movdqa | Mnemonic::Movaps | Mnemonic::Movapd
    );
    let mut value = [0u8; 16];
    match source {
        Place::Xmm(n) => {
            let v = cpu.xsave()?.get(XMM0 + 16 * n, size);
            value[..size].copy_from_slice(&v.to_le_bytes()[..size]);
        }
        Place::Gpr(reg) => {
            let v = cpu.gpr(reg).ok_or(CannotComplete::Form("SSE move"))?;
            value[..8].copy_from_slice(&v.to_le_bytes());
            value[reg.size()..].fill(0);
        }
        Place::Mem(op) => {
            let at = cpu.operand(insn, op)?;
            if aligned && at.linear % ALIGN != 0 {
                return Ok(Some(Exception::GP0));
            }
            if let Some(e) = cpu.read(at, &mut value[..size])? {
                return Ok(Some(e));
            }
        }
    }
    match dest {
        Place::Xmm(n) => {
            // movd/movq zero the rest of the register; a 16-byte move writes all of it.
            let v = u128::from_le_bytes(value);
            cpu.xsave_mut(BV_SSE)?.put(XMM0 + 16 * n, 16, v);
        }
        Place::Gpr(reg) => cpu.set_gpr(
            reg,
            u64::from_le_bytes(value[..8].try_into().unwrap_or_default()),
        )?,
        Place::Mem(op) => {
            let at = cpu.operand(insn, op)?;
            if aligned && at.linear % ALIGN != 0 {
                return Ok(Some(Exception::GP0));
            }
            return cpu.write(at, &value[..size]);
        }
    }
    Ok(None)
}
