//! kvmgdb's register layouts for gdb and LLDB. They follow QEMU's x86 gdb stub register for
//! register: the same names, order and numbers as `qemu-system-x86_64` (66 registers) and
//! `qemu-system-i386` (50), so gdb scripts written for QEMU work unchanged. On top of QEMU's
//! set, the ymm upper halves (`ymm0h`…) follow when the guest CPU has AVX, which gives gdb
//! `$ymm0`…
//!
//! One table per layout describes every register; the `g`/`G` packet format, the register
//! numbers of `p`/`P`, and the target description XML ([`super::xml`]) all come from it.
//!
//! Features: QEMU puts every register in `org.gnu.gdb.i386.core`. gdb builds `$ymmN` only when
//! the xmm registers sit in `org.gnu.gdb.i386.sse` and the upper halves in
//! `org.gnu.gdb.i386.avx`, so xmm0… and mxcsr move to the SSE feature, as in gdb's own
//! descriptions; the numbering (and the `g` packet) stays QEMU's. `fs_base`/`gs_base` stay in
//! the core feature as in QEMU: gdb 13 aborts on an i386 description with
//! `org.gnu.gdb.i386.segments` (an internal error in `tdesc_use_registers`).

use gdbstub::arch::{Arch, RegId, Registers};
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::LazyLock;

/// An x86 CPU register, whatever layout shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// RAX (EAX in the i386 layout).
    Rax,
    /// RBX.
    Rbx,
    /// RCX.
    Rcx,
    /// RDX.
    Rdx,
    /// RSI.
    Rsi,
    /// RDI.
    Rdi,
    /// RBP.
    Rbp,
    /// RSP.
    Rsp,
    /// R8–R15 (0 = R8).
    R(u8),
    /// RIP.
    Rip,
    /// RFLAGS (gdb shows the low 32 bits as `eflags`).
    Eflags,
    /// CS selector.
    Cs,
    /// SS selector.
    Ss,
    /// DS selector.
    Ds,
    /// ES selector.
    Es,
    /// FS selector.
    Fs,
    /// GS selector.
    Gs,
    /// FS base (the descriptor cache, IA32_FS_BASE in 64-bit mode).
    FsBase,
    /// GS base.
    GsBase,
    /// IA32_KERNEL_GS_BASE (the value `swapgs` exchanges with the GS base).
    KernelGsBase,
    /// CR0.
    Cr0,
    /// CR2.
    Cr2,
    /// CR3.
    Cr3,
    /// CR4.
    Cr4,
    /// CR8 (the task-priority register).
    Cr8,
    /// IA32_EFER.
    Efer,
    /// x87 register ST(n).
    St(u8),
    /// x87 control word.
    Fctrl,
    /// x87 status word.
    Fstat,
    /// x87 tag word (full form).
    Ftag,
    /// x87 last instruction pointer selector.
    Fiseg,
    /// x87 last instruction pointer offset.
    Fioff,
    /// x87 last operand pointer selector.
    Foseg,
    /// x87 last operand pointer offset.
    Fooff,
    /// x87 last opcode.
    Fop,
    /// XMMn.
    Xmm(u8),
    /// MXCSR.
    Mxcsr,
    /// Bits 255:128 of YMMn.
    YmmHigh(u8),
}

/// A target-description feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `org.gnu.gdb.i386.core`: general, segment, base, control and x87 registers.
    Core,
    /// `org.gnu.gdb.i386.sse`: xmm, mxcsr.
    Sse,
    /// `org.gnu.gdb.i386.avx`: the ymm upper halves; only when the guest has AVX.
    Avx,
}

impl Feature {
    /// Every feature, in the order of the target description.
    pub const ALL: [Feature; 3] = [Feature::Core, Feature::Sse, Feature::Avx];

    /// The name gdb knows the feature by.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Core => "org.gnu.gdb.i386.core",
            Feature::Sse => "org.gnu.gdb.i386.sse",
            Feature::Avx => "org.gnu.gdb.i386.avx",
        }
    }
}

/// One register of a layout.
#[derive(Clone, Copy, Debug)]
pub struct RegDesc {
    /// gdb's (and QEMU's) name.
    pub name: &'static str,
    /// The CPU register it shows.
    pub reg: Reg,
    /// Width in bits, in the `g` packet and in `p`/`P`.
    pub bits: u32,
    /// gdb type.
    pub ty: &'static str,
    /// gdb register group (also LLDB's register set): QEMU's, and the group gdb puts x87
    /// and vector registers in anyway.
    pub group: Option<&'static str>,
    /// The feature it belongs to.
    pub feature: Feature,
    /// DWARF and eh_frame register number (System V psABI), for LLDB.
    pub dwarf: Option<u32>,
    /// LLDB's generic role: `pc`, `sp`, `fp` or `flags`.
    pub generic: Option<&'static str>,
}

