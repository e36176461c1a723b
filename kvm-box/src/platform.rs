//! What L1 is for each architecture: the emulated machine whose CPU virtualizes (x86-64: an AMD
//! CPU with SVM and nested paging; arm64: `virt` with EL2), Debian's kernel for it, where the
//! kernel console and the script's output leave it, and what makes its `/dev/kvm`.

use std::path::{Path, PathBuf};

use contract::arch::Arch;

/// How the script's raw output leaves L1, apart from the kernel console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputDevice {
    /// A second 16550 UART (`-serial` twice): `/dev/ttyS1`.
    SecondUart,
    /// A virtio console on virtio-mmio (`virt` has one PL011): `/dev/hvc0`.
    VirtioConsole,
}

#[derive(Debug)]
pub(crate) struct Platform {
    pub arch: Arch,
    /// The host's QEMU for L1, the Debian package that has it, and the variable naming another.
    pub qemu: &'static str,
    pub qemu_package: &'static str,
    pub qemu_env: &'static str,
    /// `-M ... -accel tcg -cpu ...`.
    pub machine: &'static [&'static str],
    /// The machine with a GICv2 instead (arm64 only: a Raspberry Pi's interrupt controller).
    pub machine_gic_v2: Option<&'static [&'static str]>,
    /// A `-bios` to use when the host has it.
    pub firmware: Option<&'static str>,
    pub cmdline: &'static str,
    /// The kernel console, where `/init` reports the script's status.
    pub console_tty: &'static str,
    pub output: OutputDevice,
    pub output_tty: &'static str,
    /// Debian's metapackage whose dependency is the current kernel.
    pub kernel_metapackage: &'static str,
    /// Modules that make `/dev/kvm` and the output device, loaded before the script (those
    /// built into the kernel are skipped).
    pub modules: &'static [&'static str],
    /// Debian's multiarch directory name: `/lib/<multiarch>` holds the libraries.
    pub multiarch: &'static str,
    /// Whether `/init` keeps one VM open for the whole run, so that L1 never patches its text
    /// between the script's VMs (`holder`: TCG can loop for good on an x86-64 text patch).
    pub holds_a_vm: bool,
}

/// `quiet` keeps the kernel's console short; `panic=-1` with `-no-reboot` ends QEMU on a panic.
pub(crate) static X86_64: Platform = Platform {
    arch: Arch::X86_64,
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    qemu_env: "KVM_BOX_QEMU",
    // SVM with nested paging: what kvm-amd needs to offer /dev/kvm with NPT.
    machine: &["-M", "pc", "-accel", "tcg", "-cpu", "EPYC,+svm,+npt"],
    machine_gic_v2: None,
    // qboot starts a `-kernel` boot faster than SeaBIOS.
    firmware: Some("/usr/share/qemu/qboot.rom"),
    cmdline: "console=ttyS0 quiet panic=-1 tsc=reliable",
    console_tty: "/dev/ttyS0",
    output: OutputDevice::SecondUart,
    output_tty: "/dev/ttyS1",
    kernel_metapackage: "linux-image-cloud-amd64",
    // It pulls in kvm and irqbypass.
    modules: &["kvm_amd"],
    multiarch: "x86_64-linux-gnu",
    holds_a_vm: true,
};

pub(crate) static AARCH64: Platform = Platform {
    arch: Arch::Aarch64,
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    qemu_env: "KVM_BOX_QEMU_AARCH64",
    // EL2 (VHE) for KVM; GICv3 for its vGIC. Pointer authentication with QEMU's own hash
    // instead of the architected QARMA: far cheaper to emulate, invisible to the guest.
    machine: &[
        "-M",
        "virt,virtualization=on,gic-version=3",
        "-accel",
        "tcg",
        "-cpu",
        "max,pauth-impdef=on",
    ],
    // KVM on a GICv2 host gives its guests a vGICv2.
    machine_gic_v2: Some(&[
        "-M",
        "virt,virtualization=on,gic-version=2",
        "-accel",
        "tcg",
        "-cpu",
        "max,pauth-impdef=on",
    ]),
    firmware: None,
    cmdline: "console=ttyAMA0 quiet panic=-1",
    console_tty: "/dev/ttyAMA0",
    output: OutputDevice::VirtioConsole,
    output_tty: "/dev/hvc0",
    // Debian builds KVM into the arm64 kernel; virtio is modules in the cloud flavour.
    kernel_metapackage: "linux-image-cloud-arm64",
    modules: &["kvm", "virtio_mmio", "virtio_console"],
    multiarch: "aarch64-linux-gnu",
    holds_a_vm: false,
};

