//! What the benchmark knows about its guest, `guests/bench.S`: symbol addresses read from
//! the ELF, the memory pattern it writes, and a model of its hot loop that predicts where
//! every single step must land.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The xorshift32 seed `bench.S` starts its page pattern from (`BENCH_SEED`).
const BENCH_SEED: u32 = 0x2545_F491;
/// The pattern's page size: every page starts with its address and its complement.
pub const PAGE: usize = 4096;

/// Errors reading the guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The ELF file could not be read.
    #[error("cannot read the bench guest {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The file is not the ELF32 the benchmark expects.
    #[error("the bench guest {0} is not a usable ELF32 file: {1}")]
    Format(PathBuf, &'static str),
    /// A symbol the benchmark needs is missing.
    #[error("the bench guest has no symbol {0}")]
    Symbol(&'static str),
}

/// The bench guest's addresses.
#[derive(Clone, Debug)]
pub struct BenchGuest {
    /// The ELF file.
    pub path: PathBuf,
    /// `bench_ready`: the guest has filled the pattern.
    pub ready: u64,
    /// The five instructions of the hot loop, `bench_loop` .. `bench_loop_4`.
    pub loop_pcs: [u64; 5],
    /// The pattern region, `bench_pattern` .. `bench_pattern_end`.
    pub pattern: std::ops::Range<u64>,
}

impl BenchGuest {
    /// Reads the symbols of `path`.
    pub fn load(path: &Path) -> Result<BenchGuest, GuestError> {
        let data = std::fs::read(path).map_err(|e| GuestError::Read(path.to_path_buf(), e))?;
        let syms = elf_symbols(&data).map_err(|m| GuestError::Format(path.to_path_buf(), m))?;
        let get = |name: &'static str| syms.get(name).copied().ok_or(GuestError::Symbol(name));
        Ok(BenchGuest {
            path: path.to_path_buf(),
            ready: get("bench_ready")?,
            loop_pcs: [
                get("bench_loop")?,
                get("bench_loop_1")?,
                get("bench_loop_2")?,
                get("bench_loop_3")?,
                get("bench_loop_4")?,
            ],
            pattern: get("bench_pattern")?..get("bench_pattern_end")?,
        })
    }

    /// The loop position of `pc`, if `pc` is one of the loop's instructions.
    pub fn loop_index(&self, pc: u64) -> Option<usize> {
        self.loop_pcs.iter().position(|&p| p == pc)
    }
}

/// The hot loop's architectural state as far as the benchmark tracks it: which of the five
/// instructions is next, and EAX, which counts the `inc`s executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopState {
    /// Index into [`BenchGuest::loop_pcs`].
    pub index: usize,
    /// EAX.
    pub eax: u32,
}

impl LoopState {
    /// The state after one instruction: four `inc %eax` then `jmp bench_loop`.
    pub fn step(self) -> LoopState {
        LoopState {
            index: (self.index + 1) % 5,
            eax: if self.index < 4 {
                self.eax.wrapping_add(1)
            } else {
                self.eax
            },
        }
    }

    /// The state after `n` instructions.
    pub fn steps(self, n: u64) -> LoopState {
        let laps = n / 5;
        let mut s = LoopState {
            index: self.index,
            eax: self.eax.wrapping_add((laps * 4) as u32),
        };
        for _ in 0..n % 5 {
            s = s.step();
        }
        s
    }

    /// The state when execution next reaches loop index `target` (at least one instruction
    /// later): where a breakpoint there stops.
    pub fn run_to(self, target: usize) -> LoopState {
        let mut s = self.step();
        while s.index != target {
            s = s.step();
        }
        s
    }
}

/// One page of the pattern (`bench.S`), without its 8-byte header.
pub struct Pattern {
    body: Vec<u8>,
}

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

impl Pattern {
    /// Computes the xorshift32 page body exactly as the guest does.
    pub fn new() -> Pattern {
        let mut body = Vec::with_capacity(PAGE - 8);
        let mut x = BENCH_SEED;
        while body.len() < PAGE - 8 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            body.extend_from_slice(&x.to_le_bytes());
        }
        Pattern { body }
    }

    /// The pattern byte at guest address `addr`.
    pub fn byte_at(&self, addr: u64) -> u8 {
        let off = (addr % PAGE as u64) as usize;
        let page = (addr - off as u64) as u32;
        match off {
            0..4 => page.to_le_bytes()[off],
            4..8 => (!page).to_le_bytes()[off - 4],
            _ => self.body[off - 8],
        }
    }

    /// Checks `data`, read from guest address `addr`; on a mismatch, says where.
    pub fn verify(&self, addr: u64, data: &[u8]) -> Result<(), String> {
        let mut a = addr;
        let mut rest = data;
        while !rest.is_empty() {
            let off = (a % PAGE as u64) as usize;
            let n = (PAGE - off).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            // Fast path: the page body; bytes in the header are checked one by one.
            let body_from = off.max(8);
            let ok_body = body_from >= off + n
                || chunk[body_from - off..] == self.body[body_from - 8..off + n - 8];
            let ok_header = (off..off.max(8).min(off + n))
                .all(|o| chunk[o - off] == self.byte_at(a - off as u64 + o as u64));
            if !(ok_body && ok_header) {
                let bad = chunk
                    .iter()
                    .enumerate()
                    .find(|&(i, &b)| b != self.byte_at(a + i as u64))
                    .map_or(0, |(i, _)| i);
                let at = a + bad as u64;
                return Err(format!(
                    "memory at {at:#x} reads {:#04x}, the guest wrote {:#04x}",
                    chunk[bad],
                    self.byte_at(at)
                ));
            }
            a += n as u64;
            rest = tail;
        }
        Ok(())
    }
}