impl RegDesc {
    const fn new(name: &'static str, reg: Reg, bits: u32, ty: &'static str) -> RegDesc {
        RegDesc {
            name,
            reg,
            bits,
            ty,
            group: None,
            feature: Feature::Core,
            dwarf: None,
            generic: None,
        }
    }

    const fn dwarf(mut self, n: u32) -> RegDesc {
        self.dwarf = Some(n);
        self
    }

    const fn generic(mut self, g: &'static str) -> RegDesc {
        self.generic = Some(g);
        self
    }

    const fn group(mut self, g: &'static str) -> RegDesc {
        self.group = Some(g);
        self
    }

    const fn feature(mut self, f: Feature) -> RegDesc {
        self.feature = f;
        self
    }

    /// Width in bytes.
    pub fn bytes(&self) -> usize {
        self.bits as usize / 8
    }
}

/// The most registers a layout has (x86-64 with AVX: 66 + 16).
pub const MAX_REGS: usize = 82;

/// A gdb register layout kvmgdb can present: its register table, and the gdbstub
/// architecture whose `g`/`G` packets and register numbers come from that table.
pub trait Layout:
    Arch<BreakpointKind = usize, Registers = Regs<Self>, RegId = RegNum<Self>>
    + Clone
    + std::fmt::Debug
    + PartialEq
    + Sized
    + 'static
{
    /// gdb's name for the architecture.
    const ARCHITECTURE: &'static str;
    /// Size of the control-register flag types in bytes.
    const WORD: usize;
    /// Prefix of the flag type names (QEMU's: `x64` or `i386`).
    const TYPE_PREFIX: &'static str;

    /// The registers, indexed by gdb register number. The AVX registers come last.
    fn regs() -> &'static [RegDesc];

    /// An address of this layout as u64.
    fn to_u64(a: Self::Usize) -> u64;

    /// A u64 as an address of this layout (truncated to its width).
    fn from_u64(a: u64) -> Self::Usize;

    /// The gdb number of the register showing `reg`, if this layout shows it.
    fn number_of(reg: Reg) -> Option<usize> {
        Self::regs().iter().position(|d| d.reg == reg)
    }
}

/// QEMU's x86-64 layout (`i386:x86-64`), plus ymm0h–ymm15h with AVX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum X86_64Full {}

/// QEMU's i386 layout (`i386`), plus ymm0h–ymm7h with AVX: for 32-bit kernel images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I386Full {}

