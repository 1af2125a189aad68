//! Debian's real Linux kernel for the Linux tests, from [`kvmgdb_bench::debian`] (which
//! says which kernel and how it is fetched), cached under `target/debian-linux/<abi>/`
//! once per process (a `OnceLock`) and machine (the fetch's file lock); and what the Linux
//! tests share: the command line, the initramfs, the serial wait.

use kvmgdb_bench::debian::{self, DebianKernel};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The cache root: `target/debian-linux`.
pub fn cache_root() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`; the cache sits beside it.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("debian-linux")
}

/// Debian's cloud kernel, downloaded on first use. Fails the test with a clear message
/// when it cannot be obtained (no apt, no network, no such package).
pub fn debian_kernel() -> &'static DebianKernel {
    static KERNEL: OnceLock<Result<DebianKernel, String>> = OnceLock::new();
    match KERNEL.get_or_init(|| debian::fetch(&cache_root())) {
        Ok(k) => k,
        Err(e) => panic!("cannot obtain Debian's Linux kernel: {e}"),
    }
}

/// True when this machine's KVM is PVM (a software KVM, see docs/kvm-quirks.md): there a
/// Linux guest gets as far as `Run /init as init process` and no further, while on
/// hardware KVM it runs user space.
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The kernel command line of the Linux tests. `nokaslr` keeps the kernel where the -dbg
/// symbols say it is; `initcall_blacklist=load_system_certificate_list` and
/// `cryptomgr.notests` skip a 60 s X.509 time-out and minutes of crypto self-tests under an
/// emulating KVM (docs/kvm-quirks.md); `panic=-1` turns a panic into a reboot, which ends
/// kvmgdb. The PVM parameters (`noxsave clearcpuid=…`) come from `--pvm-linux`.
pub const LINUX_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr panic=-1 \
     initcall_blacklist=load_system_certificate_list cryptomgr.notests";

/// Guest RAM for the Linux tests: enough for the cloud kernel and the tiny initramfs, small
/// enough that memory initialisation stays short.
pub const LINUX_RAM: &str = "256M";

/// The line `/init` of the test initramfs (guests/initramfs/init.S) prints.
pub const INIT_LINE: &str = "kvmgdb initramfs: /init runs in user space; powering off";

/// The test initramfs built by build.rs.
pub fn initramfs() -> PathBuf {
    super::guest("initramfs.cpio")
}

/// kvmgdb's arguments (its native form, which the harness's `--gdb` and `--serial` belong
/// to) to boot a Linux kernel: `--memory`, `--append`, `--initrd`, and on PVM the
/// `--pvm-linux` preset, asked for explicitly (automatic there, but then with a note on
/// stderr before the line the harness reads).
pub fn linux_args(initrd: Option<&Path>, cmdline: &str) -> Vec<String> {
    let mut args = vec![
        "--memory".to_string(),
        LINUX_RAM.to_string(),
        "--append".to_string(),
        cmdline.to_string(),
    ];
    if let Some(initrd) = initrd {
        args.push("--initrd".into());
        args.push(initrd.display().to_string());
    }
    if kvm_is_pvm() {
        args.push("--pvm-linux".into());
    }
    args
}

/// Waits until the guest's serial output contains `needle`; returns the time from `since`.
/// Fails after `timeout`, or when kvmgdb exits first, with the serial output's tail and
/// kvmgdb's stderr.
#[track_caller]
pub fn wait_for_serial(
    k: &mut super::Kvmgdb,
    needle: &str,
    since: std::time::Instant,
    timeout: std::time::Duration,
) -> std::time::Duration {
    let deadline = since + timeout;
    loop {
        let serial = k.serial_output();
        if serial.contains(needle) {
            return since.elapsed();
        }
        let running = k.is_running();
        if !running || std::time::Instant::now() >= deadline {
            let tail: Vec<&str> = serial.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "the guest did not print {needle:?} within {:?} ({}); last serial lines:\n{}\nkvmgdb stderr:\n{}",
                since.elapsed(),
                if running {
                    "still running"
                } else {
                    "kvmgdb exited"
                },
                tail.join("\n"),
                k.stderr()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The kernel's own gdb scripts (`vmlinux-gdb.py` and `scripts/gdb/linux/`) for `kernel`,
/// laid out as in a kernel build tree: `<dir>/vmlinux-gdb.py` and `<dir>/scripts/gdb/`.
/// Fetched once (per process and machine, like the kernel) and cached in
/// `target/debian-linux/<abi>/lx/`. Fails the test when they cannot be had.
///
/// Debian builds its kernels without CONFIG_GDB_SCRIPTS, so no package ships them ready to
/// use: `linux-source-<x.y>` of the same Debian version has the Python files and
/// `constants.py.in`, from which the kernel build generates `constants.py` by running the C
/// preprocessor over it with the kernel's headers and configuration
/// (scripts/gdb/linux/Makefile). [`generate_constants`] does that with the same source's
/// headers and the package's `/boot/config-<abi>`.
pub fn linux_gdb_scripts(kernel: &DebianKernel) -> &'static Path {
    static SCRIPTS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match SCRIPTS.get_or_init(|| fetch_gdb_scripts(kernel)) {
        Ok(p) => p,
        Err(e) => panic!("cannot obtain Linux's gdb scripts: {e}"),
    }
}

fn fetch_gdb_scripts(kernel: &DebianKernel) -> Result<PathBuf, String> {
    use std::process::{Command, Stdio};
    let dir = kernel.vmlinux.with_file_name("lx");
    if dir.join("scripts/gdb/linux/constants.py").is_file() {
        return Ok(dir);
    }
    let _lock = debian::lock(&cache_root())?;
    if dir.join("scripts/gdb/linux/constants.py").is_file() {
        return Ok(dir);
    }
    // linux-source-6.1 for 6.1.0-48-cloud-amd64, at the image package's Debian version.
    let series: String = kernel.abi.split('.').take(2).collect::<Vec<_>>().join(".");
    let series = series.split('-').next().unwrap_or_default().to_string();
    let package = format!("linux-source-{series}");
    let version = debian::package_version(&format!("linux-image-{}", kernel.abi))?;
    let scratch = dir.with_file_name("lx-download");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    eprintln!("kvmgdb: apt-get download {package}={version} (about 140 MB) for scripts/gdb");
    let deb = debian::download(&scratch, &package, Some(&version))?;
    // The source is one .tar.xz inside the .deb; only scripts/gdb and include/ come out.
    let top = format!("linux-source-{series}");
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -O './usr/src/{top}.tar.xz' | xz -dc | tar -x -C '{}' '{top}/scripts/gdb' '{top}/include'",
        deb.display(),
        scratch.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let src = scratch.join(&top);
    if !out.status.success() || !src.join("scripts/gdb/vmlinux-gdb.py").is_file() {
        return Err(format!(
            "unpacking {} failed ({}): {}",
            deb.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let gdb_dir = src.join("scripts/gdb");
    let constants = generate_constants(&src, &kernel.config, &scratch)?;
    std::fs::write(gdb_dir.join("linux/constants.py"), constants)
        .map_err(|e| format!("cannot write constants.py: {e}"))?;
    // The build tree's layout: vmlinux-gdb.py beside scripts/gdb (it adds that to sys.path).
    let staged = scratch.join("lx");
    std::fs::create_dir_all(staged.join("scripts"))
        .map_err(|e| format!("cannot create {}: {e}", staged.display()))?;
    let moves = [
        (
            gdb_dir.join("vmlinux-gdb.py"),
            staged.join("vmlinux-gdb.py"),
        ),
        (gdb_dir, staged.join("scripts/gdb")),
    ];
    for (from, to) in moves {
        std::fs::rename(&from, &to).map_err(|e| format!("cannot move {}: {e}", from.display()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staged, &dir).map_err(|e| format!("cannot move {}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(dir)
}

/// `scripts/gdb/linux/constants.py` as the kernel build makes it (`$(CPP) -E -x c -P
/// $(c_flags) constants.py.in`, then everything up to the `<!-- end-c-headers -->` marker
/// deleted), from the source tree `src` and the kernel configuration `config`.
///
/// Without a configured build tree (Debian ships none for its cloud kernels here) the
/// headers cannot be preprocessed whole: they include generated files. So the C
/// preprocessor gets each header `constants.py.in` includes (and the few the values use:
/// kconfig.h, vdso/bits.h, vdso/const.h, uapi/linux/const.h) with only its preprocessor
/// conditionals and definitions, and the configuration as `generated/autoconf.h` from
/// `config`, as Kconfig writes it. Every value then comes from Debian's own headers under
/// Debian's own configuration; a name whose definition depends on another header stays
/// unexpanded, and gdb evaluates it from the kernel's symbols (as for `hrtimer_resolution`,
/// a variable with CONFIG_HIGH_RES_TIMERS=y).
pub fn generate_constants(src: &Path, config: &Path, scratch: &Path) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let input = read(&src.join("scripts/gdb/linux/constants.py.in"))?;
    let mut headers: Vec<String> = [
        "linux/kconfig.h",
        "uapi/linux/const.h",
        "vdso/const.h",
        "vdso/bits.h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    headers.extend(input.lines().filter_map(|l| {
        let name = l.trim().strip_prefix("#include <")?.strip_suffix('>')?;
        Some(name.to_string())
    }));
    let mut unit = String::new();
    for h in &headers {
        unit.push_str(&definitions_only(&read(&src.join("include").join(h))?));
    }
    unit.extend(
        input
            .lines()
            .filter(|l| !l.trim_start().starts_with("#include"))
            .map(|l| format!("{l}\n")),
    );
    let unit_path = scratch.join("constants.c");
    std::fs::write(&unit_path, unit).map_err(|e| format!("cannot write constants.c: {e}"))?;
    let autoconf = scratch.join("autoconf.h");
    std::fs::write(&autoconf, autoconf_h(&read(config)?))
        .map_err(|e| format!("cannot write autoconf.h: {e}"))?;
    let out = Command::new("gcc")
        .args([
            "-E",
            "-x",
            "c",
            "-P",
            "-nostdinc",
            "-D__KERNEL__",
            "-include",
        ])
        .arg(&autoconf)
        .arg(&unit_path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run gcc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "preprocessing constants.py.in failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let marker = "<!-- end-c-headers -->";
    let at = text
        .find(marker)
        .ok_or_else(|| format!("no {marker} in the preprocessed constants.py.in"))?;
    Ok(text[at + marker.len()..]
        .trim_start_matches('\n')
        .to_string())
}

