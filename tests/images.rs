//! The malformed-image corpus: kernel files kvmgdb must refuse, generated here, each run
//! through the real binary. Every one must give exactly one `kvmgdb: error: …` line saying
//! why, a non-zero status, no panic, and all within a second: no hang on a FIFO, no endless
//! read of /dev/zero, no gigabytes read from a sparse giant, no boot plan that would
//! overwrite kvmgdb's own boot structures.
//!
//! Each image is a valid one (checked to plan in-process first) with one thing broken, so
//! the refusal is known to come from that thing.

mod common;

use common::*;
use kvmgdb::boot::{self, layout};
use kvmgdb::cli::EXIT_ERROR;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long kvmgdb may take to refuse an image.
const REFUSE_WITHIN: Duration = Duration::from_secs(1);
/// How long a run may take before the harness kills it (a hang fails the test this way).
const KILL_AFTER: Duration = Duration::from_secs(10);
/// Guest RAM the images are checked against (kvmgdb's default).
const RAM: u64 = 128 << 20;

const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const PT_PHDR: u32 = 6;
const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
/// Multiboot header flags: memory info (bit 1) and the a.out kludge (bit 16).
const MULTIBOOT_FLAGS: u32 = (1 << 16) | 2;
/// Where the valid images load and start.
const LOAD: u64 = 0x10_0000;
/// File offset of the valid images' segment data.
const DATA_AT: u64 = 0x1000;

/// One program header, class-independent.
#[derive(Clone, Copy)]
struct Seg {
    p_type: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

impl Seg {
    /// A PT_LOAD of `filesz` bytes from the file's data at `paddr`, `memsz` in memory.
    fn load(paddr: u64, filesz: u64, memsz: u64) -> Seg {
        Seg {
            p_type: PT_LOAD,
            offset: DATA_AT,
            paddr,
            filesz,
            memsz,
        }
    }
}

/// An ELF image: its header fields and program headers, written out by [`Elf::bytes`].
#[derive(Clone)]
struct Elf {
    class64: bool,
    data: u8,
    machine: u16,
    entry: u64,
    phoff: u64,
    phentsize: u16,
    phnum: Option<u16>,
    segs: Vec<Seg>,
    /// The file's length (zero-padded; the segment data are `hlt`s).
    len: usize,
    /// A Multiboot header at file offset `DATA_AT`, if any: (flags, checksum delta).
    multiboot: Option<(u32, u32)>,
}

impl Elf {
    /// A valid ELF64 x86-64 kernel: one PT_LOAD of 0x100 bytes at 1 MiB (0x1000 in memory),
    /// entered at its start.
    fn valid64() -> Elf {
        Elf {
            class64: true,
            data: 1,
            machine: EM_X86_64,
            entry: LOAD,
            phoff: 64,
            phentsize: 56,
            phnum: None,
            segs: vec![Seg::load(LOAD, 0x100, 0x1000)],
            len: (DATA_AT + 0x100) as usize,
            multiboot: None,
        }
    }

