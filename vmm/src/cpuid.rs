//! CPUID for each vCPU: what KVM supports (`KVM_GET_SUPPORTED_CPUID`), with the topology
//! rewritten for our machine (N cores in one socket, one thread per core, APIC ID = vCPU index),
//! the hypervisor bit and KVM's signature leaves set (so the guest finds kvm-clock), and any
//! features the VMM chooses to hide cleared.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// A CPUID output register. Every one of them can carry a feature bit to hide; the bits hidden
/// today ([`DEFAULT_HIDDEN`]) are all in ECX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "every output register can carry a feature bit; the bits hidden today are in ECX"
)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One feature bit to hide from the guest: `bit` of `reg` in `leaf` (every subleaf, or only
/// `subleaf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureMask {
    pub leaf: u32,
    pub subleaf: Option<u32>,
    pub reg: Reg,
    pub bit: u8,
}

impl FeatureMask {
    pub const fn new(leaf: u32, reg: Reg, bit: u8) -> Self {
        FeatureMask {
            leaf,
            subleaf: None,
            reg,
            bit,
        }
    }
}

/// Intel VT-x: the guest does not get nested virtualization.
pub const HIDE_VMX: FeatureMask = FeatureMask::new(0x1, Reg::Ecx, 5);
/// AMD-V: likewise.
pub const HIDE_SVM: FeatureMask = FeatureMask::new(0x8000_0001, Reg::Ecx, 2);

/// What the VMM hides by default.
pub const DEFAULT_HIDDEN: &[FeatureMask] = &[HIDE_VMX, HIDE_SVM];

/// KVM's hypervisor signature, "KVMKVMKVM\0\0\0", as EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// KVM's CPUID base leaf and its features leaf (kvm-clock, PV EOI, ...).
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Extended topology level types (leaf 0xb/0x1f, ECX[15:8]).
const LEVEL_TYPE_INVALID: u32 = 0;
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

/// The vendor named by leaf 0.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    match find(entries, 0, 0) {
        // "GenuineIntel"
        Some(e) if (e.ebx, e.edx, e.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e) => {
            Vendor::Intel
        }
        // "AuthenticAMD", "HygonGenuine"
        Some(e)
            if (e.ebx, e.edx, e.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
                || (e.ebx, e.edx, e.ecx) == (0x6f67_7948, 0x6e65_476e, 0x656e_6975) =>
        {
            Vendor::Amd
        }
        _ => Vendor::Other,
    }
}

/// What one vCPU's CPUID must say about the machine.
#[derive(Clone, Copy, Debug)]
pub struct VcpuCpuid {
    /// This vCPU's index, which is also its APIC ID.
    pub index: u8,
    /// How many vCPUs the VM has.
    pub count: u8,
    /// KVM can emulate the LAPIC's TSC-deadline timer (`KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
}

/// Rewrites `entries` (KVM's supported CPUID) for one vCPU, then hides `hidden`.
pub fn normalize(entries: &mut Vec<kvm_cpuid_entry2>, vcpu: VcpuCpuid, hidden: &[FeatureMask]) {
    let count = u32::from(vcpu.count.max(1));
    let apic_id = u32::from(vcpu.index);
    // Bits of the APIC ID that number the cores in the package.
    let core_bits = count.next_power_of_two().trailing_zeros();
    let vendor = vendor(entries);

    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (count.min(255) << 16) | (apic_id << 24);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if vcpu.tsc_deadline {
                    e.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            // Intel deterministic cache parameters.
            0x4 if vendor == Vendor::Intel => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | ((count - 1).min(63) << 26);
            }
            KVM_CPUID_SIGNATURE => {
                e.eax = e.eax.max(KVM_CPUID_FEATURES);
                [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
            }
            // AMD: core count and APIC ID size.
            0x8000_0008 if vendor == Vendor::Amd => {
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | (count - 1);
            }
            // AMD cache topology (TOPOEXT).
            0x8000_001d if vendor == Vendor::Amd => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & !(0xfff << 14)) | ((sharing & 0xfff) << 14);
            }
            // AMD extended APIC ID, core and node IDs (TOPOEXT).
            0x8000_001e if vendor == Vendor::Amd => {
                e.eax = apic_id;
                e.ebx = apic_id & 0xff; // core ID; one thread per core
                e.ecx = 0; // node 0, one node
                e.edx = 0;
            }
            _ => {}
        }
    }

    for leaf in [0xb, 0x1f] {
        if entries.iter().any(|e| e.function == leaf) {
            entries.retain(|e| e.function != leaf);
            entries.extend(extended_topology(leaf, apic_id, count, core_bits));
        }
    }

    if find(entries, KVM_CPUID_SIGNATURE, 0).is_none() {
        entries.push(kvm_cpuid_entry2 {
            function: KVM_CPUID_SIGNATURE,
            eax: KVM_CPUID_FEATURES,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        });
    }

    hide(entries, hidden);
}

