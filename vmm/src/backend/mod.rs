//! The two ways to run a guest: our own VMM on KVM, or QEMU's microvm machine (KVM or TCG).
//! Both take the same [`VmSpec`] and the same console fds and end with the same [`VmExit`],
//! so callers cannot tell them apart (see docs/guest-contract.md).

use crate::jail::Jail;
use crate::vm::{ConsoleIo, RunReport, StopSignal, VmSpec};

pub mod detect;
pub mod kvm;
pub mod process;
pub mod qemu;

/// The machine monitor that runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Our own VMM on /dev/kvm, in a process of its own ([`process`]), jailed when given a
    /// [`Jail`].
    Kvm(Option<Jail>),
    Qemu(qemu::Accel),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Vmm(#[from] process::Error),
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
}

impl Backend {
    /// Boots `spec` and waits until the VM ends.
    pub fn run(
        self,
        spec: &VmSpec,
        console: ConsoleIo,
        stop: &StopSignal,
    ) -> Result<RunReport, Error> {
        Ok(match self {
            Backend::Kvm(jail) => {
                process::run(&process::VmmProgram::installed()?, spec, console, stop, jail)?
            }
            Backend::Qemu(accel) => qemu::run(spec, console, accel, stop)?,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Kvm(_) => "kvm",
            Backend::Qemu(qemu::Accel::Kvm) => "qemu-kvm",
            Backend::Qemu(qemu::Accel::Tcg) => "qemu-tcg",
        }
    }
}
