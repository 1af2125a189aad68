//! The QEMU command-line form: `kvmgdb -kernel K -append … -initrd … -m … -s -S`, the
//! options a `qemu-system-x86_64` debugging session uses, with QEMU's meanings. Options
//! kvmgdb cannot honour are refused by name; none is silently dropped.
//!
//! A command line is in this form when any argument is a QEMU-style option: a single dash
//! and a word of two or more characters (`-kernel`, `-nographic`, `-vga`), or one of the
//! one-letter options the native form lacks (`-s`, `-S`, `-M`); see [`is_qemu_form`]. As in
//! QEMU, `--name` spells `-name` too; kvmgdb's own `--gdb-arch`, `--pvm-linux` and
//! `--no-pvm-linux` are accepted beside the QEMU options.

use super::files::{ModuleSpec, parse_initrd};
use super::pvm::PvmLinux;
use super::{Form, RunOptions};
use crate::config::{self, GdbAddr, SerialSink};
use crate::gdb::GdbArch;
use std::path::PathBuf;

/// QEMU's default gdb port (`-s` is `-gdb tcp::1234`).
pub const DEFAULT_GDB_PORT: u16 = 1234;

/// A QEMU-form command line kvmgdb cannot take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QemuError {
    /// An option kvmgdb does not implement.
    #[error("unsupported QEMU option {0}")]
    Unsupported(String),
    /// An option without its value.
    #[error("QEMU option {0} needs a value")]
    MissingValue(String),
    /// An option's value kvmgdb cannot honour or does not understand.
    #[error("{option} {value}: {why}")]
    BadValue {
        /// The option as written.
        option: String,
        /// Its value.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// A stray argument that is no option.
    #[error("unexpected argument {0:?}: QEMU options start with '-'")]
    Stray(String),
    /// No `-kernel`.
    #[error("the QEMU command line needs -kernel FILE (kvmgdb has no firmware or disks)")]
    NoKernel,
    /// Two gdb stubs asked for.
    #[error("{0}: kvmgdb has one gdb stub, and -s already means -gdb tcp::1234")]
    TwoStubs(String),
    /// `-S` without a stub: the guest would wait forever.
    #[error(
        "-S without -s or -gdb would wait forever: kvmgdb has no QEMU monitor to continue from"
    )]
    WaitWithoutStub,
}

/// True when `argv` (without the program name) is a QEMU-form command line: any argument is
/// `-s`, `-S`, `-M`, or a single dash followed by a letter and at least one more character
/// that is no native short option with its value attached (`-m128M`). The native form's own
/// options are `--long` ones and `-m SIZE`, `-h`, `-V`.
pub fn is_qemu_form(argv: &[String]) -> bool {
    argv.iter().any(|a| {
        let Some(word) = a.strip_prefix('-') else {
            return false;
        };
        if word.starts_with('-') {
            return false;
        }
        match word.as_bytes() {
            [b's' | b'S' | b'M'] => true,
            // `-m64M` is the native `-m 64M`.
            [b'm', rest @ ..] if rest.first().is_some_and(u8::is_ascii_digit) => false,
            [first, _, ..] => first.is_ascii_lowercase(),
            _ => false,
        }
    })
}