    /// A valid ELF32 i386 Multiboot kernel (header at the start of its segment).
    fn valid32_multiboot() -> Elf {
        Elf {
            class64: false,
            machine: EM_386,
            phoff: 52,
            phentsize: 32,
            multiboot: Some((2, 0)),
            entry: LOAD + 0x40,
            ..Elf::valid64()
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut f = vec![0u8; self.len.max(0x40)];
        let mut put = |at: u64, v: &[u8]| {
            let at = at as usize;
            if f.len() < at + v.len() {
                f.resize(at + v.len(), 0);
            }
            f[at..at + v.len()].copy_from_slice(v);
        };
        put(0, b"\x7fELF");
        put(4, &[if self.class64 { 2 } else { 1 }, self.data, 1]);
        put(16, &2u16.to_le_bytes()); // ET_EXEC
        put(18, &self.machine.to_le_bytes());
        put(20, &1u32.to_le_bytes());
        let phnum = self.phnum.unwrap_or(self.segs.len() as u16);
        if self.class64 {
            put(24, &self.entry.to_le_bytes());
            put(32, &self.phoff.to_le_bytes());
            put(52, &64u16.to_le_bytes());
            put(54, &self.phentsize.to_le_bytes());
            put(56, &phnum.to_le_bytes());
        } else {
            put(24, &(self.entry as u32).to_le_bytes());
            put(28, &(self.phoff as u32).to_le_bytes());
            put(40, &52u16.to_le_bytes());
            put(42, &self.phentsize.to_le_bytes());
            put(44, &phnum.to_le_bytes());
        }
        for (i, s) in self.segs.iter().enumerate() {
            let Some(ph) = self.phoff.checked_add(i as u64 * 56) else {
                break;
            };
            if ph >= DATA_AT {
                break;
            }
            if self.class64 {
                let ph = self.phoff + 56 * i as u64;
                put(ph, &s.p_type.to_le_bytes());
                put(ph + 4, &7u32.to_le_bytes());
                put(ph + 8, &s.offset.to_le_bytes());
                put(ph + 16, &s.paddr.to_le_bytes());
                put(ph + 24, &s.paddr.to_le_bytes());
                put(ph + 32, &s.filesz.to_le_bytes());
                put(ph + 40, &s.memsz.to_le_bytes());
            } else {
                let ph = self.phoff + 32 * i as u64;
                put(ph, &s.p_type.to_le_bytes());
                put(ph + 4, &(s.offset as u32).to_le_bytes());
                put(ph + 8, &(s.paddr as u32).to_le_bytes());
                put(ph + 12, &(s.paddr as u32).to_le_bytes());
                put(ph + 16, &(s.filesz as u32).to_le_bytes());
                put(ph + 20, &(s.memsz as u32).to_le_bytes());
                put(ph + 24, &7u32.to_le_bytes());
            }
        }
        f.resize(self.len, 0);
        for b in f.iter_mut().skip(DATA_AT as usize) {
            *b = 0xf4; // hlt
        }
        if let Some((flags, delta)) = self.multiboot {
            let at = DATA_AT as usize;
            let sum = 0u32
                .wrapping_sub(MULTIBOOT_MAGIC)
                .wrapping_sub(flags)
                .wrapping_add(delta);
            for (i, v) in [MULTIBOOT_MAGIC, flags, sum].iter().enumerate() {
                f[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        f
    }
}

/// The a.out-kludge Multiboot header fields (Multiboot spec 3.1.3), as file offsets and
/// addresses of an image that is not ELF.
#[derive(Clone, Copy)]
struct Aout {
    /// File offset of the header.
    at: usize,
    checksum_delta: u32,
    header_addr: u32,
    load_addr: u32,
    load_end_addr: u32,
    bss_end_addr: u32,
    entry_addr: u32,
    len: usize,
}

impl Aout {
    /// A valid a.out-kludge kernel: 0x2000 bytes loaded at 1 MiB (the header at 0x10),
    /// bss to 1 MiB + 0x4000, entered at 1 MiB + 0x100.
    fn valid() -> Aout {
        Aout {
            at: 0x10,
            checksum_delta: 0,
            header_addr: 0x10_0010,
            load_addr: 0x10_0000,
            load_end_addr: 0x10_2000,
            bss_end_addr: 0x10_4000,
            entry_addr: 0x10_0100,
            len: 0x2000,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut f = vec![0xf4u8; self.len];
        let sum = 0u32
            .wrapping_sub(MULTIBOOT_MAGIC)
            .wrapping_sub(MULTIBOOT_FLAGS)
            .wrapping_add(self.checksum_delta);
        let fields = [
            MULTIBOOT_MAGIC,
            MULTIBOOT_FLAGS,
            sum,
            self.header_addr,
            self.load_addr,
            self.load_end_addr,
            self.bss_end_addr,
            self.entry_addr,
        ];
        for (i, v) in fields.iter().enumerate() {
            f[self.at + 4 * i..self.at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        f
    }
}

/// Runs kvmgdb on `path` (with `args` before it) and checks the refusal: status 1, exactly
/// one `kvmgdb: error:` line containing each of `words`, no panic, within a second.
/// Returns the failure, if any, so a test can report every bad case at once.
fn refusal(path: &Path, args: &[&str], words: &[&str]) -> Result<(), String> {
    let path_s = path.to_str().expect("a UTF-8 path");
    let mut argv = vec!["--gdb", "none", "--serial", "none"];
    argv.extend_from_slice(args);
    argv.push(path_s);
    let started = Instant::now();
    let (status, stdout, stderr) = run_kvmgdb(&argv, KILL_AFTER);
    let took = started.elapsed();
    let what = format!("kvmgdb {argv:?}: status {status}, {took:?}, stderr {stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    if stderr.contains("panicked") {
        return Err(format!("panicked: {what}"));
    }
    if status != i32::from(EXIT_ERROR) {
        return Err(format!("status: {what}"));
    }
    if lines.len() != 1 || !lines[0].starts_with("kvmgdb: error: ") {
        return Err(format!("not one error line: {what}"));
    }
    if let Some(w) = words.iter().find(|w| !lines[0].contains(*w)) {
        return Err(format!("no {w:?} in the error: {what}"));
    }
    if !stdout.is_empty() {
        return Err(format!("stdout {stdout:?}: {what}"));
    }
    if took > REFUSE_WITHIN {
        return Err(format!("slower than {REFUSE_WITHIN:?}: {what}"));
    }
    Ok(())
}

/// A corpus run: cases written into one directory, failures collected.
struct Corpus {
    dir: TestDir,
    failures: Vec<String>,
    cases: usize,
}

impl Corpus {
    fn new(name: &str) -> Corpus {
        require_kvm();
        Corpus {
            dir: TestDir::new(name),
            failures: Vec::new(),
            cases: 0,
        }
    }

    /// Writes `image` as `name` and checks kvmgdb refuses it with `words`.
    fn image(&mut self, name: &str, image: &[u8], args: &[&str], words: &[&str]) {
        let path = self.dir.join(name);
        std::fs::write(&path, image).unwrap();
        self.path(name, &path, args, words);
    }

    /// Checks kvmgdb refuses the file at `path` with `words`.
    fn path(&mut self, name: &str, path: &Path, args: &[&str], words: &[&str]) {
        self.cases += 1;
        if let Err(e) = refusal(path, args, words) {
            self.failures.push(format!("{name}: {e}"));
        }
    }

    fn finish(self) {
        eprintln!("{} cases", self.cases);
        assert!(
            self.failures.is_empty(),
            "{} of {} cases failed:\n{}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}

/// Fails unless `image` plans for `RAM` bytes: the valid starting point of a mutation.
#[track_caller]
fn assert_plans(image: &[u8]) {
    if let Err(e) = boot::plan(&boot::BootRequest::new(image, RAM)) {
        panic!("the valid image does not plan: {e}");
    }
}

#[test]
fn truncated_elf_headers_at_every_length() {
    let mut c = Corpus::new("images-truncated");
    let valid = Elf::valid64().bytes();
    assert_plans(&valid);
    let mut lengths: Vec<usize> = (0..=64).collect();
    // Into the program header, just short of it, and into the segment data.
    lengths.extend([
        65, 80, 100, 119, 120, 121, 0x200, 0xfff, 0x1000, 0x1001, 0x10ff,
    ]);
    for len in lengths {
        let words: &[&str] = match len {
            0 => &["empty"],
            1..=3 => &["not a kernel"],
            _ => &["truncated"],
        };
        c.image(&format!("elf64-{len}"), &valid[..len], &[], words);
    }
    let valid32 = Elf::valid32_multiboot().bytes();
    assert_plans(&valid32);
    for len in [4, 5, 16, 40, 51, 52, 60, 83] {
        c.image(
            &format!("elf32-{len}"),
            &valid32[..len],
            &[],
            &["truncated"],
        );
    }
    c.finish();
}

#[test]
fn corrupt_elf_headers() {
    let mut c = Corpus::new("images-headers");
    let mut case = |name: &str, f: &dyn Fn(&mut Elf), words: &[&str]| {
        let mut e = Elf::valid64();
        f(&mut e);
        c.image(name, &e.bytes(), &[], words);
    };
    case("huge-phnum", &|e| e.phnum = Some(0xffff), &["past the end"]);
    case("no-phdrs", &|e| e.phnum = Some(0), &["no program headers"]);
    case(
        "phoff-beyond-file",
        &|e| e.phoff = 0x10_0000,
        &["past the end"],
    );
    case("phoff-max", &|e| e.phoff = u64::MAX - 8, &["truncated"]);
    case("phentsize", &|e| e.phentsize = 32, &["program header size"]);
    case(
        "no-pt-load",
        &|e| e.segs[0].p_type = PT_PHDR,
        &["no loadable"],
    );
    case(
        "aarch64",
        &|e| e.machine = EM_AARCH64,
        &["machine type 183"],
    );
    case("big-endian", &|e| e.data = 2, &["little-endian"]);
    case(
        "elf32-without-multiboot",
        &|e| {
            *e = Elf {
                multiboot: None,
                ..Elf::valid32_multiboot()
            }
        },
        &["needs a Multiboot header"],
    );
    case(
        "elf32-bad-multiboot-checksum",
        &|e| {
            *e = Elf {
                multiboot: Some((2, 1)),
                ..Elf::valid32_multiboot()
            }
        },
        &["bad checksum"],
    );
    c.finish();
}

#[test]
fn bad_segments() {
    let mut c = Corpus::new("images-segments");
    let mut case = |name: &str, segs: Vec<Seg>, args: &[&str], words: &[&str]| {
        let e = Elf {
            segs,
            ..Elf::valid64()
        };
        c.image(name, &e.bytes(), args, words);
    };
    let seg = |paddr, filesz, memsz| vec![Seg::load(paddr, filesz, memsz)];
    let past_file = &["past the end of the file"][..];
    case(
        "filesz-beyond-file",
        seg(LOAD, 0x10_0000, 0x10_0000),
        &[],
        past_file,
    );
    let mut far = seg(LOAD, 0x100, 0x1000);
    far[0].offset = 0x10_0000;
    case("offset-beyond-file", far.clone(), &[], past_file);
    far[0].offset = u64::MAX - 0x10;
    case("offset-overflows", far, &[], &["overflows"]);
    case(
        "filesz-above-memsz",
        seg(LOAD, 0x100, 0x80),
        &[],
        &["smaller than its file size"],
    );
    let no_fit = &["does not fit", "--memory"][..];
    case("beyond-ram", seg(RAM, 0x100, 0x1000), &[], no_fit);
    case(
        "straddles-ram-end",
        seg(RAM - 0x800, 0x100, 0x1000),
        &[],
        no_fit,
    );
    case("huge-memsz", seg(LOAD, 0x100, u64::MAX), &[], no_fit);
    case("wraps", seg(u64::MAX - 0x7f, 0x100, 0x100), &[], no_fit);
    case(
        "in-the-mmio-hole",
        seg(0xc000_0000, 0x100, 0x1000),
        &["--memory", "4G"],
        no_fit,
    );
    // Over each of kvmgdb's boot structures, and running into them from below.
    let boot_area = format!("{:#x}..{:#x}", layout::GDT, layout::RESERVED_END);
    let over = ["boot structures", boot_area.as_str()];
    for (what, at) in [
        ("gdt", layout::GDT),
        ("multiboot-info", layout::MULTIBOOT_INFO),
        ("boot-params", layout::BOOT_PARAMS),
        ("page-tables", layout::PML4),
        ("stack", layout::STACK_TOP - 0x100),
    ] {
        case(&format!("over-{what}"), seg(at, 0x40, 0x40), &[], &over);
    }
    case("into-the-gdt", seg(0, 0x40, 0x600), &[], &over);
    case("bss-into-the-gdt", seg(0x400, 0x40, 0x200), &[], &over);
    let two = |a: u64, b: u64| {
        vec![
            Seg::load(a, 0x100, 0x1000),
            Seg {
                offset: DATA_AT,
                ..Seg::load(b, 0x100, 0x1000)
            },
        ]
    };
    case("overlapping", two(LOAD, LOAD + 0x800), &[], &["overlap"]);
    case("same-address", two(LOAD, LOAD), &[], &["overlap"]);
    // The entry point outside everything loaded.
    let mut e = Elf::valid64();
    e.entry = 0x40_0000;
    c.image("entry-outside", &e.bytes(), &[], &["entry point 0x400000"]);
    e.entry = layout::GDT;
    c.image("entry-in-the-gdt", &e.bytes(), &[], &["entry point"]);
    c.finish();
}

#[test]
fn segments_beside_the_boot_structures_still_load() {
    // The refusals above are about the ranges, not the images: the same images load just
    // clear of the boot area and just inside RAM.
    for paddr in [layout::RESERVED_END, RAM - 0x1000] {
        let e = Elf {
            segs: vec![Seg::load(paddr, 0x100, 0x1000)],
            entry: paddr,
            ..Elf::valid64()
        };
        assert_plans(&e.bytes());
    }
    let two = Elf {
        segs: vec![
            Seg::load(LOAD, 0x100, 0x1000),
            Seg::load(LOAD + 0x1000, 0x100, 0x1000),
        ],
        ..Elf::valid64()
    };
    assert_plans(&two.bytes());
    assert_plans(&Aout::valid().bytes());
}

#[test]
fn bad_multiboot_headers() {
    let mut c = Corpus::new("images-multiboot");
    assert_plans(&Aout::valid().bytes());
    let mut case = |name: &str, f: &dyn Fn(&mut Aout), args: &[&str], words: &[&str]| {
        let mut a = Aout::valid();
        f(&mut a);
        c.image(name, &a.bytes(), args, words);
    };
    case(
        "checksum",
        &|a| a.checksum_delta = 1,
        &[],
        &["bad checksum"],
    );
    case(
        "checksum-late-header",
        &|a| {
            a.at = 0x1000;
            a.header_addr = 0x10_1000;
            a.checksum_delta = 0x100;
        },
        &[],
        &["bad checksum", "0x1000"],
    );
    case(
        "load-end-beyond-file",
        &|a| a.load_end_addr = 0x10_8000,
        &[],
        &["shorter than its load range"],
    );
    case(
        "load-above-header",
        &|a| a.load_addr = 0x10_0020,
        &[],
        &["load_addr is above header_addr"],
    );
    case(
        "load-before-file-start",
        &|a| a.load_addr = 0x0f_0000,
        &[],
        &["before the file start"],
    );
    case(
        "load-end-below-load",
        &|a| a.load_end_addr = 0x0f_0000,
        &[],
        &["below load_addr"],
    );
    case(
        "bss-beyond-ram",
        &|a| a.bss_end_addr = 0x0900_0000,
        &[],
        &["does not fit"],
    );
    case(
        "load-beyond-ram",
        &|a| {
            a.header_addr = 0x0800_0010;
            a.load_addr = 0x0800_0000;
            a.load_end_addr = 0x0800_2000;
            a.bss_end_addr = 0;
            a.entry_addr = 0x0800_0100;
        },
        &[],
        &["does not fit"],
    );
    case(
        "over-boot-structures",
        &|a| {
            a.header_addr = 0x6010;
            a.load_addr = 0x6000;
            a.load_end_addr = 0x8000;
            a.bss_end_addr = 0;
            a.entry_addr = 0x6100;
        },
        &[],
        &["boot structures"],
    );
    case(
        "entry-outside",
        &|a| a.entry_addr = 0x20_0000,
        &[],
        &["entry point 0x200000"],
    );
    // Not ELF and no a.out kludge: nothing says where to load it.
    let mut no_kludge = Aout::valid().bytes();
    let flags: u32 = 2;
    let sum = 0u32.wrapping_sub(MULTIBOOT_MAGIC).wrapping_sub(flags);
    no_kludge[0x14..0x18].copy_from_slice(&flags.to_le_bytes());
    no_kludge[0x18..0x1c].copy_from_slice(&sum.to_le_bytes());
    c.image("no-kludge-not-elf", &no_kludge, &[], &["a.out kludge"]);
    c.finish();
}

#[test]
fn files_that_are_not_kernel_images() {
    let mut c = Corpus::new("images-files");
    let dir = c.dir.path().to_path_buf();
    c.path("directory", &dir, &[], &["is a directory"]);
    for dev in ["/dev/zero", "/dev/null"] {
        c.path(dev, Path::new(dev), &[], &[dev, "character device"]);
    }
    let link = dir.join("zero-link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    c.path("symlink-to-dev-zero", &link, &[], &["character device"]);

    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    c.path("fifo", &fifo, &[], &["is a FIFO"]);

    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    c.path("socket", &socket, &[], &["is a socket"]);

    // A sparse giant: larger than RAM, refused by its size before a byte is read.
    let giant = dir.join("giant");
    let f = std::fs::File::create(&giant).unwrap();
    f.set_len(64 << 30).unwrap();
    let too_large = &["giant", "larger than guest RAM", "--memory"][..];
    c.path("sparse-64g", &giant, &[], too_large);
    f.set_len((64 << 30) + 1).unwrap();
    c.path("sparse-64g-plus-1", &giant, &["--memory", "64G"], too_large);
    // A sparse file that fits in RAM but is no kernel: refused from its first bytes.
    f.set_len(RAM - 1).unwrap();
    c.path("sparse-zeros-in-ram", &giant, &[], &["not a kernel"]);
    drop(f);
    std::fs::remove_file(&giant).unwrap();

    // A real (non-sparse) file larger than -m: a 3 MiB file of no format, and an ELF whose
    // 3 MiB segment is what makes it large (an ELF padded past its segments, as a debug
    // vmlinux is, loads: tests/cli.rs).
    let mut big = b"not a kernel".to_vec();
    big.resize(3 << 20, 0);
    c.image(
        "larger-than-m",
        &big,
        &["--memory", "2M"],
        &["is 3145728 bytes", "larger than guest RAM (2 MiB)"],
    );
    let big_elf = Elf {
        segs: vec![Seg::load(LOAD, 3 << 20, 3 << 20)],
        len: (DATA_AT as usize) + (3 << 20),
        ..Elf::valid64()
    };
    c.image(
        "elf-segments-larger-than-m",
        &big_elf.bytes(),
        &["--memory", "2M"],
        &[
            &format!("loads {} bytes", DATA_AT + (3 << 20)),
            "larger than guest RAM (2 MiB)",
        ],
    );
    c.finish();
}

/// A bzImage as `make bzImage` lays it out (protocol 2.15, relocatable, 64-bit, loaded at
/// 16 MiB with 1 MiB of init_size): one setup sector, then 4 KiB of protected-mode kernel.
fn bzimage() -> Vec<u8> {
    let mut f = vec![0xf4u8; 0x400 + 0x1000];
    let mut put = |off: usize, v: &[u8]| f[off..off + v.len()].copy_from_slice(v);
    put(0, b"MZ");
    put(0x1f1, &[1]); // setup_sects
    put(0x1f4, &0x100u32.to_le_bytes()); // syssize: 4 KiB
    put(0x1fe, &0xaa55u16.to_le_bytes());
    put(0x200, &[0xeb, 0x6a]);
    put(0x202, b"HdrS");
    put(0x206, &0x020fu16.to_le_bytes());
    put(0x211, &[1]); // LOADED_HIGH
    put(0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(0x234, &[1]); // relocatable_kernel
    put(0x236, &1u16.to_le_bytes()); // XLF_KERNEL_64
    put(0x238, &255u32.to_le_bytes()); // cmdline_size
    put(0x258, &0x100_0000u64.to_le_bytes()); // pref_address
    put(0x260, &0x10_0000u32.to_le_bytes()); // init_size
    f
}

#[test]
fn linux_images_refused_with_what_they_are() {
    let mut c = Corpus::new("images-linux");
    let good = bzimage();
    assert_plans(&good);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut img = good.clone();
        f(&mut img);
        img
    };
    let old = with(&|f| f[0x206..0x208].copy_from_slice(&0x0205u16.to_le_bytes()));
    c.image("protocol-2.05", &old, &[], &["boot protocol 2.05", "2.06"]);
    c.image("zimage", &with(&|f| f[0x211] = 0), &[], &["zImage"]);
    c.image(
        "truncated-setup-header",
        &good[..0x230],
        &[],
        &["bzImage is truncated", "setup header"],
    );
    c.image(
        "truncated-kernel",
        &good[..0x900],
        &[],
        &["bzImage is truncated", "syssize"],
    );
    c.image(
        "init-size-beyond-ram",
        &good,
        &["--memory", "16M"],
        &["does not fit in guest RAM"],
    );
    // Not Linux: an EFI application, a boot sector.
    let mut efi = vec![0u8; 0x400];
    efi[..2].copy_from_slice(b"MZ");
    efi[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    efi[0x80..0x84].copy_from_slice(b"PE\0\0");
    efi[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
    c.image(
        "efi-arm64",
        &efi,
        &[],
        &["PE/COFF", "ARM64", "EFI application"],
    );
    let mut mbr = vec![0u8; 512];
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    c.image("boot-sector", &mbr, &[], &["16-bit boot sector", "no BIOS"]);
    c.finish();
}
