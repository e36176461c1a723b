//! What a backend boots: a kernel, its command line, memory, vCPUs and an ordered list of
//! devices. Built from a [`super::VmConfig`], which decides every guest-visible detail.

use std::fmt;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything needed to boot one microVM, whatever the backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSpec {
    #[serde(with = "arch_name")]
    pub arch: contract::arch::Arch,
    /// ELF vmlinux with a PVH entry (or a bzImage, KVM backend only); an arm64 `Image`.
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
    /// Whether the VM boots, boots and is saved, or is restored from a snapshot.
    pub start: Start,
    /// Whether our VMM measures, as the VM ends, the memory it holds besides guest RAM
    /// (`RunReport::vmm_overhead_kib`): it reads its own memory map, which costs the end of a
    /// restored VM (hundreds of mappings) tens of milliseconds in a nested KVM host.
    #[serde(default)]
    pub measure_overhead: bool,
}

/// An architecture as its name (the contract crate has no serde).
mod arch_name {
    use contract::arch::Arch;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(arch: &Arch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(arch.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How a VM comes up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    /// A cold boot of the kernel.
    #[default]
    Boot,
    /// A cold boot that ends in a snapshot: when the guest writes `at` to the boot-timer port
    /// (contract::ports), the VM is paused, saved whole to `to` and ended
    /// ([`super::VmExit::Saved`]). `identity` is stored in the snapshot: a restore asking for
    /// another one is refused.
    Save {
        to: PathBuf,
        at: u8,
        identity: String,
    },
    /// The VM `from` holds, with this spec's devices attached where the saved VM had the same
    /// kinds of devices in the same order (disks may be other files, of other sizes). Refused,
    /// with one line, when the snapshot is not one of this backend's, not `identity`'s, or not
    /// whole.
    Restore { from: PathBuf, identity: String },
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
    /// User-mode NAT without privileges: passt, on both backends, on contract::net's addresses
    /// (the guest is 10.0.2.15/24, its gateway 10.0.2.2, DNS 10.0.2.3). What the guest may
    /// reach of the host's loopback through the gateway is `host_loopback`; the loopback itself
    /// (127.0.0.0/8, 0.0.0.0/8) is never a destination (devices::virtio::net::guard).
    /// `published`: the host's TCP and UDP ports that passt listens on and forwards to the
    /// guest's.
    User {
        host_loopback: HostLoopback,
        published: Vec<PublishedPort>,
    },
    /// An existing TAP interface of the host, by name.
    Tap(String),
}

impl NetSpec {
    /// User-mode NAT that keeps the host's loopback out of the guest's reach, and publishes
    /// no port.
    pub const USER: NetSpec = NetSpec::User {
        host_loopback: HostLoopback::Closed,
        published: Vec::new(),
    };
}

/// A port of the host forwarded to one of the guest's (`--publish`): a TCP connection to
/// `host` reaches the guest's `guest_port`, or a UDP datagram sent there does, and the guest's
/// answers from that port go back. Inbound only: what the guest may reach is
/// [`HostLoopback`]'s and the NAT's, whatever is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The address and port passt listens on (127.0.0.1 unless the user names another).
    pub host: SocketAddrV4,
    pub guest_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// The transport of a [`PublishedPort`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl fmt::Display for PublishedPort {
    /// As `--publish` takes it: `HOST_IP:HOST_PORT:GUEST_PORT`, and `/udp` for UDP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.guest_port)?;
        match self.protocol {
            Protocol::Tcp => Ok(()),
            Protocol::Udp => f.write_str("/udp"),
        }
    }
}

/// What of the host's loopback (127.0.0.1) a guest with user-mode networking reaches through
/// its gateway, 10.0.2.2: nothing unless asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HostLoopback {
    /// Nothing: a connection to the gateway is refused (a TCP reset), whatever its port.
    #[default]
    Closed,
    /// These TCP ports only (say, the host's npm registry); connections to others are refused.
    TcpPorts(Vec<u16>),
    /// Every port, TCP and UDP: the gateway is the host's loopback.
    All,
}

impl HostLoopback {
    /// Adds `port` to what is reachable (nothing changes where every port already is).
    pub fn open_tcp_port(&mut self, port: u16) {
        match self {
            HostLoopback::Closed => *self = HostLoopback::TcpPorts(vec![port]),
            HostLoopback::TcpPorts(ports) if !ports.contains(&port) => ports.push(port),
            HostLoopback::TcpPorts(_) | HostLoopback::All => {}
        }
    }
}
