//! Snapshots of a whole VM on our VMM (`Start::Save`, `Start::Restore`): what KVM holds
//! (crate::kvm::state), every device's state (crate::devices::persist) and guest memory, in
//! one file ([`format`]) that a restore maps instead of reading ([`memory`]).
//!
//! A snapshot is restored only by the VMM build that saved it, on a host with the same CPUID,
//! for the identity it was saved for, into a VM of the same memory size, vCPU count and kinds
//! of devices in the same order ([`Header`]); anything else is refused with one line naming
//! what differs ([`Error`]).

pub mod format;
pub mod memory;
pub mod save;

use serde::{Deserialize, Serialize};

#[cfg(target_arch = "aarch64")]
use crate::devices::legacy::rtc::Pl031State;
use crate::devices::legacy::serial::SerialState;
#[cfg(target_arch = "x86_64")]
use crate::devices::legacy::{cmos::CmosState, i8042::I8042State};
use crate::devices::persist::RestoreError;
use crate::devices::virtio::{mmio::TransportState, VirtioState};
use crate::kvm::state::{VcpuState, VmState};
use crate::vm::{Device, VmSpec};

/// This VMM's version and build: the crate's version and a hash of its sources (build.rs).
pub const VMM_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("NODEOS_VMM_BUILD"));

/// Why a snapshot was not saved or not restored: one line each.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot: cannot {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot: not a snapshot of this VMM (no nodeos-vm snapshot magic)")]
    Magic,
    #[error("snapshot: format version {found}; this VMM reads version {supported}")]
    Version { found: u32, supported: u32 },
    #[error("snapshot: truncated or overlong: {len} bytes, {expected} expected")]
    Size { len: u64, expected: u64 },
    #[error("snapshot: corrupted: {0}")]
    Corrupted(String),
    #[error("snapshot: saved by VMM {saved}; this is VMM {this}")]
    VmmVersion { saved: String, this: String },
    #[error("snapshot: taken on another CPU or machine monitor ({saved}; this host runs {this})")]
    Host { saved: String, this: String },
    #[error("snapshot: saved for identity {saved:?}, not {asked:?}")]
    Identity { saved: String, asked: String },
    #[error("snapshot: {saved} MiB of memory saved, the VM has {spec} MiB")]
    Memory { saved: u32, spec: u32 },
    #[error("snapshot: {saved} vCPUs saved, the VM has {spec}")]
    Cpus { saved: u8, spec: u8 },
    #[error("snapshot: devices {saved:?} saved, the VM has {spec:?}")]
    Devices {
        saved: Vec<DeviceKind>,
        spec: Vec<DeviceKind>,
    },
    #[error("snapshot: virtio device {index} (type {device_type}) cannot be saved")]
    NotSaveable { index: usize, device_type: u32 },
    #[error("snapshot: restoring virtio device {index}")]
    Device {
        index: usize,
        #[source]
        source: RestoreError,
    },
    #[error("snapshot: restoring the {what}")]
    Legacy {
        what: &'static str,
        #[source]
        source: RestoreError,
    },
    #[error("snapshot: KVM state")]
    Kvm(#[from] crate::kvm::Error),
}

/// The header of the snapshot in `file`, once its preamble and state read back whole: what a
/// cache checks before it uses a snapshot, whichever backend saved it.
pub fn saved_header(file: &std::fs::File) -> Result<Header, Error> {
    header_of(&format::read_parts(file)?.state)
}

/// The header of a snapshot's state (every backend's state is an object with a `header`).
pub fn header_of(state: &[u8]) -> Result<Header, Error> {
    #[derive(Deserialize)]
    struct Headed {
        header: Header,
    }
    serde_json::from_slice::<Headed>(state)
        .map(|h| h.header)
        .map_err(|e| Error::Corrupted(format!("the state has no header: {e}")))
}

/// A kind of device of a [`VmSpec`], in a snapshot's device list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    Block,
    Rng,
    Net,
    AgentLink,
}

impl From<&Device> for DeviceKind {
    fn from(device: &Device) -> Self {
        match device {
            Device::Block(_) => DeviceKind::Block,
            Device::Rng => DeviceKind::Rng,
            Device::Net(_) => DeviceKind::Net,
            Device::AgentLink(_) => DeviceKind::AgentLink,
        }
    }
}