/// Parses a QEMU-form `argv` (without the program name).
pub fn parse(argv: &[String]) -> Result<RunOptions, QemuError> {
    let mut p = Parser::default();
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(QemuError::Stray(arg.clone()));
        };
        if name.is_empty() {
            return Err(QemuError::Stray(arg.clone()));
        }
        let option = format!("-{name}");
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| QemuError::MissingValue(option.clone()))
        };
        match name {
            "kernel" => p.kernel = Some(PathBuf::from(value()?)),
            "append" => p.append = value()?,
            "initrd" => {
                let v = value()?;
                p.initrd = parse_initrd(&v).map_err(|why| bad("-initrd", &v, &why))?;
            }
            "m" => p.memory = Some(parse_memory(&value()?)?),
            "smp" => p.cpus = Some(parse_smp(&value()?)?),
            "s" => p.set_gdb("-s", GdbAddr::Tcp(loopback(DEFAULT_GDB_PORT)))?,
            "gdb" => {
                let v = value()?;
                let addr = parse_gdb(&v)?;
                p.set_gdb(&format!("-gdb {v}"), addr)?;
            }
            "S" => p.wait = true,
            "nographic" => {}
            "serial" => p.serial(&value()?)?,
            "display" => only(&option, &value()?, &["none"], "kvmgdb has no display")?,
            "monitor" => only(
                &option,
                &value()?,
                &["none"],
                "kvmgdb has no QEMU monitor; gdb's `monitor` command reaches kvmgdb's",
            )?,
            "no-reboot" => p.no_reboot = true,
            "enable-kvm" => {}
            "accel" => parse_accel(&value()?)?,
            "cpu" => {
                let v = value()?;
                if v != "host" && v != "max" {
                    p.notes.push(format!(
                        "-cpu {v}: the guest sees the host CPU as KVM offers it (-cpu host); CPU models and feature flags are not emulated"
                    ));
                }
            }
            "machine" | "M" => {
                let v = value()?;
                parse_machine(&option, &v)?;
                p.notes.push(format!(
                    "{option} {v}: kvmgdb's machine is its own (RAM, COM1, isa-debug-exit, the interrupt controllers and ACPI tables a kernel needs; no PCI)"
                ));
            }
            "device" => parse_device(&value()?)?,
            // kvmgdb's own options, beside QEMU's.
            "gdb-arch" if arg.starts_with("--") => {
                let v = value()?;
                p.gdb_arch = Some(v.parse().map_err(|e: crate::gdb::regs::BadGdbArch| {
                    bad("--gdb-arch", &v, &e.to_string())
                })?);
            }
            "pvm-linux" if arg.starts_with("--") => p.pvm_linux = PvmLinux::On,
            "no-pvm-linux" if arg.starts_with("--") => p.pvm_linux = PvmLinux::Off,
            _ => return Err(QemuError::Unsupported(arg.clone())),
        }
    }
    p.finish()
}

fn bad(option: &str, value: &str, why: &str) -> QemuError {
    QemuError::BadValue {
        option: option.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Accepts `value` when it is one of `allowed`.
fn only(option: &str, value: &str, allowed: &[&str], why: &str) -> Result<(), QemuError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(bad(option, value, why))
    }
}

/// What the options said so far.
#[derive(Default)]
struct Parser {
    kernel: Option<PathBuf>,
    append: String,
    initrd: Vec<ModuleSpec>,
    memory: Option<u64>,
    cpus: Option<usize>,
    /// The stub, and the option that asked for it.
    gdb: Option<(String, GdbAddr)>,
    wait: bool,
    /// COM1's sink, once a `-serial` named it.
    serial: Option<SerialSink>,
    no_reboot: bool,
    gdb_arch: Option<GdbArch>,
    pvm_linux: PvmLinux,
    notes: Vec<String>,
}

impl Parser {
    fn set_gdb(&mut self, option: &str, addr: GdbAddr) -> Result<(), QemuError> {
        if self.gdb.is_some() {
            return Err(QemuError::TwoStubs(option.to_string()));
        }
        self.gdb = Some((option.to_string(), addr));
        Ok(())
    }

    /// `-serial DEV`: the first one is COM1, as in QEMU; kvmgdb has no COM2…, so later
    /// ones may only say `none`.
    fn serial(&mut self, dev: &str) -> Result<(), QemuError> {
        let sink = match dev {
            "stdio" | "mon:stdio" => SerialSink::Stdio,
            "none" | "null" => SerialSink::None,
            _ => match dev.strip_prefix("file:") {
                Some(path) if !path.is_empty() => SerialSink::File(path.into()),
                _ => {
                    return Err(bad(
                        "-serial",
                        dev,
                        "kvmgdb's COM1 goes to stdio, file:FILE, mon:stdio (there is no monitor to multiplex), null or none",
                    ));
                }
            },
        };
        if self.serial.is_some() {
            if sink == SerialSink::None {
                return Ok(());
            }
            return Err(bad(
                "-serial",
                dev,
                "kvmgdb has one serial port (COM1); a second -serial may only be none",
            ));
        }
        self.serial = Some(sink);
        Ok(())
    }