const ST_NAMES: [&str; 8] = ["st0", "st1", "st2", "st3", "st4", "st5", "st6", "st7"];
const XMM_NAMES: [&str; 16] = [
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
    "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
];
const YMMH_NAMES: [&str; 16] = [
    "ymm0h", "ymm1h", "ymm2h", "ymm3h", "ymm4h", "ymm5h", "ymm6h", "ymm7h", "ymm8h", "ymm9h",
    "ymm10h", "ymm11h", "ymm12h", "ymm13h", "ymm14h", "ymm15h",
];
const R_NAMES: [&str; 8] = ["r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

/// The registers from the segment selectors on, shared by both layouts: segments, the base
/// registers, control registers, x87, then `n_xmm` SSE registers, MXCSR and the ymm upper
/// halves. `w` is the layout's word size in bits; `dwarf` gives the psABI numbers of
/// (es, st0, xmm0, mxcsr) in this layout.
fn common_tail(
    t: &mut Vec<RegDesc>,
    w: u32,
    prefix: &'static str,
    n_xmm: usize,
    dwarf: (u32, u32, u32, u32),
) {
    let int = if w == 64 { "int64" } else { "int32" };
    let (es, st0, xmm0, mxcsr) = dwarf;
    // psABI order of the segment registers: es cs ss ds fs gs.
    for (name, reg, n) in [
        ("cs", Reg::Cs, 1),
        ("ss", Reg::Ss, 2),
        ("ds", Reg::Ds, 3),
        ("es", Reg::Es, 0),
        ("fs", Reg::Fs, 4),
        ("gs", Reg::Gs, 5),
    ] {
        t.push(RegDesc::new(name, reg, 32, "int32").dwarf(es + n));
    }
    let (cr0, cr3, cr4, efer) = flag_type_names(prefix);
    let fs_base = RegDesc::new("fs_base", Reg::FsBase, w, int);
    let gs_base = RegDesc::new("gs_base", Reg::GsBase, w, int);
    if w == 64 {
        t.extend([fs_base.dwarf(58), gs_base.dwarf(59)]);
    } else {
        t.extend([fs_base, gs_base]);
    }
    t.extend([
        RegDesc::new("k_gs_base", Reg::KernelGsBase, w, int),
        RegDesc::new("cr0", Reg::Cr0, w, cr0),
        RegDesc::new("cr2", Reg::Cr2, w, int),
        RegDesc::new("cr3", Reg::Cr3, w, cr3),
        RegDesc::new("cr4", Reg::Cr4, w, cr4),
        RegDesc::new("cr8", Reg::Cr8, w, int),
        RegDesc::new("efer", Reg::Efer, w, efer),
    ]);
    for (i, name) in ST_NAMES.iter().enumerate() {
        t.push(
            RegDesc::new(name, Reg::St(i as u8), 80, "i387_ext")
                .group("float")
                .dwarf(st0 + i as u32),
        );
    }
    for (name, reg) in [
        ("fctrl", Reg::Fctrl),
        ("fstat", Reg::Fstat),
        ("ftag", Reg::Ftag),
        ("fiseg", Reg::Fiseg),
        ("fioff", Reg::Fioff),
        ("foseg", Reg::Foseg),
        ("fooff", Reg::Fooff),
        ("fop", Reg::Fop),
    ] {
        t.push(RegDesc::new(name, reg, 32, "int").group("float"));
    }
    for (i, name) in XMM_NAMES[..n_xmm].iter().enumerate() {
        t.push(
            RegDesc::new(name, Reg::Xmm(i as u8), 128, "vec128")
                .group("vector")
                .feature(Feature::Sse)
                .dwarf(xmm0 + i as u32),
        );
    }
    t.push(
        RegDesc::new("mxcsr", Reg::Mxcsr, 32, "i386_mxcsr")
            .group("vector")
            .feature(Feature::Sse)
            .dwarf(mxcsr),
    );
    for (i, name) in YMMH_NAMES[..n_xmm].iter().enumerate() {
        t.push(
            RegDesc::new(name, Reg::YmmHigh(i as u8), 128, "uint128")
                .group("vector")
                .feature(Feature::Avx),
        );
    }
}

fn flag_type_names(prefix: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    if prefix == "x64" {
        ("x64_cr0", "x64_cr3", "x64_cr4", "x64_efer")
    } else {
        ("i386_cr0", "i386_cr3", "i386_cr4", "i386_efer")
    }
}

static X86_64_REGS: LazyLock<Vec<RegDesc>> = LazyLock::new(|| {
    let mut t = Vec::with_capacity(MAX_REGS);
    let gpr = |name, reg, dwarf| RegDesc::new(name, reg, 64, "int64").dwarf(dwarf);
    t.extend([
        gpr("rax", Reg::Rax, 0),
        gpr("rbx", Reg::Rbx, 3),
        gpr("rcx", Reg::Rcx, 2),
        gpr("rdx", Reg::Rdx, 1),
        gpr("rsi", Reg::Rsi, 4),
        gpr("rdi", Reg::Rdi, 5),
        RegDesc::new("rbp", Reg::Rbp, 64, "data_ptr")
            .dwarf(6)
            .generic("fp"),
        RegDesc::new("rsp", Reg::Rsp, 64, "data_ptr")
            .dwarf(7)
            .generic("sp"),
    ]);
    for (i, name) in R_NAMES.iter().enumerate() {
        t.push(gpr(name, Reg::R(i as u8), 8 + i as u32));
    }
    t.extend([
        RegDesc::new("rip", Reg::Rip, 64, "code_ptr")
            .dwarf(16)
            .generic("pc"),
        RegDesc::new("eflags", Reg::Eflags, 32, "x64_eflags")
            .dwarf(49)
            .generic("flags"),
    ]);
    common_tail(&mut t, 64, "x64", 16, (50, 33, 17, 64));
    t
});

static I386_REGS: LazyLock<Vec<RegDesc>> = LazyLock::new(|| {
    let mut t = Vec::with_capacity(MAX_REGS);
    let gpr = |name, reg, dwarf| RegDesc::new(name, reg, 32, "int32").dwarf(dwarf);
    t.extend([
        gpr("eax", Reg::Rax, 0),
        gpr("ecx", Reg::Rcx, 1),
        gpr("edx", Reg::Rdx, 2),
        gpr("ebx", Reg::Rbx, 3),
        RegDesc::new("esp", Reg::Rsp, 32, "data_ptr")
            .dwarf(4)
            .generic("sp"),
        RegDesc::new("ebp", Reg::Rbp, 32, "data_ptr")
            .dwarf(5)
            .generic("fp"),
        gpr("esi", Reg::Rsi, 6),
        gpr("edi", Reg::Rdi, 7),
        RegDesc::new("eip", Reg::Rip, 32, "code_ptr")
            .dwarf(8)
            .generic("pc"),
        RegDesc::new("eflags", Reg::Eflags, 32, "i386_eflags")
            .dwarf(9)
            .generic("flags"),
    ]);
    common_tail(&mut t, 32, "i386", 8, (40, 11, 21, 39));
    t
});

impl Layout for X86_64Full {
    const ARCHITECTURE: &'static str = "i386:x86-64";
    const WORD: usize = 8;
    const TYPE_PREFIX: &'static str = "x64";

    fn regs() -> &'static [RegDesc] {
        &X86_64_REGS
    }

    fn to_u64(a: u64) -> u64 {
        a
    }

    fn from_u64(a: u64) -> u64 {
        a
    }
}

