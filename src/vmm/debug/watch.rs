//! Watchpoints of any length and number, built on memory slots instead of debug registers.
//!
//! Debug-register data breakpoints are four 1/2/4/8-byte slots, and on PVM they never fire
//! at all (docs/kvm-quirks.md, "data watchpoints"). Instead, a page holding a write watch is put in a read-only
//! memory slot (KVM_MEM_READONLY: writes exit to us as MMIO, reads run at full speed), and a
//! page holding a read or access watch gets no slot at all (every access exits). The vCPU
//! thread completes each such access on guest RAM itself and reports a hit only when the
//! access overlaps a watched range, so the page granularity never shows.

use crate::memory::GuestMem;
use vm_memory::{Bytes, GuestAddress};

/// What a watchpoint catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// Writes.
    Write,
    /// Reads.
    Read,
    /// Reads and writes.
    Access,
}

impl WatchKind {
    /// Whether an access of this direction triggers the watchpoint.
    pub fn catches(self, write: bool) -> bool {
        match self {
            WatchKind::Write => write,
            WatchKind::Read => !write,
            WatchKind::Access => true,
        }
    }
}

/// One watchpoint: a linear range and the guest-physical pieces it was translated to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchpoint {
    /// First linear address watched.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it catches.
    pub kind: WatchKind,
    /// (guest-physical start, length, linear start) of each piece, one per page run.
    pub pieces: Vec<(GuestAddress, u64, u64)>,
}

impl Watchpoint {
    /// The linear address of the first watched byte in the physical range `[gpa, gpa+len)`.
    pub fn hit(&self, gpa: u64, len: u64, write: bool) -> Option<u64> {
        if !self.kind.catches(write) {
            return None;
        }
        self.pieces.iter().find_map(|&(start, plen, linear)| {
            let lo = start.0.max(gpa);
            let hi = (start.0 + plen).min(gpa + len);
            (lo < hi).then(|| linear + (lo - start.0))
        })
    }
}

/// The current contents of a watchpoint's range (unreadable bytes read as zero).
pub fn watched_bytes(mem: &GuestMem, w: &Watchpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(w.len as usize);
    for &(gpa, len, _) in &w.pieces {
        let mut buf = vec![0u8; len as usize];
        let _ = mem.read_slice(&mut buf, gpa);
        out.extend_from_slice(&buf);
    }
    out
}

/// A watchpoint on `len` bytes at guest-physical `gpa`, linear 0xffff_0000 above it.
#[cfg(test)]
pub(crate) fn test_watchpoint(gpa: u64, len: u64, kind: WatchKind) -> Watchpoint {
    Watchpoint {
        addr: 0xffff_0000 + gpa,
        len,
        kind,
        pieces: vec![(GuestAddress(gpa), len, 0xffff_0000 + gpa)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_watchpoint as wp;

    #[test]
    fn hits_filter_by_range_and_direction() {
        let w = wp(0x1010, 8, WatchKind::Write);
        assert_eq!(w.hit(0x1000, 8, true), None);
        assert_eq!(w.hit(0x100c, 8, true), Some(0xffff_1010));
        assert_eq!(w.hit(0x1017, 1, true), Some(0xffff_1017));
        assert_eq!(w.hit(0x1018, 1, true), None);
        assert_eq!(w.hit(0x1010, 8, false), None);
        let r = wp(0x1010, 8, WatchKind::Read);
        assert_eq!(r.hit(0x1010, 4, false), Some(0xffff_1010));
        assert_eq!(r.hit(0x1010, 4, true), None);
    }
}
