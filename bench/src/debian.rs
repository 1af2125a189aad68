//! Debian's real Linux kernel for the Linux tests and the benchmark: the cloud kernel's
//! bzImage and the debug-symbol vmlinux of the same build, fetched once with
//! `apt-get download` and cached in a directory (`target/debian-linux/<abi>/`).
//!
//! Which kernel: the one Debian's metapackage `linux-image-cloud-amd64` depends on now
//! (`apt-cache depends`), so the tests follow Debian's security updates; the environment
//! variable `KVMGDB_DEBIAN_KERNEL=<abi>` (e.g. `6.1.0-48-cloud-amd64`) pins one instead.
//! Written and measured against `6.1.0-48-cloud-amd64` (Debian 6.1.172-1): its
//! `linux-image-…` package is 26 MB, the `-dbg` package 282 MB (587 MB vmlinux once
//! unpacked; only that file is kept).
//!
//! Concurrent users fetch once: an exclusive `flock` on `<cache>/.lock`; every file is
//! unpacked into a scratch directory and renamed into place, so a cache file is whole or
//! absent. A missing apt, a missing network or an unknown package is an error with the
//! command and its output (`apt-get update` first on a fresh machine).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The metapackage whose dependency names the current cloud kernel.
const METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Pins the kernel ABI name instead of following the metapackage.
const PIN_VAR: &str = "KVMGDB_DEBIAN_KERNEL";

/// Debian's cloud kernel, cached.
#[derive(Debug)]
pub struct DebianKernel {
    /// The ABI name, e.g. `6.1.0-48-cloud-amd64` (what `uname -r` prints).
    pub abi: String,
    /// The compressed bzImage (`/boot/vmlinuz-<abi>`).
    pub bzimage: PathBuf,
    /// The ELF vmlinux with full debug information (`/usr/lib/debug/boot/vmlinux-<abi>`).
    pub vmlinux: PathBuf,
    /// The kernel's build configuration (`/boot/config-<abi>`).
    pub config: PathBuf,
}

/// Runs a command; returns its stdout, or an error with the command line and its output.
fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e} (is this a Debian system with apt?)"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ABI name the metapackage depends on (or the pinned one).
fn current_abi() -> Result<String, String> {
    if let Ok(pinned) = std::env::var(PIN_VAR) {
        return Ok(pinned);
    }
    let out = run(Command::new("apt-cache").args(["depends", METAPACKAGE]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "`apt-cache depends {METAPACKAGE}` names no linux-image package (run `apt-get update` first); it printed:\n{out}"
            )
        })
}

/// The Debian version of `package` that apt would install (its candidate).
pub fn package_version(package: &str) -> Result<String, String> {
    let out = run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("`apt-cache show {package}` gives no version"))
}

/// `apt-get download package[=version]` into `dir`; returns the .deb.
pub fn download(dir: &Path, package: &str, version: Option<&str>) -> Result<PathBuf, String> {
    let spec = match version {
        Some(v) => format!("{package}={v}"),
        None => package.to_string(),
    };
    run(Command::new("apt-get")
        .args(["download", &spec])
        .current_dir(dir))?;
    find_deb(dir, package)
}

/// Takes the cache's lock (`<root>/.lock`), waiting for another process that holds it.
pub fn lock(root: &Path) -> Result<FileLock, String> {
    fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    FileLock::acquire(&root.join(".lock"))
}

/// Holds an exclusive `flock` on a file until dropped.
pub struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, String> {
        let f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns; it blocks until the lock is
        // free and touches no memory.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r != 0 {
            return Err(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking a descriptor this value owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// One file of a package: its path inside the .deb and its name in the cache.
struct Wanted {
    package: String,
    member: String,
    cached: PathBuf,
}

/// Fetches (or finds in `root`) the kernel; the error says which command failed and why.
pub fn fetch(root: &Path) -> Result<DebianKernel, String> {
    let abi = current_abi()?;
    let dir = root.join(&abi);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let kernel = DebianKernel {
        bzimage: dir.join("vmlinuz"),
        vmlinux: dir.join("vmlinux"),
        config: dir.join("config"),
        abi: abi.clone(),
    };
    let image = format!("linux-image-{abi}");
    let dbg = format!("linux-image-{abi}-dbg");
    let wanted = [
        Wanted {
            package: image.clone(),
            member: format!("./boot/vmlinuz-{abi}"),
            cached: kernel.bzimage.clone(),
        },
        Wanted {
            package: image,
            member: format!("./boot/config-{abi}"),
            cached: kernel.config.clone(),
        },
        Wanted {
            package: dbg,
            member: format!("./usr/lib/debug/boot/vmlinux-{abi}"),
            cached: kernel.vmlinux.clone(),
        },
    ];
    let _lock = lock(root)?;
    let missing: Vec<&Wanted> = wanted.iter().filter(|w| !w.cached.is_file()).collect();
    if missing.is_empty() {
        return Ok(kernel);
    }
    let scratch = dir.join("download");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let mut packages: Vec<&str> = missing.iter().map(|w| w.package.as_str()).collect();
    packages.dedup();
    eprintln!(
        "kvmgdb: Debian kernel: apt-get download {} into {} (the -dbg package is about 280 MB)",
        packages.join(" "),
        scratch.display()
    );
    run(Command::new("apt-get")
        .arg("download")
        .args(&packages)
        .current_dir(&scratch))?;
    for w in missing {
        let deb = find_deb(&scratch, &w.package)?;
        // Only the one member is unpacked: the -dbg package holds 1.7 GB of module symbols.
        let mut tarfile = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(&deb)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
        let out = Command::new("tar")
            .args(["-x", "-C"])
            .arg(&scratch)
            .arg(&w.member)
            .stdin(tarfile.stdout.take().expect("piped"))
            .output()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        let _ = tarfile.wait();
        let unpacked = scratch.join(&w.member);
        if !unpacked.is_file() {
            return Err(format!(
                "{} has no {} (tar: {})",
                deb.display(),
                w.member,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        fs::rename(&unpacked, &w.cached).map_err(|e| {
            format!(
                "cannot move {} to {}: {e}",
                unpacked.display(),
                w.cached.display()
            )
        })?;
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(kernel)
}

/// The .deb apt-get downloaded for `package` (`<package>_<version>_<arch>.deb`).
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, String> {
    let prefix = format!("{package}_");
    fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            format!(
                "apt-get download left no {prefix}*.deb in {}",
                dir.display()
            )
        })
}
