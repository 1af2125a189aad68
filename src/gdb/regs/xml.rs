//! The target description (`qXfer:features:read:target.xml`). It is chosen at run time,
//! because the ymm upper halves are part of it only when the guest CPU has AVX.

use super::kvm_map::GuestArch;
use crate::gdb::target::KvmTarget;
use gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverride;
use gdbstub::target::{TargetError, TargetResult};

impl<A: GuestArch> TargetDescriptionXmlOverride for KvmTarget<'_, A> {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::NonFatal);
        }
        let xml = self.xml.as_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
        let end = start.saturating_add(length).min(xml.len());
        let n = (end - start).min(buf.len());
        buf[..n].copy_from_slice(&xml[start..start + n]);
        Ok(n)
    }
}