/// Little-endian field readers over an ELF file, each failing on a truncated file.
struct ElfBytes<'a>(&'a [u8]);

impl ElfBytes<'_> {
    fn bytes(&self, o: usize, n: usize) -> Result<&[u8], &'static str> {
        o.checked_add(n)
            .and_then(|end| self.0.get(o..end))
            .ok_or("truncated")
    }

    fn u16_at(&self, o: usize) -> Result<u16, &'static str> {
        let b = self.bytes(o, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, o: usize) -> Result<u32, &'static str> {
        let b = self.bytes(o, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 32-bit field in ELF32, a 64-bit one in ELF64 (addresses, offsets, sizes).
    fn word_at(&self, o: usize, is64: bool) -> Result<usize, &'static str> {
        if !is64 {
            return Ok(self.u32_at(o)? as usize);
        }
        let b = self.bytes(o, 8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(w)).map_err(|_| "field out of range")
    }

    /// Checks the magic and byte order; returns whether the file is ELF64.
    fn class(&self) -> Result<bool, &'static str> {
        if self.0.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err("no ELF magic");
        }
        match (self.0.get(4), self.0.get(5)) {
            (Some(1), Some(1)) => Ok(false),
            (Some(2), Some(1)) => Ok(true),
            _ => Err("not a little-endian ELF32 or ELF64 file"),
        }
    }
}

/// The symbol table of a little-endian ELF32 or ELF64 file: name → value.
pub(crate) fn elf_symbols(data: &[u8]) -> Result<HashMap<String, u64>, &'static str> {
    const SHT_SYMTAB: u32 = 2;
    let f = ElfBytes(data);
    let is64 = f.class()?;
    // (e_shoff, e_shentsize, e_shnum; sh_offset, sh_size, sh_link; symbol size, st_value)
    let (shoff, shentsize, shnum) = if is64 {
        (f.word_at(0x28, true)?, f.u16_at(0x3a)?, f.u16_at(0x3c)?)
    } else {
        (f.word_at(0x20, false)?, f.u16_at(0x2e)?, f.u16_at(0x30)?)
    };
    let (sh_offset, sh_size, sh_link, sym_size, st_value) = if is64 {
        (0x18, 0x20, 0x28, 24, 8)
    } else {
        (16, 20, 24, 16, 4)
    };
    let (shentsize, shnum) = (shentsize as usize, shnum as usize);
    if shentsize < sh_link + 4 {
        return Err("bad section header size");
    }
    let section = |i: usize| shoff + i * shentsize;
    let symtab = (0..shnum)
        .find(|&i| f.u32_at(section(i) + 4) == Ok(SHT_SYMTAB))
        .ok_or("no symbol table")?;
    let sh = section(symtab);
    let (off, size) = (
        f.word_at(sh + sh_offset, is64)?,
        f.word_at(sh + sh_size, is64)?,
    );
    let strtab = section(f.u32_at(sh + sh_link)? as usize);
    let (str_off, str_size) = (
        f.word_at(strtab + sh_offset, is64)?,
        f.word_at(strtab + sh_size, is64)?,
    );
    let strings = f.bytes(str_off, str_size)?;
    let mut out = HashMap::new();
    for sym in (off..off.saturating_add(size)).step_by(sym_size) {
        let name_off = f.u32_at(sym)? as usize;
        let value = f.word_at(sym + st_value, is64)? as u64;
        let name = strings
            .get(name_off..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .ok_or("bad symbol name")?;
        if !name.is_empty() {
            out.insert(String::from_utf8_lossy(name).into_owned(), value);
        }
    }
    Ok(out)
}

/// The file contents of an ELF64 file's executable PT_LOAD segments: (p_vaddr, bytes).
pub(crate) fn elf64_code_segments(data: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, &'static str> {
    const PT_LOAD: u32 = 1;
    const PF_X: u32 = 1;
    let f = ElfBytes(data);
    if !f.class()? {
        return Err("not ELF64");
    }
    let (phoff, phentsize, phnum) = (
        f.word_at(0x20, true)?,
        f.u16_at(0x36)? as usize,
        f.u16_at(0x38)? as usize,
    );
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if f.u32_at(ph)? != PT_LOAD || f.u32_at(ph + 4)? & PF_X == 0 {
            continue;
        }
        let (offset, vaddr, filesz) = (
            f.word_at(ph + 8, true)?,
            f.word_at(ph + 0x10, true)?,
            f.word_at(ph + 0x20, true)?,
        );
        out.push((vaddr as u64, f.bytes(offset, filesz)?.to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_model() {
        let s = LoopState { index: 0, eax: 0 };
        assert_eq!(s.steps(5), LoopState { index: 0, eax: 4 });
        assert_eq!(s.steps(1003), s.steps(1000).steps(3));
        let mut t = s;
        for _ in 0..1003 {
            t = t.step();
        }
        assert_eq!(t, s.steps(1003));
        assert_eq!(s.run_to(0), LoopState { index: 0, eax: 4 });
        assert_eq!(
            LoopState { index: 4, eax: 9 }.run_to(0),
            LoopState { index: 0, eax: 9 }
        );
    }

    #[test]
    fn pattern_check() {
        let p = Pattern::new();
        let base = 0x40_0000u64;
        let mut data: Vec<u8> = (0..3 * PAGE as u64 + 100)
            .map(|i| p.byte_at(base + 50 + i))
            .collect();
        assert!(p.verify(base + 50, &data).is_ok());
        data[PAGE + 10] ^= 1;
        assert!(p.verify(base + 50, &data).is_err());
        // A read from the wrong page fails on the header.
        let other: Vec<u8> = (0..PAGE as u64).map(|i| p.byte_at(base + i)).collect();
        assert!(p.verify(base + PAGE as u64, &other).is_err());
    }
}
