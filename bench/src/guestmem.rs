//! Guest RAM read and written from outside the stub, through `/proc/PID/mem`, while the
//! guest runs: the benchmark's way to see each vCPU's counter move (or stop) without
//! asking the stub, which in all-stop mode answers nothing while the guest runs.
//!
//! kvmgdb and QEMU both back guest RAM with one anonymous mapping of exactly the RAM size,
//! guest-physical address 0 at its start, so the same method serves both. Which mapping
//! it is, is not guessed: [`GuestRam::find`] takes the one whose bytes at known guest
//! addresses equal what the stub's own `m` packets returned. The benchmark is the stubs'
//! parent, so it may open their memory (ptrace access mode, Yama scope 1 included).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Errors finding or using a stub's guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum GuestMemError {
    /// /proc could not be read or opened.
    #[error("cannot open /proc/{0}/{1}")]
    Proc(u32, &'static str, #[source] std::io::Error),
    /// No mapping of the RAM's size holds the bytes the stub returned.
    #[error(
        "no {0} MiB mapping of process {1} holds the bytes the stub's `m` returned ({2} mappings of that size)"
    )]
    NotFound(u64, u32, usize),
    /// A read or write failed.
    #[error("cannot access guest address {0:#x} through /proc/{1}/mem")]
    Access(u64, u32, #[source] std::io::Error),
}

/// A stub's guest RAM, from the outside.
pub struct GuestRam {
    mem: File,
    /// The host address of guest-physical 0 in the stub's address space.
    base: u64,
    size: u64,
    pid: u32,
}

impl GuestRam {
    /// Finds the `size`-byte mapping of process `pid` in which every `(guest address,
    /// bytes)` of `probes` reads back equal.
    pub fn find(pid: u32, size: u64, probes: &[(u64, Vec<u8>)]) -> Result<GuestRam, GuestMemError> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|e| GuestMemError::Proc(pid, "maps", e))?;
        let mem = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| GuestMemError::Proc(pid, "mem", e))?;
        let candidates: Vec<u64> = maps
            .lines()
            .filter_map(|l| {
                let range = l.split_whitespace().next()?;
                let (a, b) = range.split_once('-')?;
                let (a, b) = (
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                );
                (b - a == size).then_some(a)
            })
            .collect();
        let n = candidates.len();
        for base in candidates {
            let ram = GuestRam {
                mem: mem
                    .try_clone()
                    .map_err(|e| GuestMemError::Proc(pid, "mem", e))?,
                base,
                size,
                pid,
            };
            let matches = probes.iter().all(|(gpa, want)| {
                let mut got = vec![0u8; want.len()];
                ram.read(*gpa, &mut got).is_ok() && &got == want
            });
            if matches {
                return Ok(ram);
            }
        }
        Err(GuestMemError::NotFound(size >> 20, pid, n))
    }

    fn check(&self, gpa: u64, len: usize) -> Result<u64, GuestMemError> {
        match gpa.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(self.base + gpa),
            _ => Err(GuestMemError::Access(
                gpa,
                self.pid,
                std::io::Error::other("outside guest RAM"),
            )),
        }
    }

    /// Reads `buf.len()` bytes at guest-physical `gpa`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let at = self.check(gpa, buf.len())?;
        self.mem
            .read_exact_at(buf, at)
            .map_err(|e| GuestMemError::Access(gpa, self.pid, e))
    }

    /// Writes `data` at guest-physical `gpa`, as a device's DMA would: the vCPUs see it
    /// on their next load.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        let at = self.check(gpa, data.len())?;
        self.mem
            .write_all_at(data, at)
            .map_err(|e| GuestMemError::Access(gpa, self.pid, e))
    }
}
