//! The guest architectures: the host builds a kernel and a root image for each, and boots
//! each with the devices its machine has (docs/guest-contract.md, "Architectures").

use std::fmt;
use std::str::FromStr;

/// A guest's instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// x86-64: an ELF `vmlinux` booted through PVH, devices on the command line, the
    /// contract's I/O ports ([`crate::ports`]).
    X86_64,
    /// arm64: an `Image` booted with a device tree, the contract's marks on a virtio-serial
    /// port ([`crate::ports::MARKS_PORT_NAME`]), power-off through PSCI.
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture this program was built for.
    pub const fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// Rust's and the GNU toolchain's name: `x86_64`, `aarch64`.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name: `amd64`, `arm64`.
    pub const fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Linux's name (`ARCH=`): `x86_64`, `arm64`.
    pub const fn linux(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown architecture {:?}: give x86_64 (or amd64) or aarch64 (or arm64)",
            self.0
        )
    }
}

impl std::error::Error for UnknownArch {}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// Each architecture by any of its names.
    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        Arch::ALL
            .into_iter()
            .find(|a| [a.name(), a.debian(), a.linux()].contains(&s))
            .ok_or_else(|| UnknownArch(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_an_architecture_is_understood() {
        for arch in Arch::ALL {
            for name in [arch.name(), arch.debian(), arch.linux()] {
                assert_eq!(name.parse::<Arch>(), Ok(arch));
            }
            assert_eq!(arch.to_string().parse::<Arch>(), Ok(arch));
        }
        assert_eq!(Arch::X86_64.debian(), "amd64");
        assert_eq!(Arch::Aarch64.linux(), "arm64");
        let err = "riscv64".parse::<Arch>().unwrap_err();
        assert!(err.to_string().contains("x86_64"), "{err}");
    }
}
