//! Booting Debian's real Linux (the cloud kernel, fetched by tests/common/debian.rs) with
//! kvmgdb's QEMU-style command line, without a debugger attached.
//!
//! On PVM (this project's usual machine, a software KVM) Linux cannot run user space (its
//! `syscall` entry runs at CPL3; docs/kvm-quirks.md), so the tests there check how far the
//! kernel gets: the vmlinux (PVH entry, no decompression) to `devtmpfs: initialized`
//! (about a minute) in every `cargo test`, and the bzImage with the test initramfs to
//! `Run /init as init process` (about five minutes) as the longer check you ask for with
//! `cargo test --test linux -- --ignored`. On hardware KVM the same tests go on to the
//! initramfs' `/init`, which prints a line and powers off: kvmgdb must then exit with
//! status 0.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// On PVM: launch → `devtmpfs: initialized` is about 60 s on an idle machine (guest time
/// runs at wall time); 207 s was measured with the machine's load average at 9.
const DEVTMPFS_TIMEOUT: Duration = Duration::from_secs(420);
/// On PVM the bzImage decompresses for about 50 s, then reaches `Run /init` about 4 min later.
const RUN_INIT_TIMEOUT: Duration = Duration::from_secs(600);
/// On hardware KVM the whole boot to user space takes seconds.
const HW_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts kvmgdb on `image` (running at once, a gdb stub listening but unused).
fn boot(dir: &TestDir, image: &std::path::Path, initrd: bool) -> (Kvmgdb, Instant) {
    require_kvm();
    let initramfs = initramfs();
    let args = linux_args(initrd.then_some(initramfs.as_path()), LINUX_CMDLINE);
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let k = Kvmgdb::start(
        dir,
        Boot {
            kernel: Some(image.to_path_buf()),
            listen: Listen::Tcp,
            no_wait: true,
            extra: &extra,
        },
    );
    (k, started)
}

/// On hardware KVM: the initramfs' `/init` prints its line and powers off; kvmgdb exits 0.
fn expect_user_space_and_poweroff(k: &mut Kvmgdb, started: Instant) {
    let t = wait_for_serial(k, INIT_LINE, started, HW_BOOT_TIMEOUT);
    eprintln!("launch → /init's line: {t:.1?}");
    let status = k.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status,
        0,
        "a guest poweroff ends kvmgdb with status 0; stderr:\n{}",
        k.stderr()
    );
}

#[test]
fn vmlinux_boots_to_devtmpfs() {
    let kernel = debian_kernel();
    let dir = TestDir::new("vmlinux-devtmpfs");
    let (mut k, started) = boot(&dir, &kernel.vmlinux, true);
    let version = wait_for_serial(&mut k, "Linux version 6.", started, DEVTMPFS_TIMEOUT);
    assert_contains(&k.serial_output(), &kernel.abi);
    let devtmpfs = wait_for_serial(&mut k, "devtmpfs: initialized", started, DEVTMPFS_TIMEOUT);
    eprintln!(
        "vmlinux: launch → 'Linux version' {version:.1?}, → 'devtmpfs: initialized' {devtmpfs:.1?}"
    );
    let serial = k.serial_output();
    // What the PVH start info handed over: the command line and the initrd; and the
    // machine the kernel found: the MADT's IOAPIC, one CPU.
    for line in [
        &format!("Command line: {LINUX_CMDLINE}"),
        "RAMDISK: [mem ",
        "IOAPIC[0]: apic_id 0",
        "smpboot: Total of 1 processors",
    ] {
        assert_contains(&serial, line);
    }
    assert_not_contains(&serial, "Kernel panic");
    if !kvm_is_pvm() {
        expect_user_space_and_poweroff(&mut k, started);
    }
}

#[test]
fn bzimage_decompressor_runs() {
    let kernel = debian_kernel();
    let dir = TestDir::new("bzimage-start");
    let (mut k, started) = boot(&dir, &kernel.bzimage, true);
    // The decompressor's first line shows the boot protocol worked: real-mode setup skipped,
    // 64-bit entry, boot_params with the command line (it found earlyprintk there).
    let t = wait_for_serial(
        &mut k,
        "Decompressing Linux",
        started,
        Duration::from_secs(60),
    );
    eprintln!("bzImage: launch → 'Decompressing Linux' {t:.1?}");
    if !kvm_is_pvm() {
        expect_user_space_and_poweroff(&mut k, started);
    }
}

#[test]
#[ignore = "about 5 minutes on PVM: run with `cargo test --test linux -- --ignored`"]
fn bzimage_with_initramfs_boots_to_run_init() {
    let kernel = debian_kernel();
    let dir = TestDir::new("bzimage-run-init");
    let (mut k, started) = boot(&dir, &kernel.bzimage, true);
    if !kvm_is_pvm() {
        expect_user_space_and_poweroff(&mut k, started);
        return;
    }
    let mut marks = Vec::new();
    for line in [
        "Booting the kernel",
        "Linux version 6.",
        "devtmpfs: initialized",
        "Trying to unpack rootfs image as initramfs",
        "Freeing unused kernel image",
        // The kernel found our /init in the archive.
        "Run /init as init process",
    ] {
        marks.push((
            line,
            wait_for_serial(&mut k, line, started, RUN_INIT_TIMEOUT),
        ));
    }
    for (line, t) in marks {
        eprintln!("{t:>8.1?}  {line}");
    }
}
