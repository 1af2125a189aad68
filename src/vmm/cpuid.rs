//! The guest's CPUID: the table every vCPU is given ([`machine_cpuid`], [`for_vcpu`]) and
//! feature queries on it.

use super::Vm;
use super::quirks::{self, MachineFacts};
use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

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

/// The hypervisor CPUID leaves (KVM API, "KVM CPUID bits"; Linux
/// Documentation/virt/kvm/x86/cpuid.rst).
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// KVM's paravirtual feature leaf: EAX holds the features.
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// KVM_FEATURE_* bits of leaf 0x4000_0001 EAX.
pub mod kvm_feature {
    /// kvmclock at MSRs 0x11/0x12.
    pub const CLOCKSOURCE: u32 = 1 << 0;
    /// No delay needed for port I/O.
    pub const NOP_IO_DELAY: u32 = 1 << 1;
    /// kvmclock at MSRs 0x4b564d00/01.
    pub const CLOCKSOURCE2: u32 = 1 << 3;
    /// Asynchronous page faults (MSR_KVM_ASYNC_PF_EN).
    pub const ASYNC_PF: u32 = 1 << 4;
    /// Steal time (MSR_KVM_STEAL_TIME).
    pub const STEAL_TIME: u32 = 1 << 5;
    /// Paravirtual end of interrupt (MSR_KVM_PV_EOI_EN).
    pub const PV_EOI: u32 = 1 << 6;
    /// The KVM_HC_KICK_CPU hypercall (paravirtual spinlocks).
    pub const PV_UNHALT: u32 = 1 << 7;
    /// TLB flush through the steal-time area.
    pub const PV_TLB_FLUSH: u32 = 1 << 9;
    /// Async page faults delivered as #PF VM exits.
    pub const ASYNC_PF_VMEXIT: u32 = 1 << 10;
    /// The KVM_HC_SEND_IPI hypercall.
    pub const PV_SEND_IPI: u32 = 1 << 11;
    /// Host halt polling control (MSR_KVM_POLL_CONTROL).
    pub const POLL_CONTROL: u32 = 1 << 12;
    /// The KVM_HC_SCHED_YIELD hypercall.
    pub const PV_SCHED_YIELD: u32 = 1 << 13;
    /// Async page faults as an interrupt (MSR_KVM_ASYNC_PF_INT).
    pub const ASYNC_PF_INT: u32 = 1 << 14;
    /// MSI extended destination ids (needs the VMM's x2APIC API set-up).
    pub const MSI_EXT_DEST_ID: u32 = 1 << 15;
    /// The KVM_HC_MAP_GPA_RANGE hypercall (exits to the VMM).
    pub const HC_MAP_GPA_RANGE: u32 = 1 << 16;
    /// MSR_KVM_MIGRATION_CONTROL (handled by the VMM).
    pub const MIGRATION_CONTROL: u32 = 1 << 17;
    /// kvmclock's stable bit.
    pub const CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
}

/// The paravirtual features this machine may advertise, on any KVM: the ones KVM serves in
/// the kernel alone. Left out: MSI_EXT_DEST_ID (the VMM must enable KVM_CAP_X2APIC_API and
/// route MSIs so), HC_MAP_GPA_RANGE (KVM_CAP_EXIT_HYPERCALL hands it to the VMM),
/// MIGRATION_CONTROL (an MSR the VMM must serve), and bits KVM may add later, which the
/// machine cannot know it backs.
const PV_FEATURES_IN_KERNEL: u32 = kvm_feature::CLOCKSOURCE
    | kvm_feature::NOP_IO_DELAY
    | kvm_feature::CLOCKSOURCE2
    | kvm_feature::ASYNC_PF
    | kvm_feature::STEAL_TIME
    | kvm_feature::PV_EOI
    | kvm_feature::PV_UNHALT
    | kvm_feature::PV_TLB_FLUSH
    | kvm_feature::ASYNC_PF_VMEXIT
    | kvm_feature::PV_SEND_IPI
    | kvm_feature::POLL_CONTROL
    | kvm_feature::PV_SCHED_YIELD
    | kvm_feature::ASYNC_PF_INT
    | kvm_feature::CLOCKSOURCE_STABLE_BIT;

/// The paravirtual features that need KVM's in-kernel local APIC: PV_EOI and PV_UNHALT
/// and PV_SEND_IPI (APIC state), async page faults (KVM refuses MSR_KVM_ASYNC_PF_EN
/// without one), and POLL_CONTROL (measured on PVM: a guest `wrmsr` of
/// MSR_KVM_POLL_CONTROL takes #GP without an irqchip and succeeds with one; this is the
/// failed write Linux 6.1 logged on kvmgdb before it had an irqchip).
const PV_FEATURES_NEED_LAPIC: u32 = kvm_feature::PV_EOI
    | kvm_feature::PV_UNHALT
    | kvm_feature::PV_SEND_IPI
    | kvm_feature::ASYNC_PF
    | kvm_feature::ASYNC_PF_VMEXIT
    | kvm_feature::ASYNC_PF_INT
    | kvm_feature::POLL_CONTROL;

