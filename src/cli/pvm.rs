//! The `--pvm-linux` preset: the kernel parameters a stock Linux needs on PVM, the software
//! KVM of the development machines (/work/shared/KVM-FACTS.md, "Real kernels on PVM";
//! docs/kvm-quirks.md). PVM ignores a VMM that hides XSAVE, POPCNT, SMAP or the SSE4/AES
//! families in CPUID, and its emulator cannot run `xrstor`, `popcnt`, `clac`/`stac` or the
//! SSE moves those features bring; only the kernel itself can be told not to use them.

/// The parameters the preset appends (KVM-FACTS.md, blockers 2, 4, 5 and 8).
pub const PVM_LINUX_PARAMS: &str =
    "noxsave clearcpuid=popcnt,smap,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni";

/// Whether the preset applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PvmLinux {
    /// Applied to a Linux kernel when the host KVM is PVM, with a note on stderr.
    #[default]
    Auto,
    /// `--pvm-linux`: applied to a Linux kernel whatever the KVM.
    On,
    /// `--no-pvm-linux`: never applied.
    Off,
}

/// True when the host KVM is PVM: the `kvm_pvm` module is loaded (PVM is a KVM vendor
/// module of its own, beside `kvm_intel`/`kvm_amd`, behind the same /dev/kvm API), as the
/// VMM's own PVM facts detect it.
pub fn host_kvm_is_pvm() -> bool {
    crate::vmm::quirks::detect_pvm()
}

/// What kind of Linux kernel `image` is, if it is one: a bzImage (the boot protocol's
/// `HdrS` signature at 0x202, Documentation/arch/x86/boot.rst) or a vmlinux (an ELF file
/// whose notes include one owned by "Linux", which every vmlinux carries in `.notes`).
pub fn linux_kind(image: &[u8]) -> Option<&'static str> {
    /// Offset and value of the setup header's `header` field.
    const HDRS_OFFSET: usize = 0x202;
    if image.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(b"HdrS") {
        return Some("bzImage");
    }
    elf_has_linux_note(image).map(|()| "vmlinux")
}

/// Whether an ELF64 image has a PT_NOTE segment with a note owned by "Linux".
fn elf_has_linux_note(image: &[u8]) -> Option<()> {
    /// PT_NOTE (gABI, p_type).
    const PT_NOTE: u32 = 4;
    let u16_at = |o: usize| Some(u16::from_le_bytes(image.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(image.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(image.get(o..o + 8)?.try_into().ok()?));
    // Only ELFCLASS64: a Linux vmlinux for x86 is one.
    if !image.starts_with(b"\x7fELF") || *image.get(4)? != 2 {
        return None;
    }
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(54)?), usize::from(u16_at(56)?));
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_NOTE {
            continue;
        }
        let start = usize::try_from(u64_at(ph + 8)?).ok()?;
        let end = start.checked_add(usize::try_from(u64_at(ph + 32)?).ok()?)?;
        // A segment cut short by the end of the file is no note to trust.
        image.get(start..end)?;
        let mut at = start;
        // Each note: namesz, descsz, type, then name and desc, each padded to 4 bytes.
        while at + 12 <= end {
            let namesz = usize::try_from(u32_at(at)?).ok()?;
            let descsz = usize::try_from(u32_at(at + 4)?).ok()?;
            let name = image.get(at + 12..(at + 12).checked_add(namesz)?)?;
            if name == b"Linux\0" {
                return Some(());
            }
            at = at
                .checked_add(12)?
                .checked_add(namesz.next_multiple_of(4))?
                .checked_add(descsz.next_multiple_of(4))?;
        }
    }
    None
}

/// The kernel command line to boot with: `cmdline`, with the preset's parameters appended
/// when `apply`.
pub fn with_preset(cmdline: &str, apply: bool) -> String {
    match (apply, cmdline.trim().is_empty()) {
        (false, _) => cmdline.to_string(),
        (true, true) => PVM_LINUX_PARAMS.to_string(),
        (true, false) => format!("{} {PVM_LINUX_PARAMS}", cmdline.trim_end()),
    }
}

/// Whether the preset applies to a Linux kernel (`is_linux`) under `choice` on a host whose
/// KVM is PVM (`pvm`). Non-Linux kernels never get it: the parameters mean nothing to them.
pub fn applies(choice: PvmLinux, is_linux: bool, pvm: bool) -> bool {
    is_linux
        && match choice {
            PvmLinux::Auto => pvm,
            PvmLinux::On => true,
            PvmLinux::Off => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_is_appended_to_the_command_line() {
        assert_eq!(
            with_preset("console=ttyS0 nokaslr", true),
            format!("console=ttyS0 nokaslr {PVM_LINUX_PARAMS}")
        );
        assert_eq!(with_preset("", true), PVM_LINUX_PARAMS);
        assert_eq!(with_preset("  ", true), PVM_LINUX_PARAMS);
        assert_eq!(
            with_preset("quiet ", true),
            format!("quiet {PVM_LINUX_PARAMS}")
        );
        assert_eq!(with_preset("console=ttyS0", false), "console=ttyS0");
        assert_eq!(
            PVM_LINUX_PARAMS,
            "noxsave clearcpuid=popcnt,smap,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni"
        );
    }

    #[test]
    fn preset_applies_to_linux_only() {
        use PvmLinux::*;
        for (choice, linux, pvm, want) in [
            (Auto, true, true, true),
            (Auto, true, false, false),
            (Auto, false, true, false),
            (On, true, false, true),
            (On, false, true, false),
            (Off, true, true, false),
        ] {
            assert_eq!(
                applies(choice, linux, pvm),
                want,
                "{choice:?} {linux} {pvm}"
            );
        }
    }

    #[test]
    fn linux_images_are_recognised() {
        let mut bz = vec![0u8; 0x1000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(linux_kind(&bz), Some("bzImage"));
        assert_eq!(linux_kind(&[0u8; 0x1000]), None);
        assert_eq!(linux_kind(crate::guests::DEMO_ELF), None);
        assert_eq!(linux_kind(&vmlinux_like(b"Linux\0")), Some("vmlinux"));
        assert_eq!(linux_kind(&vmlinux_like(b"Xen\0\0\0")), None);
        // Cut anywhere, it is no vmlinux, and nothing panics.
        let v = vmlinux_like(b"Linux\0");
        for len in 0..v.len() {
            assert_eq!(linux_kind(&v[..len]), None, "{len}");
        }
    }

    /// An ELF64 header with one PT_NOTE segment holding a GNU note then one owned by
    /// `owner` (6 bytes, NUL included).
    fn vmlinux_like(owner: &[u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 0x78];
        f[..5].copy_from_slice(b"\x7fELF\x02");
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let mut notes = Vec::new();
        for (name, desc) in [
            (&b"GNU\0"[..], &[1u8, 2, 3, 4, 5][..]),
            (&owner[..], &[0; 4]),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&1u32.to_le_bytes());
            notes.extend_from_slice(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        f[ph + 8..ph + 16].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
        f[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes()); // p_filesz
        f.extend_from_slice(&notes);
        f
    }
}
