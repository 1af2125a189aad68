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

/// kvmgdb's arguments to boot a Linux `image` the QEMU way: `-m`, `-append`, `-initrd`,
/// and on PVM the `--pvm-linux` preset.
pub fn linux_args(initrd: Option<&Path>, cmdline: &str) -> Vec<String> {
    let mut args = vec![
        "-m".to_string(),
        LINUX_RAM.to_string(),
        "-append".to_string(),
        cmdline.to_string(),
    ];
    if let Some(initrd) = initrd {
        args.push("-initrd".into());
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