    fn finish(self) -> Result<RunOptions, QemuError> {
        let kernel = self.kernel.ok_or(QemuError::NoKernel)?;
        let gdb = self.gdb.map_or(GdbAddr::None, |(_, a)| a);
        if self.wait && gdb == GdbAddr::None {
            return Err(QemuError::WaitWithoutStub);
        }
        Ok(RunOptions {
            form: Form::Qemu,
            kernel: Some(kernel),
            // QEMU's default RAM is 128 MiB, as kvmgdb's.
            memory: self.memory.unwrap_or(128 << 20),
            cpus: self.cpus.unwrap_or(1),
            append: self.append,
            initrd: self.initrd,
            gdb,
            wait: self.wait,
            // Without -serial, QEMU's COM1 goes to its console: stdio with -nographic, a
            // window otherwise. kvmgdb has no window.
            serial: self.serial.unwrap_or(SerialSink::Stdio),
            no_reboot: self.no_reboot,
            // qemu-system-x86_64 always serves the x86-64 layout; its users' habits follow.
            gdb_arch: Some(self.gdb_arch.unwrap_or(GdbArch::X86_64)),
            pvm_linux: self.pvm_linux,
            notes: self.notes,
        })
    }
}

/// `-m [size=]SIZE[,…]`: a bare number is MiB, as in QEMU; K, M, G and T suffixes as usual.
/// Memory hot-plug (`slots=`, `maxmem=`) is refused.
pub fn parse_memory(value: &str) -> Result<u64, QemuError> {
    let mut size = None;
    for (i, part) in value.split(',').enumerate() {
        match part.split_once('=') {
            Some(("size", v)) => size = Some(v),
            None if i == 0 => size = Some(part),
            _ => {
                return Err(bad(
                    "-m",
                    value,
                    "kvmgdb takes only a RAM size (no memory hot-plug)",
                ));
            }
        }
    }
    let size = size.ok_or_else(|| bad("-m", value, "no size given"))?;
    let with_unit = if size.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{size}M")
    } else {
        size.to_string()
    };
    config::parse_size(&with_unit).map_err(|e| bad("-m", value, &e.to_string()))
}

/// `-smp N` or `-smp cpus=N,sockets=…,cores=…,threads=…,maxcpus=…`: the number of vCPUs,
/// as QEMU counts them (without `cpus`, `maxcpus` or the topology's product). kvmgdb has no
/// CPU hot-plug, so `maxcpus` above `cpus` is refused rather than booted without the spare
/// CPUs; the topology is not modelled (each vCPU is a socket of its own), only checked to
/// hold the CPUs as QEMU checks it. The upper limit is KVM's, checked when the machine is
/// built.
fn parse_smp(value: &str) -> Result<usize, QemuError> {
    let mut cpus = None;
    let mut maxcpus = None;
    let mut topology = None::<u64>;
    for (i, part) in value.split(',').enumerate() {
        let (key, n) = match part.split_once('=') {
            Some((k, v)) => (k, v),
            None if i == 0 => ("cpus", part),
            None => return Err(bad("-smp", value, "expected N or cpus=N,…")),
        };
        let n: u64 = n
            .parse()
            .map_err(|_| bad("-smp", value, "expected N or cpus=N,…"))?;
        match key {
            "cpus" => cpus = Some(n),
            "maxcpus" => maxcpus = Some(n),
            "sockets" | "dies" | "clusters" | "cores" | "threads" => {
                topology = Some(topology.unwrap_or(1).saturating_mul(n.max(1)));
            }
            _ => return Err(bad("-smp", value, &format!("unknown -smp property {key}"))),
        }
    }
    let n = cpus.or(maxcpus).or(topology).unwrap_or(1);
    if n == 0 {
        return Err(bad("-smp", value, "a machine needs at least one vCPU"));
    }
    if maxcpus.is_some_and(|m| m > n) {
        return Err(bad(
            "-smp",
            value,
            "kvmgdb has no CPU hot-plug: maxcpus may not exceed cpus",
        ));
    }
    if topology.is_some_and(|t| t < n) {
        return Err(bad(
            "-smp",
            value,
            "the topology (sockets × dies × clusters × cores × threads) holds fewer CPUs than asked for",
        ));
    }
    usize::try_from(n).map_err(|_| bad("-smp", value, "too many vCPUs"))
}

