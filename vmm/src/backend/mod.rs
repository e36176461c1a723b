//! The two ways to run a guest: our own VMM on KVM, or QEMU's microvm machine (KVM or TCG).
//! Both boot the same [`VmConfig`] (built into one [`crate::vm::VmSpec`]) on the same console
//! fds and end with the same [`crate::vm::VmExit`],
//! so callers cannot tell them apart (see docs/guest-contract.md).

use crate::jail::Jail;
use contract::arch::Arch;
use contract::params::AgentTransport;

use crate::vm::{ConfigError, ConsoleIo, PauseLink, RunReport, StopSignal, VmConfig};

pub mod detect;
pub(crate) mod handover;
pub mod kvm;
pub mod process;
pub mod qemu;

/// The machine monitor that runs a VM.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Our own VMM on /dev/kvm, in a process of its own running `vmm` ([`process`]), jailed
    /// when given a [`Jail`].
    Kvm {
        jail: Option<Jail>,
        vmm: process::VmmProgram,
    },
    /// QEMU, jailed when given a [`Jail`] (started in it by `vmm`, the jail's helper).
    Qemu {
        accel: qemu::Accel,
        jail: Option<Jail>,
        vmm: process::VmmProgram,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Vmm(#[from] process::Error),
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    #[error(
        "this host runs {host} guests on KVM; an {guest} guest runs under QEMU's emulation \
         (--backend qemu, or auto)"
    )]
    ForeignArch { guest: Arch, host: Arch },
}

impl Backend {
    /// Boots the VM `config` describes and waits until it ends: `stop` ends it, `pause`'s
    /// owner pauses and resumes it.
    pub fn run(
        &self,
        config: &VmConfig,
        console: ConsoleIo,
        stop: &StopSignal,
        pause: Option<PauseLink>,
    ) -> Result<RunReport, Error> {
        let spec = &config.spec(self.agent_transport())?;
        // KVM runs the host's own instruction set only.
        let emulated = matches!(
            self,
            Backend::Qemu {
                accel: qemu::Accel::Tcg,
                ..
            }
        );
        if spec.arch != Arch::host() && !emulated {
            return Err(Error::ForeignArch {
                guest: spec.arch,
                host: Arch::host(),
            });
        }
        Ok(match self {
            Backend::Kvm { jail, vmm } => process::run(vmm, spec, console, stop, pause, *jail)?,
            Backend::Qemu { accel, jail, vmm } => {
                let jailed = jail.map(|jail| process::Jailed { jail, helper: vmm });
                qemu::run(spec, console, *accel, stop, pause, jailed)?
            }
        })
    }

    /// How the guest agent's link reaches the guest on this backend: a virtio-vsock device on
    /// our VMM, a virtio-serial port on QEMU (which has no vhost-vsock on these hosts).
    pub fn agent_transport(&self) -> AgentTransport {
        match self {
            Backend::Kvm { .. } => AgentTransport::Vsock,
            Backend::Qemu { .. } => AgentTransport::Serial,
        }
    }

    /// Whether a paused guest's wall clock stands still (QEMU stops its virtual clock with the
    /// VM), so that it lags by the paused time once resumed; on our VMM kvmclock follows the
    /// host's.
    pub fn guest_clock_stops_when_paused(&self) -> bool {
        matches!(self, Backend::Qemu { .. })
    }

    /// What a snapshot of an `arch` guest this backend saves depends on besides the VM: its
    /// name; for our VMM the host's CPU as a vCPU sees it (crate::kvm::host_cpu_hash: a
    /// snapshot restores only there, so a cache shared by two machines, or a host whose KVM
    /// changed, keeps a template for each instead of failing to restore one); for QEMU the
    /// build on PATH of that architecture's emulator (a migration stream is QEMU's own format).
    pub fn snapshot_identity(&self, arch: Arch) -> String {
        match self {
            Backend::Kvm { .. } => match crate::kvm::host_cpu_hash() {
                Ok(cpu) => format!("{} cpu {cpu}", self.name()),
                // KVM cannot run a VM here either: the VM's start says why.
                Err(e) => format!("{} cpu unknown ({e})", self.name()),
            },
            Backend::Qemu { .. } => format!("{} {}", self.name(), qemu::build(arch)),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Kvm { .. } => "kvm",
            Backend::Qemu {
                accel: qemu::Accel::Kvm,
                ..
            } => "qemu-kvm",
            Backend::Qemu {
                accel: qemu::Accel::Tcg,
                ..
            } => "qemu-tcg",
        }
    }
}
