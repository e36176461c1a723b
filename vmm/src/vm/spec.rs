//! What a backend boots: a kernel, its command line, memory, vCPUs and an ordered list of
//! devices. Built from a [`super::VmConfig`], which decides every guest-visible detail.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything needed to boot one microVM, whatever the backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSpec {
    /// ELF vmlinux with a PVH entry (or a bzImage, KVM backend only).
    pub kernel: PathBuf,
    pub memory_mib: u32,
    pub cpus: u8,
    /// The kernel command line without the `virtio_mmio.device=` entries, which each backend
    /// adds for the devices it creates.
    pub cmdline: String,
    /// The virtio devices, in the order the guest finds them: block devices are `/dev/vda`,
    /// `/dev/vdb`, ... in this order.
    pub devices: Vec<Device>,
    /// Syscall filtering: seccomp-BPF on every thread of our VMM (crate::seccomp), QEMU's
    /// `-sandbox on`. Off only for debugging (`--no-seccomp`).
    pub seccomp: bool,
}

/// One virtio device of a [`VmSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    /// A virtio-blk disk image.
    Block(Disk),
    /// virtio-rng, fed from the host's random source.
    Rng,
    /// The guest's network interface, `eth0`.
    Net(NetSpec),
    /// The guest agent's link, its host end a Unix socket speaking Firecracker's hybrid vsock
    /// (`CONNECT <port>`; guest connections to host port P reach `<path>_P`). Our VMM gives the
    /// guest a virtio-vsock device (CID 3); QEMU, without vhost-vsock here, a virtio-serial
    /// port multiplexed the same way (contract::mux). Callers can't tell.
    AgentLink(PathBuf),
}

impl VmSpec {
    /// The block devices, in the guest's order.
    pub fn disks(&self) -> impl Iterator<Item = &Disk> {
        self.devices.iter().filter_map(|d| match d {
            Device::Block(disk) => Some(disk),
            _ => None,
        })
    }

    /// The network interface's host side, when the guest has one.
    pub fn net(&self) -> Option<&NetSpec> {
        self.devices.iter().find_map(|d| match d {
            Device::Net(net) => Some(net),
            _ => None,
        })
    }

    /// The host end of the guest agent's link, when the guest has one.
    pub fn agent_socket(&self) -> Option<&Path> {
        self.devices.iter().find_map(|d| match d {
            Device::AgentLink(path) => Some(path.as_path()),
            _ => None,
        })
    }
}

/// A virtio-blk disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// How the guest's network interface reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetSpec {
    /// User-mode NAT, no privileges: `passt` for our VMM, QEMU's user networking (slirp) for
    /// QEMU. Either way the guest's addresses are contract::net's: it is 10.0.2.15/24, the
    /// gateway 10.0.2.2 is the host's loopback, and DNS is at 10.0.2.3.
    User,
    /// An existing TAP interface of the host, by name.
    Tap(String),
}