/// `-gdb DEV`: `tcp::PORT`, `tcp:HOST:PORT`, `unix:PATH`, each optionally with `,server`
/// and `,nowait` (QEMU's defaults for a gdb socket anyway), or `none`.
fn parse_gdb(value: &str) -> Result<GdbAddr, QemuError> {
    let mut parts = value.split(',');
    let dev = parts.next().unwrap_or("");
    for opt in parts {
        if !matches!(opt, "server" | "server=on" | "nowait" | "wait=off") {
            return Err(bad(
                "-gdb",
                value,
                &format!(
                    "unsupported socket option {opt} (kvmgdb always listens and never waits for a client before starting)"
                ),
            ));
        }
    }
    let why = "expected tcp::PORT, tcp:HOST:PORT, unix:PATH[,server[,nowait]] or none";
    if dev != "none" && !dev.starts_with("tcp:") && !dev.starts_with("unix:") {
        return Err(bad("-gdb", value, why));
    }
    dev.parse().map_err(|_| bad("-gdb", value, why))
}

/// `-accel kvm[,…]`: kvmgdb is KVM only.
fn parse_accel(value: &str) -> Result<(), QemuError> {
    match value.split(',').next() {
        Some("kvm") => Ok(()),
        _ => Err(bad(
            "-accel",
            value,
            "kvmgdb runs guests on KVM only (-accel kvm)",
        )),
    }
}

