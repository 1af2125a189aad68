//! The XSAVE area in its standard (non-compacted) format, as KVM_GET_XSAVE returns it
//! (SDM Vol. 1, 13.4): the FXSAVE-format legacy region, the XSAVE header, then the
//! components. Byte offsets, the initial configuration of each component, the FXSAVE bytes
//! a core file holds and the x87 tag-word forms; which gdb register sits where is
//! `gdb/regs/kvm_map.rs`'s business.
//!
//! The area is taken as KVM's `kvm_xsave`, a plain 4 KiB data structure; nothing here calls
//! KVM.

use kvm_bindings::kvm_xsave;

/// x87 control word (FCW), 2 bytes (SDM Vol. 1, Table 10-2).
pub const FCW: usize = 0;
/// x87 status word (FSW), 2 bytes; bits 13:11 are TOP.
pub const FSW: usize = 2;
/// The abridged x87 tag byte (FTW), 1 byte: bit i set = physical register i not empty.
pub const FTW: usize = 4;
/// Last x87 opcode (FOP), 2 bytes.
pub const FOP: usize = 6;
/// Last x87 instruction pointer offset (FIP), 4 bytes in the 32-bit form.
pub const FIP: usize = 8;
/// Last x87 instruction pointer selector (FCS), 2 bytes.
pub const FCS: usize = 12;
/// Last x87 data pointer offset (FDP), 4 bytes in the 32-bit form.
pub const FDP: usize = 16;
/// Last x87 data pointer selector (FDS), 2 bytes.
pub const FDS: usize = 20;
/// MXCSR, 4 bytes.
pub const MXCSR: usize = 24;
/// ST0/MM0, the first of eight 16-byte slots holding 10-byte registers.
pub const ST0: usize = 32;
/// XMM0, the first of sixteen 16-byte registers.
pub const XMM0: usize = 160;
/// Past XMM15.
pub const LEGACY_END: usize = 416;
/// Size of the legacy (FXSAVE-format) region (SDM Vol. 1, 10.5.1).
pub const LEGACY_SIZE: usize = 512;
/// XSTATE_BV: which components hold state (a clear bit: that component is in its
/// initial configuration, whatever its area holds) (SDM Vol. 1, 13.4.2).
pub const XSTATE_BV: usize = 512;
/// Component 2, the upper halves of YMM0–15 (CPUID.(EAX=0DH,ECX=2).EBX).
pub const YMM_HI: usize = 576;
/// Past the upper half of YMM15.
pub const YMM_HI_END: usize = YMM_HI + 16 * 16;
/// XSTATE_BV bit 0: x87 state (SDM Vol. 1, 13.1).
pub const BV_X87: u64 = 1 << 0;
/// XSTATE_BV bit 1: SSE state (XMM registers and MXCSR).
pub const BV_SSE: u64 = 1 << 1;
/// XSTATE_BV bit 2: AVX state (upper halves of the YMM registers).
pub const BV_AVX: u64 = 1 << 2;
/// x87 control word after FNINIT / in the XSAVE initial configuration (SDM Vol. 1, 13.6).
pub const FCW_INIT: u16 = 0x037f;
/// MXCSR in the initial configuration (SDM Vol. 1, 13.6).
pub const MXCSR_INIT: u32 = 0x1f80;

/// Little-endian byte access to an XSAVE area (the bindings type is an array of u32).
pub trait XsaveBytes {
    /// The byte at offset `off`.
    fn byte(&self, off: usize) -> u8;
    /// Sets the byte at offset `off`.
    fn set_byte(&mut self, off: usize, v: u8);

    /// The little-endian value of `len` (at most 16) bytes at `off`.
    fn get(&self, off: usize, len: usize) -> u128 {
        (0..len).fold(0u128, |acc, i| {
            acc | u128::from(self.byte(off + i)) << (8 * i)
        })
    }

    /// Stores the low `len` (at most 16) bytes of `v` at `off`, little-endian.
    fn put(&mut self, off: usize, len: usize, v: u128) {
        for i in 0..len {
            self.set_byte(off + i, (v >> (8 * i)) as u8);
        }
    }