impl Layout for I386Full {
    const ARCHITECTURE: &'static str = "i386";
    const WORD: usize = 4;
    const TYPE_PREFIX: &'static str = "i386";

    fn regs() -> &'static [RegDesc] {
        &I386_REGS
    }

    fn to_u64(a: u32) -> u64 {
        a.into()
    }

    fn from_u64(a: u64) -> u32 {
        a as u32
    }
}

impl Arch for X86_64Full {
    type Usize = u64;
    type Registers = Regs<X86_64Full>;
    type BreakpointKind = usize;
    type RegId = RegNum<X86_64Full>;
}

impl Arch for I386Full {
    type Usize = u32;
    type Registers = Regs<I386Full>;
    type BreakpointKind = usize;
    type RegId = RegNum<I386Full>;
}

/// The register file of layout `L`, as the `g` and `G` packets carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct Regs<L> {
    /// Register values (zero-extended), indexed by gdb register number.
    pub vals: [u128; MAX_REGS],
    /// Registers that could not be read (bit n: register n); gdb shows them as unavailable.
    pub unavailable: u128,
    /// Whether the ymm upper halves are part of the register file (the guest has AVX).
    pub avx: bool,
    _layout: PhantomData<L>,
}

impl<L> Default for Regs<L> {
    fn default() -> Self {
        Regs {
            vals: [0; MAX_REGS],
            unavailable: 0,
            avx: false,
            _layout: PhantomData,
        }
    }
}

impl<L: Layout> Regs<L> {
    /// The registers present in this register file, with their gdb numbers.
    pub fn present(&self) -> impl Iterator<Item = (usize, &'static RegDesc)> + use<L> {
        let avx = self.avx;
        L::regs()
            .iter()
            .enumerate()
            .filter(move |(_, d)| avx || d.feature != Feature::Avx)
    }
}

impl<L: Layout> Registers for Regs<L> {
    type ProgramCounter = L::Usize;

    fn pc(&self) -> L::Usize {
        let rip = L::number_of(Reg::Rip).unwrap_or(0);
        L::from_u64(self.vals[rip] as u64)
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for (i, d) in self.present() {
            let bytes = self.vals[i].to_le_bytes();
            let missing = self.unavailable & (1 << i) != 0;
            for &b in &bytes[..d.bytes()] {
                write_byte((!missing).then_some(b));
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let size = |avx: bool| -> usize {
            L::regs()
                .iter()
                .filter(|d| avx || d.feature != Feature::Avx)
                .map(RegDesc::bytes)
                .sum()
        };
        let has_avx_regs = L::regs().iter().any(|d| d.feature == Feature::Avx);
        self.avx = if bytes.len() == size(false) {
            false
        } else if has_avx_regs && bytes.len() == size(true) {
            true
        } else {
            return Err(());
        };
        let mut off = 0;
        for (i, d) in self.present() {
            let mut b = [0u8; 16];
            b[..d.bytes()].copy_from_slice(&bytes[off..off + d.bytes()]);
            self.vals[i] = u128::from_le_bytes(b);
            off += d.bytes();
        }
        Ok(())
    }
}

/// A register by its gdb number in layout `L` (the `p` and `P` packets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegNum<L> {
    /// The gdb register number.
    pub index: usize,
    _layout: PhantomData<L>,
}

impl<L: Layout> RegId for RegNum<L> {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        let d = L::regs().get(id)?;
        let reg = RegNum {
            index: id,
            _layout: PhantomData,
        };
        Some((reg, NonZeroUsize::new(d.bytes())))
    }