/// A header's preprocessor conditionals and definitions (continuation lines joined), with
/// its `#include`s and C code left out.
fn definitions_only(header: &str) -> String {
    let joined = header.replace("\\\n", " ");
    let mut out = String::new();
    for l in joined.lines() {
        let t = l.trim_start();
        let Some(d) = t.strip_prefix('#') else {
            continue;
        };
        let word = d.trim_start().split(|c: char| !c.is_alphanumeric()).next();
        if matches!(
            word,
            Some("if" | "ifdef" | "ifndef" | "elif" | "else" | "endif" | "define" | "undef")
        ) {
            // Comments at the end of a definition would run into the next line's text.
            let code = t
                .split("/*")
                .next()
                .unwrap_or(t)
                .split("//")
                .next()
                .unwrap_or(t);
            out.push_str(code.trim_end());
            out.push('\n');
        }
    }
    out
}

/// `include/generated/autoconf.h` from a `.config`: `CONFIG_X=y` → `#define CONFIG_X 1`,
/// `=m` → `#define CONFIG_X_MODULE 1`, other values as they are (scripts/kconfig).
pub fn autoconf_h(config: &str) -> String {
    config
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| match v {
            "y" => format!("#define {k} 1\n"),
            "m" => format!("#define {k}_MODULE 1\n"),
            v => format!("#define {k} {v}\n"),
        })
        .collect()
}

