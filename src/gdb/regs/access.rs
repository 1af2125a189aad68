//! Register access: the whole register file (`g`/`G`) and single registers (`p`/`P`, which
//! gdb uses to write one register). Reads cost at most one KVM_GET_XSAVE and one
//! KVM_GET_MSRS per stop; writes reach KVM only for registers whose value changed.

use super::kvm_map::{
    Source, segment_mut, segment_reg, selector_is_base, set_snapshot_value, set_xsave_value,
    snapshot_value, source, xsave_value,
};
use super::layout::{Feature, Layout, RegNum, Regs};
use crate::gdb::target::{KvmTarget, non_fatal};
use crate::vmm::VmError;
use crate::x86::msr;
use crate::x86::xsave::normalized_xsave;
use gdbstub::common::Tid;
use gdbstub::target::ext::base::single_register_access::SingleRegisterAccess;
use gdbstub::target::{TargetError, TargetResult};
use kvm_bindings::kvm_xsave;

/// `v` cut to `bits`.
fn truncate(v: u128, bits: u32) -> u128 {
    if bits >= 128 {
        v
    } else {
        v & ((1u128 << bits) - 1)
    }
}

impl<A: Layout> KvmTarget<'_, A> {
    /// IA32_KERNEL_GS_BASE of vCPU `id` (from the VMM's per-stop cache). None if KVM
    /// cannot read it.
    fn kernel_gs_base(&mut self, id: usize) -> Result<Option<u64>, VmError> {
        let value = self.vm.msr_at_stop(id, msr::KERNEL_GS_BASE)?;
        if value.is_none() {
            log::debug!("vCPU {id}: KVM cannot read IA32_KERNEL_GS_BASE");
        }
        Ok(value)
    }

    /// The FPU/SSE/AVX state of vCPU `id` as gdb should see it, or None (logged) if KVM
    /// cannot give it: the other registers are still worth showing.
    fn fpu_state(&mut self, id: usize) -> Result<Option<Box<kvm_xsave>>, VmError> {
        match self.vm.xsave(id) {
            Ok(x) => Ok(Some(normalized_xsave(&x))),
            Err(e @ (VmError::Running(_) | VmError::NoVcpu(_) | VmError::VcpuGone(_))) => Err(e),
            Err(e) => {
                log::debug!("{e}: FPU registers unavailable");
                Ok(None)
            }
        }
    }

    /// Reads every register of vCPU `id`.
    pub(crate) fn read_all(&mut self, id: usize, regs: &mut Regs<A>) -> Result<(), VmError> {
        let snap = self.vm.state(id)?;
        // The MSR read first: it brings the XSAVE area along in the same vCPU hand-off.
        let kgs = self.kernel_gs_base(id)?;
        let fpu = self.fpu_state(id)?;
        regs.avx = self.avx;
        regs.unavailable = 0;
        for (i, d) in A::regs().iter().enumerate() {
            let value = match source(d.reg) {
                Source::Snapshot => snapshot_value(&snap, d.reg).map(u128::from),
                Source::Xsave => fpu.as_deref().and_then(|x| xsave_value(x, d.reg)),
                Source::Msr => kgs.map(u128::from),
            };
            match value {
                Some(v) => regs.vals[i] = truncate(v, d.bits),
                None => regs.unavailable |= 1 << i,
            }
        }
        Ok(())
    }

    /// Reads register `index` (a gdb register number) of vCPU `id`; None if unavailable.
    fn read_one(&mut self, id: usize, index: usize) -> Result<Option<u128>, VmError> {
        let Some(d) = A::regs().get(index) else {
            return Ok(None);
        };
        if d.feature == Feature::Avx && !self.avx {
            return Ok(None);
        }
        let value = match source(d.reg) {
            Source::Snapshot => snapshot_value(&self.vm.state(id)?, d.reg).map(u128::from),
            Source::Xsave => self.fpu_state(id)?.and_then(|x| xsave_value(&x, d.reg)),
            Source::Msr => self.kernel_gs_base(id)?.map(u128::from),
        };
        Ok(value.map(|v| truncate(v, d.bits)))
    }

    /// Writes registers (gdb number, value) of vCPU `id`. Only what changed reaches KVM:
    /// regs and sregs are applied with the next run (free with sync_regs), the XSAVE area
    /// and the MSR each cost one ioctl, and only if one of their registers changed.
    pub(crate) fn write_values(
        &mut self,
        id: usize,
        writes: &[(usize, u128)],
    ) -> Result<(), VmError> {
        let old = self.vm.state(id)?;
        let mut snap = old;
        let mut fpu: Option<Box<kvm_xsave>> = None;
        let mut fpu_changed = false;
        let mut kgs = None;
        for &(index, value) in writes {
            let Some(d) = A::regs().get(index) else {
                continue;
            };
            match source(d.reg) {
                Source::Snapshot => match segment_reg(d.reg) {
                    // Outside real mode a selector write loads its descriptor, as `mov`
                    // (or a far jump, for CS) would; an unchanged one loads nothing (`G`
                    // writes every register back).
                    Some(seg) if !selector_is_base(&snap) => {
                        let sel = value as u16;
                        let cur = *segment_mut(&mut snap.sregs, seg);
                        if cur.selector != sel {
                            let loaded = self.vm.load_segment(id, &snap.sregs, seg, sel, &cur)?;
                            *segment_mut(&mut snap.sregs, seg) = loaded;
                        }
                    }
                    _ => set_snapshot_value(&mut snap, d.reg, value, d.bits),
                },
                Source::Xsave => {
                    if d.feature == Feature::Avx && !self.avx {
                        continue;
                    }
                    if fpu.is_none() {
                        fpu = Some(normalized_xsave(&*self.vm.xsave(id)?));
                    }
                    if let Some(x) = fpu.as_deref_mut() {
                        fpu_changed |= set_xsave_value(x, d.reg, truncate(value, d.bits));
                    }
                }
                Source::Msr => kgs = Some((value, d.bits)),
            }
        }
        // System registers first: the CPU may refuse them, and then nothing is written.
        if snap.sregs != old.sregs {
            self.vm.set_sregs(id, snap.sregs)?;
        }
        if snap.regs != old.regs {
            self.vm.set_regs(id, snap.regs)?;
        }
        if let (true, Some(x)) = (fpu_changed, fpu) {
            self.vm.set_xsave(id, &x)?;
        }
        if let Some((value, bits)) = kgs {
            let current = self.kernel_gs_base(id)?;
            let new = match (current, bits) {
                (Some(cur), 32) => (cur & !0xffff_ffff) | (value as u64 & 0xffff_ffff),
                _ => value as u64,
            };
            // An MSR KVM cannot read reads as unavailable; gdb writes that back as 0.
            if current != Some(new) && (current.is_some() || new != 0) {
                self.vm.write_msr(id, msr::KERNEL_GS_BASE, new)?;
            }
        }
        Ok(())
    }
}