/// What a snapshot was taken of, and by whom: checked before anything else is restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub vmm_version: String,
    /// What the guest ran on: for our VMM, the SHA-256 of the CPU it gives the guest
    /// (crate::kvm::host_cpu_hash: x86-64's CPUID, arm64's ID registers); for QEMU, its build
    /// and accelerator.
    pub host: String,
    pub identity: String,
    pub memory_mib: u32,
    pub cpus: u8,
    pub devices: Vec<DeviceKind>,
}

impl Header {
    /// The header of a snapshot of `spec`'s VM for `identity`, by this VMM on this host.
    pub fn new(spec: &VmSpec, identity: &str, host: String) -> Header {
        Header {
            vmm_version: VMM_VERSION.to_string(),
            host,
            identity: identity.to_string(),
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            devices: spec.devices.iter().map(DeviceKind::from).collect(),
        }
    }

    /// Refuses `saved` where it differs from this one (what the restore expects): names the
    /// first difference.
    pub fn check(&self, saved: &Header) -> Result<(), Error> {
        if saved.vmm_version != self.vmm_version {
            return Err(Error::VmmVersion {
                saved: saved.vmm_version.clone(),
                this: self.vmm_version.clone(),
            });
        }
        if saved.host != self.host {
            return Err(Error::Host {
                saved: saved.host.clone(),
                this: self.host.clone(),
            });
        }
        if saved.identity != self.identity {
            return Err(Error::Identity {
                saved: saved.identity.clone(),
                asked: self.identity.clone(),
            });
        }
        if saved.memory_mib != self.memory_mib {
            return Err(Error::Memory {
                saved: saved.memory_mib,
                spec: self.memory_mib,
            });
        }
        if saved.cpus != self.cpus {
            return Err(Error::Cpus {
                saved: saved.cpus,
                spec: self.cpus,
            });
        }
        if saved.devices != self.devices {
            return Err(Error::Devices {
                saved: saved.devices.clone(),
                spec: self.devices.clone(),
            });
        }
        Ok(())
    }
}

/// Everything of a VM but its memory.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub header: Header,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DevicesState,
}

impl Snapshot {
    /// Refuses a snapshot whose parts disagree with its own header (a state that checks out
    /// but was put together wrongly).
    fn check_consistent(&self) -> Result<(), Error> {
        let corrupted = |what: String| Err(Error::Corrupted(what));
        if self.vcpus.len() != usize::from(self.header.cpus) {
            return corrupted(format!(
                "{} vCPU states for {} vCPUs",
                self.vcpus.len(),
                self.header.cpus
            ));
        }
        let devices = self.header.devices.len() + EXTRA_VIRTIO_DEVICES;
        if self.devices.virtio.len() != devices {
            return corrupted(format!(
                "{} device states for {devices} devices",
                self.devices.virtio.len(),
            ));
        }
        Ok(())
    }
}

/// The virtio devices a VM has besides its spec's: on arm64 the marks port, after them.
#[cfg(target_arch = "x86_64")]
pub const EXTRA_VIRTIO_DEVICES: usize = 0;
#[cfg(target_arch = "aarch64")]
pub const EXTRA_VIRTIO_DEVICES: usize = 1;

/// The devices' states: the legacy ones (x86-64: the serial port, i8042 and CMOS RTC; arm64:
/// the serial port and the PL031 RTC), then each virtio device's transport and device, in the
/// spec's order, then those the VMM adds ([`EXTRA_VIRTIO_DEVICES`]).
#[derive(Serialize, Deserialize)]
pub struct DevicesState {
    pub serial: SerialState,
    #[cfg(target_arch = "x86_64")]
    pub i8042: I8042State,
    #[cfg(target_arch = "x86_64")]
    pub cmos: CmosState,
    #[cfg(target_arch = "aarch64")]
    pub rtc: Pl031State,
    pub virtio: Vec<VirtioDeviceState>,
    /// Whether the guest had said its console takes input (the boot timer's `R`): a restored
    /// VM's console opens at once then, and otherwise when the guest says so again.
    #[serde(default)]
    pub console_ready: bool,
}

#[derive(Serialize, Deserialize)]
pub struct VirtioDeviceState {
    pub transport: TransportState,
    pub device: VirtioState,
}
