//! What the fuzzer knows independently of the stub: the demo's symbols and code bytes (from
//! the ELF embedded in kvmgdb), the scratch RAM it owns, and the register file layout (from
//! the stub's own target description, as gdb learns it).

use crate::guest::{elf_symbols, elf64_code_segments};
use std::collections::HashMap;

/// Guest-physical (= virtual: the demo identity-maps RAM) start of the fuzzer's scratch area:
/// 8 MiB, far above the demo's image (linked at 1 MiB, under 64 KiB, guests/flat64.ld) and
/// the VMM's boot structures (below 512 KiB, src/boot/layout.rs); the demo never touches it.
pub const SCRATCH: u64 = 0x80_0000;
/// Scratch size. The first [`MARKER_LEN`] bytes hold the sync marker and are written only
/// at VM start; the fuzzer's `M`/`X` writes go to the rest.
pub const SCRATCH_LEN: usize = 0x2000;
/// Bytes of the marker the sync sentinel reads back.
pub const MARKER_LEN: usize = 256;
/// Guest RAM given to kvmgdb (its default; the scratch area must fit below it).
pub const MEMORY: &str = "128M";

/// Errors reading the guest or the register layout.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The embedded demo could not be parsed.
    #[error("the embedded demo guest: {0}")]
    Elf(&'static str),
    /// A needed symbol is missing.
    #[error("the demo guest has no symbol {0}")]
    Symbol(&'static str),
    /// The target description lacks a register the oracles read.
    #[error("the target description has no register {0}")]
    Register(&'static str),
}

/// The demo guest as its ELF describes it.
#[derive(Clone, Debug)]
pub struct Demo {
    /// Functions the demo's main loop calls on every pass (breakpoints there hit at once).
    pub hot: Vec<u64>,
    /// `tick`: its breakpoint hits once per `counter++`.
    pub tick: u64,
    /// `counter` (u64), incremented once per `tick()`.
    pub counter: u64,
    /// Executable segments: (address, bytes); the guest never writes them.
    pub code: Vec<(u64, Vec<u8>)>,
}

impl Demo {
    /// Reads kvmgdb's embedded demo.
    pub fn load() -> Result<Demo, TargetError> {
        Demo::parse(kvmgdb::guests::DEMO_ELF)
    }

    fn parse(elf: &[u8]) -> Result<Demo, TargetError> {
        let syms = elf_symbols(elf).map_err(TargetError::Elf)?;
        let get = |n: &'static str| syms.get(n).copied().ok_or(TargetError::Symbol(n));
        Ok(Demo {
            hot: vec![get("tick")?, get("bp_loop_target")?, get("touch_watched")?],
            tick: get("tick")?,
            counter: get("counter")?,
            code: elf64_code_segments(elf).map_err(TargetError::Elf)?,
        })
    }

    /// True when `pc` lies in the demo's code.
    pub fn in_code(&self, pc: u64) -> bool {
        self.code
            .iter()
            .any(|(a, b)| (*a..*a + b.len() as u64).contains(&pc))
    }

    /// The code bytes at `addr..addr + len`, if all are code.
    pub fn code_at(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.code.iter().find_map(|(a, b)| {
            let off = usize::try_from(addr.checked_sub(*a)?).ok()?;
            b.get(off..off.checked_add(len)?)
        })
    }
}

/// Where a register sits in the `g` packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegSlot {
    /// Its number (for `p`/`P`).
    pub num: usize,
    /// Byte offset in the decoded `g` data.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// The register file as the target description lays it out.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Every register in number order.
    pub regs: Vec<RegSlot>,
    by_name: HashMap<String, RegSlot>,
    /// Decoded size of a `g` reply.
    pub g_len: usize,
}

impl Layout {
    /// Reads the `<reg>` elements of target.xml. Registers without `regnum` are numbered
    /// after the previous one (gdb manual, "Target Description Format").
    pub fn from_xml(xml: &str) -> Layout {
        let mut regs = Vec::new();
        let mut by_name = HashMap::new();
        let mut next = 0usize;
        let mut offset = 0usize;
        for tag in xml.split("<reg ").skip(1) {
            let tag = tag.split('>').next().unwrap_or("");
            let attr = |k: &str| {
                tag.split(&format!("{k}=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next())
            };
            let (Some(name), Some(bits)) = (attr("name"), attr("bitsize")) else {
                continue;
            };
            let Ok(bits) = bits.parse::<usize>() else {
                continue;
            };
            let num = attr("regnum").and_then(|n| n.parse().ok()).unwrap_or(next);
            next = num + 1;
            let slot = RegSlot {
                num,
                offset,
                size: bits / 8,
            };
            offset += bits / 8;
            regs.push(slot);
            by_name.insert(name.to_string(), slot);
        }
        Layout {
            regs,
            by_name,
            g_len: offset,
        }
    }

    /// The slot of register `name`.
    pub fn get(&self, name: &'static str) -> Result<RegSlot, TargetError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or(TargetError::Register(name))
    }

    /// A register's value (little-endian, up to 8 bytes) in decoded `g` data.
    pub fn value(&self, g: &[u8], slot: RegSlot) -> Option<u64> {
        let b = g.get(slot.offset..slot.offset + slot.size.min(8))?;
        let mut v = [0u8; 8];
        v[..b.len()].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_symbols_and_code() {
        let d = Demo::load().unwrap();
        assert!(d.in_code(d.tick));
        assert!(d.code_at(d.tick, 1).is_some());
        assert!(SCRATCH > d.counter + 0x10000);
    }

    #[test]
    fn layout_from_xml() {
        let l = Layout::from_xml(
            r#"<reg name="rax" bitsize="64" type="int64"/><reg name="eflags" bitsize="32"/>
               <reg name="cr0" bitsize="64" regnum="27"/><reg name="x" bitsize="128"/>"#,
        );
        assert_eq!(l.g_len, 8 + 4 + 8 + 16);
        let cr0 = l.get("cr0").unwrap();
        assert_eq!((cr0.num, cr0.offset), (27, 12));
        assert_eq!(l.regs[3].num, 28);
    }
}
