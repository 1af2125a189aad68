//! Booting Debian's real Linux (the cloud kernel, fetched by tests/common/debian.rs) with
//! kvmgdb's QEMU-style command line, without a debugger attached.
//!
//! On PVM (this project's usual machine, a software KVM) Linux cannot run user space (its
//! `syscall` entry runs at CPL3; docs/kvm-quirks.md), so the tests there check how far the
//! kernel gets: the bzImage's decompressor starts (seconds) in every `cargo test`, and the
//! bzImage with the test initramfs gets to `Run /init as init process` (about five
//! minutes) as the longer check you ask for with `cargo test --test linux -- --ignored`.
//! The vmlinux (PVH entry) boots to `devtmpfs: initialized` in every `cargo test` too, in
//! tests/linux_gdb.rs, after its gdb session (one boot for both). On hardware KVM the
//! tests go on to the initramfs' `/init`, which prints a line and powers off: kvmgdb must
//! then exit with status 0.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// On an idle PVM machine the bzImage decompresses for about 50 s, then reaches `Run /init`
/// about 4 min later; a loaded machine takes several times as long.
const RUN_INIT_TIMEOUT: Duration = Duration::from_secs(1200);

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

#[test]
fn bzimage_decompressor_runs() {
    let kernel = debian_kernel();
    let dir = TestDir::new("bzimage-start");
    let (mut k, started) = boot(&dir, &kernel.bzimage, true);
    // The decompressor's first line (Debian builds without X86_VERBOSE_BOOTUP, so it prints
    // no "Decompressing Linux") shows the boot protocol worked: the 64-bit entry, and
    // boot_params pointing at our command line, where it found `nokaslr`.
    let t = wait_for_serial(
        &mut k,
        "KASLR disabled: 'nokaslr' on cmdline.",
        started,
        Duration::from_secs(120),
    );
    eprintln!("bzImage: launch → the decompressor's first line {t:.1?}");
    if !kvm_is_pvm() {
        expect_linux_boot(&mut k, started, &kernel.abi, 1);
    }
}

#[test]
#[ignore = "about 5 minutes on PVM: run with `cargo test --test linux -- --ignored`"]
fn bzimage_with_initramfs_boots_to_run_init() {
    let kernel = debian_kernel();
    let dir = TestDir::new("bzimage-run-init");
    let (mut k, started) = boot(&dir, &kernel.bzimage, true);
    if !kvm_is_pvm() {
        expect_linux_boot(&mut k, started, &kernel.abi, 1);
        return;
    }
    let mut marks = Vec::new();
    for line in [
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