/// `-machine TYPE[,accel=kvm][,…]`: the PC types are accepted (kvmgdb's machine stands in
/// for them, with a note); the accelerator must be KVM.
fn parse_machine(option: &str, value: &str) -> Result<(), QemuError> {
    for (i, part) in value.split(',').enumerate() {
        let (key, v) = match part.split_once('=') {
            Some(kv) => kv,
            None if i == 0 => ("type", part),
            None => continue,
        };
        match key {
            "type" => {
                let pc = ["pc", "q35"].contains(&v) || v.starts_with("pc-");
                if !pc {
                    return Err(bad(
                        option,
                        value,
                        "kvmgdb stands in for the PC machines (pc, q35) only",
                    ));
                }
            }
            // `accel=kvm:tcg` asks for KVM first, which kvmgdb always gives.
            "accel" if v.split(':').next() != Some("kvm") => {
                return Err(bad(
                    option,
                    value,
                    "kvmgdb runs guests on KVM only (accel=kvm)",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `-device isa-debug-exit,iobase=0xf4,iosize=…`: kvmgdb's isa-debug-exit sits at 0xf4
/// (QEMU's default, 0x501, is not where kvmgdb's guests look). Other devices are refused.
fn parse_device(value: &str) -> Result<(), QemuError> {
    let mut parts = value.split(',');
    let driver = parts.next().unwrap_or("");
    if driver != "isa-debug-exit" {
        return Err(bad(
            "-device",
            value,
            "kvmgdb has no such device (only isa-debug-exit at 0xf4)",
        ));
    }
    let mut iobase = None;
    for part in parts {
        let (key, v) = part.split_once('=').unwrap_or((part, ""));
        let n =
            parse_int(v).ok_or_else(|| bad("-device", value, &format!("bad number in {part}")))?;
        match key {
            "iobase" => iobase = Some(n),
            "iosize" if [1, 2, 4].contains(&n) => {}
            "iosize" => return Err(bad("-device", value, "iosize must be 1, 2 or 4")),
            _ => {
                return Err(bad(
                    "-device",
                    value,
                    &format!("unknown isa-debug-exit property {key}"),
                ));
            }
        }
    }
    if iobase != Some(0xf4) {
        return Err(bad(
            "-device",
            value,
            "kvmgdb's isa-debug-exit is at iobase=0xf4 (give it explicitly; QEMU's default is 0x501)",
        ));
    }
    Ok(())
}

/// A QEMU integer property: decimal or `0x` hex.
fn parse_int(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn parse_ok(s: &[&str]) -> RunOptions {
        parse(&argv(s)).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn parse_err(s: &[&str]) -> String {
        match parse(&argv(s)) {
            Ok(o) => panic!("{s:?} parsed: {o:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn form_detection() {
        for qemu in [
            &["-kernel", "k"][..],
            &["-s", "-S", "k"],
            &["-M", "q35"],
            &["-nographic"],
            &["-vga", "std"],
            &["--memory", "64M", "-no-reboot"],
        ] {
            assert!(is_qemu_form(&argv(qemu)), "{qemu:?}");
        }
        for native in [
            &["k"][..],
            &["--gdb", "none", "k"],
            &["-m", "64M", "k"],
            &["-m64M", "k"],
            &["-h"],
            &["-V"],
            &["caps"],
            &["--append", "console=ttyS0 -x", "k"],
        ] {
            assert!(!is_qemu_form(&argv(native)), "{native:?}");
        }
    }

    #[test]
    fn the_daily_command_line() {
        let o = parse_ok(&[
            "-enable-kvm",
            "-kernel",
            "arch/x86/boot/bzImage",
            "-append",
            "console=ttyS0 nokaslr",
            "-initrd",
            "initramfs.cpio.gz",
            "-m",
            "512",
            "-smp",
            "1",
            "-s",
            "-S",
            "-nographic",
        ]);
        assert_eq!(o.form, Form::Qemu);
        assert_eq!(o.kernel, Some("arch/x86/boot/bzImage".into()));
        assert_eq!(o.append, "console=ttyS0 nokaslr");
        assert_eq!(o.initrd.len(), 1);
        assert_eq!(o.initrd[0].path, PathBuf::from("initramfs.cpio.gz"));
        assert_eq!(o.memory, 512 << 20);
        assert_eq!(o.gdb, GdbAddr::Tcp("127.0.0.1:1234".parse().unwrap()));
        assert!(o.wait);
        assert_eq!(o.serial, SerialSink::Stdio);
        assert_eq!(o.gdb_arch, Some(GdbArch::X86_64));
        assert!(o.notes.is_empty(), "{:?}", o.notes);
    }

    #[test]
    fn without_dash_s_capital_the_guest_runs_at_once() {
        let o = parse_ok(&["-kernel", "k", "-gdb", "tcp::4321"]);
        assert!(!o.wait);
        assert_eq!(o.gdb, GdbAddr::Tcp("127.0.0.1:4321".parse().unwrap()));
        // No stub at all without -s or -gdb.
        assert_eq!(parse_ok(&["-kernel", "k"]).gdb, GdbAddr::None);
    }

    #[test]
    fn gdb_devices() {
        let gdb = |v: &str| parse(&argv(&["-kernel", "k", "-gdb", v])).map(|o| o.gdb);
        assert_eq!(
            gdb("tcp:0.0.0.0:99"),
            Ok(GdbAddr::Tcp("0.0.0.0:99".parse().unwrap()))
        );
        assert_eq!(
            gdb("unix:/tmp/s,server,nowait"),
            Ok(GdbAddr::Unix("/tmp/s".into()))
        );
        assert_eq!(
            gdb("unix:/tmp/s,server"),
            Ok(GdbAddr::Unix("/tmp/s".into()))
        );
        assert_eq!(
            gdb("tcp::1,server=on,wait=off"),
            Ok(GdbAddr::Tcp("127.0.0.1:1".parse().unwrap()))
        );
        for bad in [
            "tcp::",
            "udp::1",
            ":1234",
            "unix:/s,wait",
            "tcp::1,telnet",
            "stdio",
        ] {
            assert!(gdb(bad).is_err(), "{bad:?}");
        }
        let e = parse_err(&["-kernel", "k", "-s", "-gdb", "tcp::2"]);
        assert!(e.contains("one gdb stub"), "{e}");
        let e = parse_err(&["-kernel", "k", "-S"]);
        assert!(e.contains("wait forever"), "{e}");
    }

    #[test]
    fn memory_sizes() {
        for (v, want) in [
            ("512", 512u64 << 20),
            ("1G", 1 << 30),
            ("size=256", 256 << 20),
            ("size=2G", 2 << 30),
            ("64M", 64 << 20),
        ] {
            assert_eq!(parse_memory(v), Ok(want), "{v}");
        }
        for bad in ["", "0", "abc", "512,slots=2", "1G,maxmem=4G", "1000G"] {
            assert!(parse_memory(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn smp_counts_vcpus_as_qemu_does() {
        for (ok, n) in [
            ("1", 1),
            ("4", 4),
            ("cpus=1", 1),
            ("cpus=8", 8),
            ("1,sockets=1,cores=1,threads=1", 1),
            ("1,cores=2", 1),
            ("sockets=2", 2),
            ("sockets=2,cores=2,threads=2", 8),
            ("cpus=2,maxcpus=2", 2),
            ("maxcpus=3", 3),
            ("100", 100),
        ] {
            assert_eq!(parse_ok(&["-kernel", "k", "-smp", ok]).cpus, n, "{ok}");
        }
        assert_eq!(parse_ok(&["-kernel", "k"]).cpus, 1);
        for (bad, why) in [
            ("0", "at least one"),
            ("cpus=0", "at least one"),
            ("x", "expected N"),
            ("cpus=1,bogus=1", "unknown"),
            ("2,maxcpus=4", "hot-plug"),
            ("4,cores=2", "topology"),
        ] {
            let e = parse_err(&["-kernel", "k", "-smp", bad]);
            assert!(e.starts_with(&format!("-smp {bad}: ")), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn serial_sinks() {
        let serial = |v: &[&str]| {
            let mut a = vec!["-kernel", "k"];
            for s in v {
                a.extend(["-serial", s]);
            }
            parse(&argv(&a)).map(|o| o.serial)
        };
        assert_eq!(serial(&["stdio"]), Ok(SerialSink::Stdio));
        assert_eq!(serial(&["mon:stdio"]), Ok(SerialSink::Stdio));
        assert_eq!(serial(&["none"]), Ok(SerialSink::None));
        assert_eq!(serial(&["null"]), Ok(SerialSink::None));
        assert_eq!(
            serial(&["file:/tmp/x"]),
            Ok(SerialSink::File("/tmp/x".into()))
        );
        assert_eq!(
            serial(&["file:/tmp/x", "none"]),
            Ok(SerialSink::File("/tmp/x".into()))
        );
        assert_eq!(serial(&[]), Ok(SerialSink::Stdio));
        for bad in [
            &["pty"][..],
            &["file:"],
            &["tcp::4444"],
            &["stdio", "file:/x"],
        ] {
            assert!(serial(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accepted_with_a_note_or_refused() {
        let o = parse_ok(&[
            "-kernel",
            "k",
            "-M",
            "q35",
            "-cpu",
            "qemu64",
            "-machine",
            "pc,accel=kvm:tcg",
        ]);
        assert_eq!(o.notes.len(), 3, "{:?}", o.notes);
        assert!(o.notes[1].starts_with("-cpu qemu64: "), "{:?}", o.notes);
        let o = parse_ok(&[
            "-kernel",
            "k",
            "-cpu",
            "host",
            "-accel",
            "kvm",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "--enable-kvm",
        ]);
        assert!(o.notes.is_empty(), "{:?}", o.notes);
        assert!(o.no_reboot);
        parse_ok(&[
            "-kernel",
            "k",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]);
        parse_ok(&["-kernel", "k", "-device", "isa-debug-exit,iobase=244"]);
        for (args, want) in [
            (&["-vga", "std"][..], "unsupported QEMU option -vga"),
            (&["-no-shutdown"], "unsupported QEMU option -no-shutdown"),
            (&["-hda", "disk.img"], "unsupported QEMU option -hda"),
            (&["-gdb-arch", "i386"], "unsupported QEMU option -gdb-arch"),
            (&["-device", "isa-debug-exit"], "iobase=0xf4"),
            (&["-device", "isa-debug-exit,iobase=0x501"], "iobase=0xf4"),
            (&["-device", "e1000"], "no such device"),
            (&["-accel", "tcg"], "KVM only"),
            (&["-machine", "q35,accel=tcg"], "KVM only"),
            (&["-M", "microvm"], "PC machines"),
            (&["-display", "gtk"], "no display"),
            (&["-monitor", "stdio"], "no QEMU monitor"),
            (&["-append"], "needs a value"),
            (&["stray"], "unexpected argument"),
        ] {
            let mut a = vec!["-kernel", "k"];
            a.extend(args);
            let e = parse_err(&a);
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert_eq!(parse_err(&["-s"]), QemuError::NoKernel.to_string());
    }

    #[test]
    fn kvmgdb_options_beside_qemus() {
        let o = parse_ok(&["-kernel", "k", "--gdb-arch", "i386", "--no-pvm-linux"]);
        assert_eq!(o.gdb_arch, Some(GdbArch::I386));
        assert_eq!(o.pvm_linux, PvmLinux::Off);
        assert_eq!(
            parse_ok(&["-kernel", "k", "--pvm-linux"]).pvm_linux,
            PvmLinux::On
        );
        // QEMU's own options may be spelt with two dashes, as QEMU allows.
        assert_eq!(parse_ok(&["--kernel", "k", "--m", "64"]).memory, 64 << 20);
        let e = parse_err(&["-kernel", "k", "--gdb-arch", "arm"]);
        assert!(e.contains("i386 or x86-64"), "{e}");
    }
}