/// Leaf 0xb or 0x1f: an SMT level of one thread, a core level of `count` cores, terminator.
fn extended_topology(leaf: u32, apic_id: u32, count: u32, core_bits: u32) -> [kvm_cpuid_entry2; 3] {
    let entry = |index: u32, eax: u32, ebx: u32, level_type: u32| kvm_cpuid_entry2 {
        function: leaf,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: apic_id,
        ..Default::default()
    };
    [
        entry(0, 0, 1, LEVEL_TYPE_SMT),
        entry(1, core_bits, count, LEVEL_TYPE_CORE),
        entry(2, 0, 0, LEVEL_TYPE_INVALID),
    ]
}

/// Clears each masked feature bit.
pub fn hide(entries: &mut [kvm_cpuid_entry2], hidden: &[FeatureMask]) {
    for mask in hidden {
        for e in entries.iter_mut() {
            if e.function != mask.leaf || mask.subleaf.is_some_and(|s| s != e.index) {
                continue;
            }
            let reg = match mask.reg {
                Reg::Eax => &mut e.eax,
                Reg::Ebx => &mut e.ebx,
                Reg::Ecx => &mut e.ecx,
                Reg::Edx => &mut e.edx,
            };
            *reg &= !(1u32 << (mask.bit & 31));
        }
    }
}

