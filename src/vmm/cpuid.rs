//! Guest CPU feature queries: what the CPUID KVM gives the guest says it can do.

use super::Vm;

/// CPUID.01H:ECX.XSAVE (SDM Vol. 2A, CPUID, table 3-10).
const CPUID_1_ECX_XSAVE: u32 = 1 << 26;
/// CPUID.01H:ECX.AVX.
const CPUID_1_ECX_AVX: u32 = 1 << 28;
/// CPUID.(EAX=0DH,ECX=0):EAX bit 2: XCR0 can enable the AVX state component.
const CPUID_D_0_EAX_AVX: u32 = 1 << 2;
/// CPUID.(EAX=0DH,ECX=2): the AVX component is 256 bytes at offset 576 in the standard
/// XSAVE format, where kvmgdb reads it.
const AVX_COMPONENT: (u32, u32) = (256, 576);

/// True if the guest CPU has AVX and KVM's XSAVE area carries its state, so the ymm
/// registers can be shown.
pub fn guest_has_avx(vm: &Vm) -> bool {
    let both = CPUID_1_ECX_XSAVE | CPUID_1_ECX_AVX;
    let avx = vm.caps().xsave
        && vm.cpuid(1, 0).is_some_and(|l| l.ecx & both == both)
        && vm
            .cpuid(0xd, 0)
            .is_some_and(|l| l.eax & CPUID_D_0_EAX_AVX != 0)
        && vm
            .cpuid(0xd, 2)
            .is_some_and(|l| (l.eax, l.ebx) == AVX_COMPONENT);
    log::debug!(
        "guest AVX registers: {}",
        if avx { "shown" } else { "absent" }
    );
    avx
}