    /// Sets every byte in `range` to `v`.
    fn fill(&mut self, range: std::ops::Range<usize>, v: u8) {
        for off in range {
            self.set_byte(off, v);
        }
    }
}

impl XsaveBytes for kvm_xsave {
    fn byte(&self, off: usize) -> u8 {
        (self.region[off / 4] >> (8 * (off % 4))) as u8
    }

    fn set_byte(&mut self, off: usize, v: u8) {
        let w = &mut self.region[off / 4];
        let shift = 8 * (off % 4);
        *w = (*w & !(0xff << shift)) | (u32::from(v) << shift);
    }
}

/// The area's XSTATE_BV: which components hold state.
pub fn xstate_bv(x: &kvm_xsave) -> u64 {
    x.get(XSTATE_BV, 8) as u64
}

/// A copy of `x` in which every component XSTATE_BV marks as in its initial configuration
/// holds that configuration (SDM Vol. 1, 13.6): a debugger then sees what the CPU would
/// load, even from a KVM that leaves stale bytes in such components.
pub fn normalized_xsave(x: &kvm_xsave) -> Box<kvm_xsave> {
    let mut n = Box::new(kvm_xsave {
        region: x.region,
        ..Default::default()
    });
    let bv = xstate_bv(x);
    if bv & BV_X87 == 0 {
        n.fill(FCW..MXCSR, 0);
        n.put(FCW, 2, FCW_INIT.into());
        n.fill(ST0..XMM0, 0);
    }
    if bv & BV_SSE == 0 {
        n.fill(XMM0..LEGACY_END, 0);
    }
    if bv & (BV_SSE | BV_AVX) == 0 {
        n.put(MXCSR, 4, MXCSR_INIT.into());
    }
    if bv & BV_AVX == 0 {
        n.fill(YMM_HI..YMM_HI_END, 0);
    }
    n
}

/// The legacy (FXSAVE-format) first 512 bytes of an XSAVE area, normalized: what an ELF
/// core's NT_FPREGSET holds.
pub fn fx_bytes(x: &kvm_xsave) -> [u8; LEGACY_SIZE] {
    let n = normalized_xsave(x);
    let mut out = [0u8; LEGACY_SIZE];
    for (i, w) in n.region[..LEGACY_SIZE / 4].iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Expands FXSAVE's abridged tag byte to the full x87 tag word gdb shows (SDM Vol. 1,
/// 8.1.7 and 10.5.1.1): 00 valid, 01 zero, 10 special, 11 empty, per physical register.
pub fn full_tag_word(x: &kvm_xsave) -> u16 {
    let abridged = x.byte(FTW);
    let top = (x.get(FSW, 2) as u16 >> 11) & 7;
    let mut tag = 0u16;
    for phys in 0..8u16 {
        let t = if abridged & (1 << phys) == 0 {
            3
        } else {
            let st = ST0 + 16 * usize::from((phys + 8 - top) % 8);
            let mantissa = x.get(st, 8) as u64;
            let exp = x.get(st + 8, 2) as u16 & 0x7fff;
            if exp == 0x7fff {
                2
            } else if exp == 0 {
                if mantissa == 0 { 1 } else { 2 }
            } else if mantissa >> 63 == 0 {
                2
            } else {
                0
            }
        };
        tag |= t << (2 * phys);
    }
    tag
}

/// Compresses a full tag word to FXSAVE's abridged form: 1 = not empty.
pub fn abridged_tag(tag: u16) -> u8 {
    (0..8).fold(0u8, |acc, i| {
        if (tag >> (2 * i)) & 3 != 3 {
            acc | (1 << i)
        } else {
            acc
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_word_round_trip() {
        let mut x = kvm_xsave::default();
        // ST0 = 1.0 (valid), TOP = 0, only register 0 in use.
        x.put(ST0 + 7, 1, 0x80);
        x.put(ST0 + 8, 2, 0x3fff);
        x.put(FTW, 1, 0x01);
        let tag = full_tag_word(&x);
        assert_eq!(tag, 0xfffc);
        assert_eq!(abridged_tag(tag), 0x01);
    }
}