/// CPUID.01H:ECX.CMPXCHG16B.
const CPUID_1_ECX_CX16: u32 = 1 << 13;
/// CPUID.01H:ECX.HYPERVISOR: a hypervisor is present.
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.01H:EBX bits 31:24: the initial APIC id.
const CPUID_1_EBX_APIC_ID_SHIFT: u32 = 24;

/// The CPUID table of the machine, from KVM's supported one (KVM_GET_SUPPORTED_CPUID):
/// the hypervisor bit and leaves present, paravirtual features limited to what KVM backs
/// without the VMM ([`PV_FEATURES_IN_KERNEL`], less [`PV_FEATURES_NEED_LAPIC`] without an
/// in-kernel irqchip, less `quirks::pv_features_hidden`), and the
/// features this KVM cannot run hidden (`quirks::cpuid_ecx1_hidden`), and the topology of
/// `vcpus` cores in one package ([`set_topology`]). Everything else,
/// TSC bits included (invariant TSC only if KVM reports it), is KVM's.
pub fn machine_cpuid(supported: &CpuId, machine: MachineFacts, vcpus: usize) -> CpuId {
    let mut entries: Vec<kvm_cpuid_entry2> = supported.as_slice().to_vec();
    set_topology(&mut entries, vcpus);
    if !entries.iter().any(|e| e.function == KVM_CPUID_SIGNATURE) {
        entries.push(kvm_cpuid_entry2 {
            function: KVM_CPUID_SIGNATURE,
            eax: KVM_CPUID_FEATURES,
            ..Default::default()
        });
    }
    if !entries.iter().any(|e| e.function == KVM_CPUID_FEATURES) {
        entries.push(kvm_cpuid_entry2 {
            function: KVM_CPUID_FEATURES,
            ..Default::default()
        });
    }
    for e in &mut entries {
        match e.function {
            1 => {
                e.ecx |= CPUID_1_ECX_HYPERVISOR;
                e.ecx &= !quirks::cpuid_ecx1_hidden(machine, CPUID_1_ECX_CX16);
            }
            KVM_CPUID_SIGNATURE => {
                e.eax = e.eax.max(KVM_CPUID_FEATURES);
                [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
            }
            KVM_CPUID_FEATURES => {
                let mut keep = PV_FEATURES_IN_KERNEL & !quirks::pv_features_hidden(machine);
                if !machine.in_kernel_irqchip {
                    keep &= !PV_FEATURES_NEED_LAPIC;
                }
                let dropped = e.eax & !keep;
                if dropped != 0 {
                    log::debug!("CPUID 0x40000001: paravirtual features {dropped:#x} hidden");
                }
                e.eax &= keep;
            }
            _ => {}
        }
    }
    CpuId::from_entries(&entries).unwrap_or_else(|_| supported.clone())
}

/// CPUID.01H:EBX bits 23:16: addressable logical processor ids in the package.
const CPUID_1_EBX_LOGICAL_SHIFT: u32 = 16;
/// CPUID.01H:EDX.HTT: EBX[23:16] is valid (more than one logical processor per package).
const CPUID_1_EDX_HTT: u32 = 1 << 28;
/// Level types of leaves 0BH and 1FH, ECX bits 15:8 (SDM Vol. 2A, CPUID, table 3-8).
const LEVEL_SMT: u32 = 1;
/// The core level.
const LEVEL_CORE: u32 = 2;

/// The machine's processor topology, as QEMU's `-smp N` gives it: one package of `vcpus`
/// cores with one thread each, APIC ids 0 … N−1 (as the MADT lists them). KVM leaves it
/// to the VMM: its supported table carries the host's cache-sharing fields (leaves 04H,
/// 8000_001DH), the host's core counts (leaf 1 EBX[23:16], 8000_0008H ECX) and no
/// topology at all in 0BH/1FH/8000_001EH (KVM API, KVM_GET_SUPPORTED_CPUID; measured on
/// PVM: docs/kvm-quirks.md, "Linux with -smp"). Left as they are, Linux on `-smp 4`
/// counted the wrong number of cores per package and, on AMD, gave every CPU core id 0.
/// The per-vCPU ids are filled in by [`for_vcpu`].
fn set_topology(entries: &mut Vec<kvm_cpuid_entry2>, vcpus: usize) {
    let n = u32::try_from(vcpus.max(1)).unwrap_or(u32::MAX);
    // Bits of the APIC id that number the cores of the package.
    let core_bits = n.next_power_of_two().trailing_zeros();
    let max_basic = entries
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & !(0xff << CPUID_1_EBX_LOGICAL_SHIFT))
                    | (n.min(0xff) << CPUID_1_EBX_LOGICAL_SHIFT);
                if n > 1 {
                    e.edx |= CPUID_1_EDX_HTT;
                } else {
                    e.edx &= !CPUID_1_EDX_HTT;
                }
            }
            // Deterministic cache parameters (Intel), EAX bits 4:0 the cache type (0: no
            // more caches): 31:26 addressable core ids − 1, 25:14 logical processors
            // sharing the cache − 1 (one thread per core: L1/L2 are the core's own, L3
            // the package's).
            4 if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 7;
                let sharing = if level >= 3 { (1 << core_bits) - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | (sharing << 14) | (((1 << core_bits) - 1) << 26);
            }
            // AMD's cache topology: EAX bits 25:14 logical processors sharing it − 1.
            0x8000_001d if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax = (e.eax & !(0xfff << 14)) | ((sharing & 0xfff) << 14);
            }
            // AMD: ECX bits 7:0 cores − 1 (NC), 15:12 the APIC id bits of the core
            // (ApicIdSize; 0 would mean "derive it from NC").
            0x8000_0008 => e.ecx = (e.ecx & !0xf0ff) | ((n - 1) & 0xff) | (core_bits << 12),
            _ => {}
        }
    }
    // The extended topology leaves, where the basic range reaches them: sub-leaf 0 the SMT
    // level (one thread, no id bits), 1 the core level (`core_bits` up to the package), 2
    // the end marker; EDX (the x2APIC id) per vCPU.
    for leaf in [0xb, 0x1f] {
        if max_basic < leaf {
            continue;
        }
        entries.retain(|e| e.function != leaf);
        let level = |index: u32, shift: u32, count: u32, kind: u32| kvm_cpuid_entry2 {
            function: leaf,
            index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            eax: shift,
            ebx: count,
            ecx: (kind << 8) | index,
            ..Default::default()
        };
        entries.push(level(0, 0, 1, LEVEL_SMT));
        entries.push(level(1, core_bits, n, LEVEL_CORE));
        entries.push(level(2, 0, 0, 0));
    }
}