/// The entry for `leaf`/`index` (index is ignored for leaves without subleaves).
pub fn find(entries: &[kvm_cpuid_entry2], leaf: u32, index: u32) -> Option<&kvm_cpuid_entry2> {
    entries.iter().find(|e| {
        e.function == leaf && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == index)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if matches!(function, 4 | 0xb | 0x1f | 0x8000_001d) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn intel_host() -> Vec<kvm_cpuid_entry2> {
        vec![
            // max leaf 0x1f, "GenuineIntel"
            leaf(0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            // leaf 1 with the host's APIC ID 7 and 16 logical CPUs, VMX (bit 5) set
            leaf(
                1,
                0,
                [0x000906ea, 0x0710_0800, 0x7ffa_f3bf | (1 << 5), 0xbfeb_fbff],
            ),
            // L1d, L2, L3 as on a 16-thread host
            leaf(4, 0, [0x1c00_4121, 0x01c0_003f, 0x3f, 0]),
            leaf(4, 1, [0x1c00_4143, 0x01c0_003f, 0x3ff, 0]),
            leaf(4, 2, [0x1c03_c163, 0x02c0_003f, 0x3fff, 6]),
            leaf(0xb, 0, [1, 2, 0x100, 7]),
            leaf(0xb, 1, [4, 16, 0x201, 7]),
            leaf(0x8000_0001, 0, [0, 0, 0x121, 0x2c10_0800]),
            leaf(KVM_CPUID_SIGNATURE, 0, [0x4000_0001, 0, 0, 0]),
            leaf(KVM_CPUID_FEATURES, 0, [0x0100_7afb, 0, 0, 0]),
        ]
    }

    fn amd_host() -> Vec<kvm_cpuid_entry2> {
        vec![
            leaf(0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            leaf(1, 0, [0x00800f12, 0x0a10_0800, 0x7ed8_320b, 0x178b_fbff]),
            leaf(0x8000_0001, 0, [0, 0, 0x75c2_37ff, 0x2fd3_fbff]),
            leaf(0x8000_0008, 0, [0x3030, 0, 0x0000_700f, 0]),
            leaf(0x8000_001d, 0, [0x121, 0x1c0003f, 0x3f, 0]),
            leaf(0x8000_001d, 3, [0x0001_c163, 0x3c0003f, 0x1fff, 1]),
            leaf(0x8000_001e, 0, [0, 0, 0, 0]),
        ]
    }

    fn normalized(host: Vec<kvm_cpuid_entry2>, index: u8, count: u8) -> Vec<kvm_cpuid_entry2> {
        let mut entries = host;
        normalize(
            &mut entries,
            VcpuCpuid {
                index,
                count,
                tsc_deadline: true,
            },
            DEFAULT_HIDDEN,
        );
        entries
    }

    #[test]
    fn detects_vendor() {
        assert_eq!(vendor(&intel_host()), Vendor::Intel);
        assert_eq!(vendor(&amd_host()), Vendor::Amd);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn leaf1_has_apic_id_count_and_hypervisor_bit() {
        let entries = normalized(intel_host(), 2, 4);
        let l1 = find(&entries, 1, 0).unwrap();
        assert_eq!(l1.ebx >> 24, 2, "APIC ID");
        assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical processor count");
        assert_eq!(l1.ebx & 0xffff, 0x0800, "brand index and CLFLUSH size kept");
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(l1.ecx & (1 << 5), 0, "VMX hidden by default");

        let single = normalized(intel_host(), 0, 1);
        let l1 = find(&single, 1, 0).unwrap();
        assert_eq!(l1.ebx >> 24, 0);
        assert_eq!(l1.edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_describes_one_socket() {
        let entries = normalized(intel_host(), 3, 6);
        let subleaves: Vec<_> = entries.iter().filter(|e| e.function == 0xb).collect();
        assert_eq!(subleaves.len(), 3);
        let smt = find(&entries, 0xb, 0).unwrap();
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 3));
        let core = find(&entries, 0xb, 1).unwrap();
        // 6 cores need 3 APIC ID bits.
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 3));
        let end = find(&entries, 0xb, 2).unwrap();
        assert_eq!((end.eax, end.ebx, end.ecx >> 8, end.edx), (0, 0, 0, 3));
        // The host has no leaf 0x1f here, so none is made up.
        assert!(find(&entries, 0x1f, 0).is_none());
    }

    #[test]
    fn intel_cache_leaves_share_l3_only() {
        let entries = normalized(intel_host(), 0, 4);
        let l1d = find(&entries, 4, 0).unwrap();
        let l3 = find(&entries, 4, 2).unwrap();
        assert_eq!((l1d.eax >> 14) & 0xfff, 0);
        assert_eq!((l3.eax >> 14) & 0xfff, 3);
        assert_eq!(l1d.eax >> 26, 3, "cores per package - 1");
        assert_eq!(l1d.eax & 0x3fff, 0x0121, "cache type and level kept");
    }

    #[test]
    fn kvm_signature_is_present() {
        let entries = normalized(intel_host(), 0, 1);
        let sig = find(&entries, KVM_CPUID_SIGNATURE, 0).unwrap();
        assert_eq!([sig.ebx, sig.ecx, sig.edx], KVM_SIGNATURE);
        assert_eq!(sig.eax, KVM_CPUID_FEATURES);
        assert_eq!(
            find(&entries, KVM_CPUID_FEATURES, 0).unwrap().eax,
            0x0100_7afb
        );
        let bytes: Vec<u8> = KVM_SIGNATURE.iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&bytes, b"KVMKVMKVM\0\0\0");

        // Inserted when KVM did not list it.
        let entries = normalized(amd_host(), 0, 1);
        assert_eq!(
            find(&entries, KVM_CPUID_SIGNATURE, 0).unwrap().ebx,
            KVM_SIGNATURE[0]
        );
    }

    #[test]
    fn amd_topology_leaves() {
        let entries = normalized(amd_host(), 5, 8);
        let l8 = find(&entries, 0x8000_0008, 0).unwrap();
        assert_eq!(l8.ecx & 0xff, 7, "NC = cores - 1");
        assert_eq!((l8.ecx >> 12) & 0xf, 3, "APIC ID size");
        let ext = find(&entries, 0x8000_001e, 0).unwrap();
        assert_eq!((ext.eax, ext.ebx, ext.ecx), (5, 5, 0));
        let l3 = find(&entries, 0x8000_001d, 3).unwrap();
        assert_eq!((l3.eax >> 14) & 0xfff, 7);
        let l1 = find(&entries, 0x8000_001d, 0).unwrap();
        assert_eq!((l1.eax >> 14) & 0xfff, 0);
        let ext1 = find(&entries, 0x8000_0001, 0).unwrap();
        assert_eq!(ext1.ecx & (1 << 2), 0, "SVM hidden by default");
        assert_ne!(ext1.ecx & 1, 0, "other bits kept");
    }

    #[test]
    fn masks_clear_exactly_their_bit() {
        let mut entries = intel_host();
        let before = entries.clone();
        hide(
            &mut entries,
            &[
                FeatureMask::new(1, Reg::Edx, 0),
                FeatureMask {
                    leaf: 4,
                    subleaf: Some(1),
                    reg: Reg::Eax,
                    bit: 0,
                },
                FeatureMask::new(0x1234, Reg::Eax, 0), // absent leaf: nothing happens
            ],
        );
        for (a, b) in before.iter().zip(&entries) {
            match (a.function, a.index) {
                (1, _) => {
                    assert_eq!(b.edx, a.edx & !1);
                    assert_eq!((b.eax, b.ebx, b.ecx), (a.eax, a.ebx, a.ecx));
                }
                (4, 1) => assert_eq!(b.eax, a.eax & !1),
                _ => assert_eq!(a, b),
            }
        }
    }
}