impl Platform {
    pub(crate) fn of(arch: Arch) -> &'static Platform {
        match arch {
            Arch::X86_64 => &X86_64,
            Arch::Aarch64 => &AARCH64,
        }
    }

    /// `<cache>/kvm-box/<Debian's name>`: the architecture's private apt state and sysroot.
    pub(crate) fn arch_dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join("kvm-box").join(self.arch.debian())
    }

    /// Where L1's kernel and busybox are cached: x86-64's in `<cache>/kvm-box` (where they were
    /// before there was arm64), another architecture's in its [`Platform::arch_dir`].
    pub(crate) fn asset_dir(&self, cache_dir: &Path) -> PathBuf {
        match self.arch {
            Arch::X86_64 => cache_dir.join("kvm-box"),
            Arch::Aarch64 => self.arch_dir(cache_dir),
        }
    }

    /// The directories the dynamic loader searches by default.
    pub(crate) fn library_dirs(&self) -> [String; 4] {
        let multiarch = self.multiarch;
        [
            format!("/lib/{multiarch}"),
            format!("/usr/lib/{multiarch}"),
            "/lib".into(),
            "/usr/lib".into(),
        ]
    }

    /// QEMU's arguments for L1, `-M` to the output device: `console` and `output` are the
    /// files the kernel console and the script's output go to; `gic_v2` picks
    /// [`Platform::machine_gic_v2`] where there is one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn qemu_args(
        &self,
        gic_v2: bool,
        memory_mib: u32,
        cpus: u8,
        kernel: &Path,
        initrd: &Path,
        console: &Path,
        output: &Path,
    ) -> Vec<String> {
        let machine = match self.machine_gic_v2 {
            Some(machine) if gic_v2 => machine,
            _ => self.machine,
        };
        let mut args: Vec<String> = machine.iter().map(|a| a.to_string()).collect();
        let plain = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        args.extend(plain(&[
            "-m",
            &memory_mib.to_string(),
            "-smp",
            &cpus.max(1).to_string(),
        ]));
        args.extend(plain(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]));
        if let Some(firmware) = self.firmware.filter(|f| Path::new(f).exists()) {
            args.extend(plain(&["-bios", firmware]));
        }
        args.extend(plain(&[
            "-kernel",
            &kernel.to_string_lossy(),
            "-initrd",
            &initrd.to_string_lossy(),
            "-append",
            self.cmdline,
            "-serial",
            &format!("file:{}", console.display()),
        ]));
        match self.output {
            OutputDevice::SecondUart => {
                args.extend(plain(&["-serial", &format!("file:{}", output.display())]))
            }
            OutputDevice::VirtioConsole => args.extend(plain(&[
                "-device",
                "virtio-serial-device",
                "-chardev",
                &format!("file,id=output,path={}", output.display()),
                "-device",
                "virtconsole,chardev=output",
            ])),
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(platform: &Platform) -> String {
        args_with(platform, false)
    }

    fn args_with(platform: &Platform, gic_v2: bool) -> String {
        platform
            .qemu_args(
                gic_v2,
                1024,
                2,
                Path::new("/k"),
                Path::new("/i"),
                Path::new("/c.log"),
                Path::new("/o.log"),
            )
            .join(" ")
    }

    #[test]
    fn x86_64_l1_has_svm_and_two_uarts() {
        let line = args(&X86_64);
        assert!(
            line.starts_with("-M pc -accel tcg -cpu EPYC,+svm,+npt -m 1024 -smp 2"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "-kernel /k -initrd /i -append console=ttyS0 quiet panic=-1 tsc=reliable \
                 -serial file:/c.log -serial file:/o.log"
            ),
            "{line}"
        );
    }

    #[test]
    fn an_arm64_l1_may_have_a_gicv2() {
        let line = args_with(&AARCH64, true);
        assert!(
            line.starts_with("-M virt,virtualization=on,gic-version=2 -accel tcg"),
            "{line}"
        );
    }

    #[test]
    fn aarch64_l1_has_el2_and_a_virtio_console() {
        let line = args(&AARCH64);
        assert!(
            line.starts_with(
                "-M virt,virtualization=on,gic-version=3 -accel tcg -cpu max,pauth-impdef=on"
            ),
            "{line}"
        );
        assert!(!line.contains("-bios"), "{line}");
        assert!(
            line.ends_with(
                "-append console=ttyAMA0 quiet panic=-1 -serial file:/c.log \
                 -device virtio-serial-device -chardev file,id=output,path=/o.log \
                 -device virtconsole,chardev=output"
            ),
            "{line}"
        );
        assert_eq!(AARCH64.library_dirs()[1], "/usr/lib/aarch64-linux-gnu");
        assert_eq!(Platform::of(Arch::Aarch64).arch, Arch::Aarch64);
    }
}