/// How long a Linux boot may take to get as far as it can after the test's last check
/// (counted from that check):
/// on PVM to `devtmpfs: initialized` (about 60 s of guest time, which runs at wall time;
/// 207 s measured with the machine's load average at 9), on hardware KVM to /init's
/// poweroff (seconds).
pub const LINUX_BOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Lets a Linux boot go as far as it can on this KVM and checks it: on PVM to
/// `devtmpfs: initialized` (then the test ends the machine), on hardware KVM to the
/// initramfs' `/init`, which prints its line and powers off, so kvmgdb exits with status 0.
/// Also checks what the boot handed the kernel (command line, initrd) and the machine it
/// found (the MADT's IOAPIC, `cpus` CPUs brought up). Returns launch → the last mark.
pub fn expect_linux_boot(
    k: &mut super::Kvmgdb,
    started: std::time::Instant,
    abi: &str,
    cpus: usize,
) -> std::time::Duration {
    let last = if kvm_is_pvm() {
        "devtmpfs: initialized"
    } else {
        INIT_LINE
    };
    // The limit runs from now: a debugger session before it may have taken minutes.
    wait_for_serial(k, last, std::time::Instant::now(), LINUX_BOOT_TIMEOUT);
    let t = started.elapsed();
    eprintln!("launch → {last:?}: {t:.1?}");
    let serial = k.serial_output();
    let mut lines = vec![
        format!("Linux version {abi}"),
        format!("Command line: {LINUX_CMDLINE}"),
        "RAMDISK: [mem ".to_string(),
        "IOAPIC[0]: apic_id 0".to_string(),
        format!("smpboot: Allowing {cpus} CPUs, 0 hotplug CPUs"),
        format!("smpboot: Total of {cpus} processors activated"),
    ];
    if cpus > 1 {
        lines.push("x86: Booting SMP configuration:".to_string());
        lines.push(format!("smp: Brought up 1 node, {cpus} CPUs"));
    }
    for line in &lines {
        super::assert_contains(&serial, line);
    }
    super::assert_not_contains(&serial, "Kernel panic");
    if !kvm_is_pvm() {
        let status = k.wait_exit(std::time::Duration::from_secs(30));
        assert_eq!(
            status,
            0,
            "a guest poweroff ends kvmgdb with status 0; stderr:\n{}",
            k.stderr()
        );
    }
    t
}