    fn to_raw_id(&self) -> Option<usize> {
        Some(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<L: Layout>() -> Vec<&'static str> {
        L::regs().iter().map(|d| d.name).collect()
    }

    #[test]
    fn x86_64_is_qemus_order() {
        let n = names::<X86_64Full>();
        assert_eq!(n.len(), 66 + 16);
        assert_eq!(
            &n[..33],
            &[
                "rax",
                "rbx",
                "rcx",
                "rdx",
                "rsi",
                "rdi",
                "rbp",
                "rsp",
                "r8",
                "r9",
                "r10",
                "r11",
                "r12",
                "r13",
                "r14",
                "r15",
                "rip",
                "eflags",
                "cs",
                "ss",
                "ds",
                "es",
                "fs",
                "gs",
                "fs_base",
                "gs_base",
                "k_gs_base",
                "cr0",
                "cr2",
                "cr3",
                "cr4",
                "cr8",
                "efer",
            ]
        );
        assert_eq!(n[33], "st0");
        assert_eq!(n[41], "fctrl");
        assert_eq!(n[48], "fop");
        assert_eq!(n[49], "xmm0");
        assert_eq!(n[64], "xmm15");
        assert_eq!(n[65], "mxcsr");
        assert_eq!(n[66], "ymm0h");
    }

    #[test]
    fn i386_is_qemus_order() {
        let n = names::<I386Full>();
        assert_eq!(n.len(), 50 + 8);
        assert_eq!(
            &n[..25],
            &[
                "eax",
                "ecx",
                "edx",
                "ebx",
                "esp",
                "ebp",
                "esi",
                "edi",
                "eip",
                "eflags",
                "cs",
                "ss",
                "ds",
                "es",
                "fs",
                "gs",
                "fs_base",
                "gs_base",
                "k_gs_base",
                "cr0",
                "cr2",
                "cr3",
                "cr4",
                "cr8",
                "efer",
            ]
        );
        assert_eq!(n[25], "st0");
        assert_eq!(n[41], "xmm0");
        assert_eq!(n[49], "mxcsr");
        assert_eq!(n[50], "ymm0h");
    }

    #[test]
    fn g_packet_sizes() {
        let size = |avx| {
            let r = Regs::<X86_64Full> {
                avx,
                ..Default::default()
            };
            let mut n = 0;
            r.gdb_serialize(|_| n += 1);
            n
        };
        // 16×8 + 8 + 4 + 6×4 + 9×8 + 8×10 + 8×4 + 16×16 + 4
        assert_eq!(size(false), 128 + 8 + 4 + 24 + 72 + 80 + 32 + 256 + 4);
        assert_eq!(size(true), size(false) + 256);
    }

    #[test]
    fn g_packet_round_trip_with_and_without_avx() {
        for avx in [false, true] {
            let mut r = Regs::<I386Full> {
                avx,
                ..Default::default()
            };
            for (i, v) in r.vals.iter_mut().enumerate() {
                *v = (i as u128) * 0x0101_0101;
            }
            // Keep each value within its register's width.
            for (i, d) in I386Full::regs().iter().enumerate() {
                if d.bits < 128 {
                    r.vals[i] &= (1u128 << d.bits) - 1;
                }
            }
            if !avx {
                for v in &mut r.vals[50..] {
                    *v = 0;
                }
            }
            r.vals[I386Full::regs().len()..].fill(0);
            let mut bytes = Vec::new();
            r.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
            let mut back = Regs::<I386Full>::default();
            back.gdb_deserialize(&bytes).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.pc(), 8 * 0x0101_0101);
        }
        let mut back = Regs::<I386Full>::default();
        assert!(back.gdb_deserialize(&[0; 7]).is_err());
    }

    #[test]
    fn unavailable_registers_serialize_as_xx() {
        let mut r = Regs::<X86_64Full> {
            unavailable: 1 << 26,
            ..Default::default()
        };
        r.vals[26] = 0x1234;
        let mut out = Vec::new();
        r.gdb_serialize(|b| out.push(b));
        // k_gs_base: after 16×8 + 8 + 4 + 6×4 + 2×8 bytes.
        let off = 128 + 8 + 4 + 24 + 16;
        assert!(out[off..off + 8].iter().all(Option::is_none));
        assert_eq!(out[off - 1], Some(0));
        assert_eq!(out[off + 8], Some(0));
    }
}
