//! Can this host's `/dev/kvm` run a Linux guest? Hardware virtualization (VMX or SVM) behind
//! KVM can; the paravirtual PVM-style KVM of some cloud hosts answers the KVM API but cannot
//! (docs/kvm-hosts.md), and a guest on it fails deep into boot, so we tell before we start.

use std::fs::OpenOptions;
use std::path::Path;

const KVM_DEVICE: &str = "/dev/kvm";
const PVM_MODULE: &str = "/sys/module/kvm_pvm";
const CPUINFO: &str = "/proc/cpuinfo";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmSupport {
    /// Hardware virtualization behind an accessible `/dev/kvm`.
    Usable,
    /// KVM cannot run Linux guests here; the text says why, in one line.
    Unusable(String),
}

impl KvmSupport {
    pub fn is_usable(&self) -> bool {
        *self == KvmSupport::Usable
    }
}

/// Looks at this host.
pub fn probe() -> KvmSupport {
    let cpuinfo = std::fs::read_to_string(CPUINFO).unwrap_or_default();
    classify(
        Path::new(KVM_DEVICE).exists(),
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(KVM_DEVICE)
            .err(),
        Path::new(PVM_MODULE).exists(),
        &cpuinfo,
    )
}

fn classify(
    device_exists: bool,
    open_error: Option<std::io::Error>,
    pvm_loaded: bool,
    cpuinfo: &str,
) -> KvmSupport {
    if !device_exists {
        return KvmSupport::Unusable(format!("{KVM_DEVICE} does not exist (no KVM on this host)"));
    }
    if let Some(e) = open_error {
        return KvmSupport::Unusable(format!("{KVM_DEVICE} cannot be opened: {e}"));
    }
    if pvm_loaded {
        return KvmSupport::Unusable(format!(
            "{KVM_DEVICE} is the paravirtual PVM flavour of KVM ({PVM_MODULE}), which cannot run Linux guests"
        ));
    }
    // arm64 names no such flag: its /dev/kvm exists only where the kernel booted at EL2.
    if cfg!(target_arch = "x86_64") && !has_hw_virt(cpuinfo) {
        return KvmSupport::Unusable(format!(
            "the CPU has no hardware virtualization (no vmx or svm flag in {CPUINFO}) behind {KVM_DEVICE}"
        ));
    }
    KvmSupport::Usable
}

fn has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|flag| flag == "vmx" || flag == "svm")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVM: &str = "processor\t: 0\nflags\t\t: fpu sse2 svm npt\n";
    const NONE: &str = "processor\t: 0\nflags\t\t: fpu sse2 hypervisor\n";

    #[test]
    fn hardware_kvm_is_usable() {
        assert_eq!(classify(true, None, false, SVM), KvmSupport::Usable);
        assert!(classify(true, None, false, &SVM.replace("svm", "vmx")).is_usable());
    }

    #[test]
    fn pvm_missing_device_and_no_flags_are_not() {
        for support in [
            classify(true, None, true, SVM),
            classify(false, None, false, SVM),
            classify(
                true,
                Some(std::io::Error::from_raw_os_error(13)),
                false,
                SVM,
            ),
            classify(true, None, false, NONE),
        ] {
            assert!(!support.is_usable(), "{support:?}");
        }
        let KvmSupport::Unusable(why) = classify(true, None, true, SVM) else {
            unreachable!()
        };
        assert!(why.contains("PVM"), "{why}");
    }
}