/// vCPU `id`'s copy of the machine's table: its APIC id (the vCPU id, as KVM numbers
/// local APICs) in leaf 1 EBX[31:24], as the x2APIC id in EDX of every sub-leaf of the
/// topology leaves 0BH and 1FH, and as the extended APIC id and core id of AMD's leaf
/// 8000_001EH (EAX, EBX[7:0]; one thread per core, one node) (SDM Vol. 2A, CPUID; AMD
/// APM Vol. 3, E.4.24).
pub fn for_vcpu(table: &CpuId, id: usize) -> CpuId {
    let id = id as u32;
    let mut t = table.clone();
    for e in t.as_mut_slice() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((id & 0xff) << CPUID_1_EBX_APIC_ID_SHIFT),
            0xb | 0x1f => e.edx = id,
            0x8000_001e => [e.eax, e.ebx, e.ecx] = [id, id & 0xff, 0],
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).unwrap()
    }

    fn leaf(t: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *t.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    const HW: MachineFacts = MachineFacts {
        in_kernel_irqchip: true,
        pvm: false,
    };
    const PVM: MachineFacts = MachineFacts {
        in_kernel_irqchip: true,
        pvm: true,
    };

    fn supported() -> CpuId {
        table(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0001_0800,
                ecx: CPUID_1_ECX_CX16,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: KVM_CPUID_FEATURES,
                eax: 0x01ff_ffff,
                ..Default::default()
            },
        ])
    }

    #[test]
    fn hypervisor_leaves_and_only_backed_pv_features() {
        let t = machine_cpuid(&supported(), HW, 1);
        let sig = leaf(&t, KVM_CPUID_SIGNATURE, 0);
        let text: Vec<u8> = [sig.ebx, sig.ecx, sig.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&text, b"KVMKVMKVM\0\0\0");
        assert_eq!(sig.eax, KVM_CPUID_FEATURES);
        let pv = leaf(&t, KVM_CPUID_FEATURES, 0).eax;
        assert_eq!(pv, PV_FEATURES_IN_KERNEL);
        assert_eq!(pv & kvm_feature::MSI_EXT_DEST_ID, 0);
        assert_ne!(leaf(&t, 1, 0).ecx & CPUID_1_ECX_HYPERVISOR, 0);
        assert_ne!(
            leaf(&t, 1, 0).ecx & CPUID_1_ECX_CX16,
            0,
            "CX16 stays on hardware KVM"
        );
    }

    #[test]
    fn pvm_hides_cx16_and_hypercall_features() {
        let t = machine_cpuid(&supported(), PVM, 1);
        assert_eq!(leaf(&t, 1, 0).ecx & CPUID_1_ECX_CX16, 0);
        let pv = leaf(&t, KVM_CPUID_FEATURES, 0).eax;
        assert_eq!(pv & quirks::pv_features_hidden(PVM), 0);
        assert_ne!(pv & kvm_feature::CLOCKSOURCE2, 0);
        assert_ne!(
            pv & kvm_feature::POLL_CONTROL,
            0,
            "PVM serves it with an irqchip"
        );
    }

    #[test]
    fn without_an_irqchip_no_feature_that_needs_the_local_apic() {
        let no_chip = MachineFacts {
            in_kernel_irqchip: false,
            pvm: false,
        };
        let pv = leaf(
            &machine_cpuid(&supported(), no_chip, 1),
            KVM_CPUID_FEATURES,
            0,
        )
        .eax;
        assert_eq!(pv & PV_FEATURES_NEED_LAPIC, 0);
        assert_ne!(pv & kvm_feature::STEAL_TIME, 0);
    }

    #[test]
    fn each_vcpu_gets_its_apic_id() {
        let t = for_vcpu(&machine_cpuid(&supported(), HW, 4), 3);
        assert_eq!(leaf(&t, 1, 0).ebx, 0x0304_0800);
        assert_eq!(leaf(&t, 0xb, 1).edx, 3);
    }

    /// KVM's supported table on the AMD EPYC host of the PVM machines (measured with
    /// KVM_GET_SUPPORTED_CPUID), the topology-bearing leaves only.
    fn amd_host() -> CpuId {
        let e = |function, index, flags, [eax, ebx, ecx, edx]: [u32; 4]| kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        let sig = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        table(&[
            e(0, 0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            e(
                1,
                0,
                0,
                [0x00a0_0f11, 0x0102_0800, 0x8120_2000, 0x078b_fbff],
            ),
            e(0xb, 0, sig, [0, 0, 0, 1]),
            e(0x8000_0008, 0, 0, [0x3030, 0x110a_d205, 0x7001, 0]),
            e(0x8000_001d, 1, sig, [0x122, 0x01c0_003f, 0x3f, 0]),
            e(0x8000_001d, 3, sig, [0x4163, 0x03c0_003f, 0x7fff, 1]),
            e(0x8000_001e, 0, 0, [0; 4]),
        ])
    }

    #[test]
    fn four_vcpus_are_four_cores_of_one_package() {
        let machine = machine_cpuid(&amd_host(), HW, 4);
        for id in 0..4u32 {
            let t = for_vcpu(&machine, id as usize);
            let l1 = leaf(&t, 1, 0);
            assert_eq!(l1.ebx >> 24, id, "initial APIC id");
            assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical processors per package");
            assert_ne!(l1.edx & CPUID_1_EDX_HTT, 0);
            // Leaf 0BH: SMT level of 1 thread, core level of 4 with 2 id bits, end.
            let b: Vec<_> = (0..3).map(|i| leaf(&t, 0xb, i)).collect();
            assert_eq!(
                b.iter()
                    .map(|e| (e.eax, e.ebx, e.ecx, e.edx))
                    .collect::<Vec<_>>(),
                [(0, 1, 0x100, id), (2, 4, 0x201, id), (0, 0, 2, id)]
            );
            assert!(
                b.iter()
                    .all(|e| e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0)
            );
            // AMD: 4 cores (NC = 3), 2 APIC id bits; core id = APIC id; L3 shared by 4.
            assert_eq!(leaf(&t, 0x8000_0008, 0).ecx, 0x2003);
            let e = leaf(&t, 0x8000_001e, 0);
            assert_eq!((e.eax, e.ebx, e.ecx), (id, id, 0));
            assert_eq!(leaf(&t, 0x8000_001d, 1).eax, 0x122, "L2: per core");
            assert_eq!(
                (leaf(&t, 0x8000_001d, 3).eax >> 14) & 0xfff,
                3,
                "L3: 4 CPUs"
            );
        }
        let one = for_vcpu(&machine_cpuid(&amd_host(), HW, 1), 0);
        assert_eq!(leaf(&one, 1, 0).ebx, 0x0001_0800);
        assert_eq!(leaf(&one, 1, 0).edx & CPUID_1_EDX_HTT, 0);
        assert_eq!(leaf(&one, 0x8000_0008, 0).ecx, 0);
        assert_eq!(leaf(&one, 0xb, 1).ebx, 1);
    }
}