impl<A: Layout> SingleRegisterAccess<Tid> for KvmTarget<'_, A> {
    fn read_register(
        &mut self,
        tid: Tid,
        reg: RegNum<A>,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let Some(d) = A::regs().get(reg.index) else {
            return Ok(0);
        };
        let n = d.bytes();
        let id = self.accessed(tid).map_err(non_fatal)?;
        match self.read_one(id, reg.index).map_err(non_fatal)? {
            Some(v) if buf.len() >= n => {
                buf[..n].copy_from_slice(&v.to_le_bytes()[..n]);
                Ok(n)
            }
            // Unavailable: gdbstub answers with "xx" bytes.
            _ => Ok(0),
        }
    }

    fn write_register(&mut self, tid: Tid, reg: RegNum<A>, val: &[u8]) -> TargetResult<(), Self> {
        let Some(d) = A::regs().get(reg.index) else {
            return Err(TargetError::NonFatal);
        };
        if val.len() != d.bytes() || (d.feature == Feature::Avx && !self.avx) {
            return Err(TargetError::NonFatal);
        }
        let mut bytes = [0u8; 16];
        bytes[..val.len()].copy_from_slice(val);
        let id = self.accessed(tid).map_err(non_fatal)?;
        self.write_values(id, &[(reg.index, u128::from_le_bytes(bytes))])
            .map_err(non_fatal)
    }
}
