//! The host–guest agent link (docs/agent-protocol.md).
//!
//! - [`hybrid`]: Firecracker's hybrid vsock handshake over a Unix socket (`CONNECT <port>\n` /
//!   `OK <host_port>\n`), spoken by our VMM's vsock device and by the channel multiplexer.
//! - The well-known ports and names both sides agree on (below).

pub mod hybrid;

/// The guest's context ID on our vsock device.
pub const GUEST_CID: u32 = 3;
/// The host's context ID (vsock's `VMADDR_CID_HOST`).
pub const HOST_CID: u32 = 2;
/// The guest agent listens here.
pub const AGENT_PORT: u32 = 1024;
/// The host listens here (`<uds>_1025`); the agent connects once it is ready and says hello.
pub const READY_PORT: u32 = 1025;
/// Name of the virtio-serial port that carries the multiplexed link where there is no vsock
/// (the QEMU backend on hosts without vhost-vsock).
pub const SERIAL_PORT_NAME: &str = "org.nodeos.agent";
