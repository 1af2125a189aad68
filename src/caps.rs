//! The KVM handshake: opening `/dev/kvm`, checking the API version, and the capability table
//! that `kvmgdb caps` prints.

use kvm_bindings::{
    KVM_CAP_DEBUGREGS, KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE,
    KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_INJECT_DB, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use kvm_ioctls::{Cap, Kvm};
use std::fmt::Write as _;

/// The only KVM API version there has ever been (KVM API doc, 4.1 KVM_GET_API_VERSION).
pub const KVM_API_VERSION: i32 = 12;

/// Errors opening KVM.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// `/dev/kvm` does not exist.
    #[error(
        "/dev/kvm does not exist: load the kvm module (modprobe kvm_intel or kvm_amd) or enable virtualisation in the BIOS"
    )]
    NoDevice,
    /// `/dev/kvm` exists but cannot be opened by this user.
    #[error(
        "cannot open /dev/kvm: permission denied (add your user to the 'kvm' group or run as root)"
    )]
    Permission,
    /// Another failure opening `/dev/kvm`.
    #[error("cannot open /dev/kvm")]
    Open(#[source] std::io::Error),
    /// The kernel speaks a KVM API version we do not know.
    #[error("KVM API version {0} is not supported (expected {KVM_API_VERSION})")]
    ApiVersion(i32),
    /// KVM cannot run the guest-debug features a debugger needs.
    #[error("this KVM lacks KVM_CAP_SET_GUEST_DEBUG, so it cannot be debugged")]
    NoGuestDebug,
}

/// Opens `/dev/kvm` and checks the API version.
pub fn open_kvm() -> Result<Kvm, CapsError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => CapsError::NoDevice,
        libc::EACCES | libc::EPERM => CapsError::Permission,
        _ => CapsError::Open(std::io::Error::from_raw_os_error(e.errno())),
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(CapsError::ApiVersion(version));
    }
    Ok(kvm)
}

/// The guest-debug control flags KVM_CAP_SET_GUEST_DEBUG2 can report, with their names.
const GUESTDBG_FLAGS: &[(u32, &str)] = &[
    (KVM_GUESTDBG_ENABLE, "ENABLE"),
    (KVM_GUESTDBG_SINGLESTEP, "SINGLESTEP"),
    (KVM_GUESTDBG_USE_SW_BP, "USE_SW_BP"),
    (KVM_GUESTDBG_USE_HW_BP, "USE_HW_BP"),
    (KVM_GUESTDBG_INJECT_DB, "INJECT_DB"),
    (KVM_GUESTDBG_INJECT_BP, "INJECT_BP"),
    (KVM_GUESTDBG_BLOCKIRQ, "BLOCKIRQ"),
];

/// What the debugger needs to know about the host's KVM.
#[derive(Clone, Debug)]
pub struct KvmCaps {
    /// KVM_GET_API_VERSION.
    pub api_version: i32,
    /// KVM_GET_VCPU_MMAP_SIZE.
    pub vcpu_mmap_size: usize,
    /// KVM_CAP_SET_GUEST_DEBUG.
    pub set_guest_debug: bool,
    /// KVM_CAP_SET_GUEST_DEBUG2: the supported guest-debug flags (0 when not reported).
    pub guest_debug_flags: u32,
    /// KVM_CAP_IMMEDIATE_EXIT.
    pub immediate_exit: bool,
    /// KVM_CAP_IRQCHIP.
    pub irqchip: bool,
    /// KVM_CAP_DEBUGREGS.
    pub debugregs: bool,
    /// KVM_CAP_XSAVE.
    pub xsave: bool,
    /// KVM_CAP_SYNC_REGS: the register sets kvm_run can carry.
    pub sync_regs: u32,
    /// KVM_CAP_READONLY_MEM.
    pub readonly_mem: bool,
    /// KVM_CAP_MAX_VCPUS.
    pub max_vcpus: usize,
    /// KVM_CAP_NR_MEMSLOTS.
    pub nr_memslots: usize,
}

impl KvmCaps {
    /// Queries the capabilities of an open KVM.
    pub fn query(kvm: &Kvm) -> KvmCaps {
        let int = |c: u32| kvm.check_extension_raw(c.into()).max(0);
        KvmCaps {
            api_version: kvm.get_api_version(),
            vcpu_mmap_size: kvm.get_vcpu_mmap_size().unwrap_or(0),
            set_guest_debug: kvm.check_extension(Cap::SetGuestDebug),
            guest_debug_flags: int(KVM_CAP_SET_GUEST_DEBUG2) as u32,
            immediate_exit: kvm.check_extension(Cap::ImmediateExit),
            irqchip: kvm.check_extension(Cap::Irqchip),
            debugregs: int(KVM_CAP_DEBUGREGS) > 0,
            xsave: kvm.check_extension(Cap::Xsave),
            sync_regs: kvm.check_extension_int(Cap::SyncRegs).max(0) as u32,
            readonly_mem: kvm.check_extension(Cap::ReadonlyMem),
            max_vcpus: kvm.get_max_vcpus(),
            nr_memslots: kvm.get_nr_memslots(),
        }
    }

    /// True if KVM reports that it supports the guest-debug flag `flag`. Kernels before
    /// KVM_CAP_SET_GUEST_DEBUG2 (5.16) do not report the set; for them we assume the flags
    /// that have existed since guest debugging came to x86 (all but BLOCKIRQ).
    pub fn supports_debug_flag(&self, flag: u32) -> bool {
        if self.guest_debug_flags != 0 {
            self.guest_debug_flags & flag != 0
        } else {
            self.set_guest_debug && flag != KVM_GUESTDBG_BLOCKIRQ
        }
    }

    /// The names of the guest-debug flags in `guest_debug_flags`.
    pub fn guest_debug_flag_names(&self) -> Vec<&'static str> {
        GUESTDBG_FLAGS
            .iter()
            .filter(|(bit, _)| self.guest_debug_flags & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// The table `kvmgdb caps` prints.
    pub fn table(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut rows: Vec<(&str, String)> = vec![
            ("KVM API version", format!("{}", self.api_version)),
            ("vCPU mmap size", format!("{} bytes", self.vcpu_mmap_size)),
            ("SET_GUEST_DEBUG", yes(self.set_guest_debug).to_string()),
        ];
        let debug2 = if self.guest_debug_flags == 0 {
            "no (not reported by this kernel)".to_string()
        } else {
            format!(
                "yes: {:#x} = {}",
                self.guest_debug_flags,
                self.guest_debug_flag_names().join(" ")
            )
        };
        rows.push(("SET_GUEST_DEBUG2", debug2));
        rows.push(("IMMEDIATE_EXIT", yes(self.immediate_exit).to_string()));
        rows.push(("IRQCHIP", yes(self.irqchip).to_string()));
        rows.push(("DEBUGREGS", yes(self.debugregs).to_string()));
        rows.push(("XSAVE", yes(self.xsave).to_string()));
        rows.push((
            "SYNC_REGS",
            if self.sync_regs == 0 {
                "no".to_string()
            } else {
                format!("yes: {:#x}", self.sync_regs)
            },
        ));
        rows.push(("READONLY_MEM", yes(self.readonly_mem).to_string()));
        rows.push(("MAX_VCPUS", self.max_vcpus.to_string()));
        rows.push(("NR_MEMSLOTS", self.nr_memslots.to_string()));
        let mut out = String::new();
        for (name, value) in rows {
            let _ = writeln!(out, "{name:<18} {value}");
        }
        out
    }
}
