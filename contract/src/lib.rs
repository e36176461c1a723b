//! The host–guest agent link (docs/agent-protocol.md).
//!
//! - [`hybrid`]: Firecracker's hybrid vsock handshake over a Unix socket (`CONNECT <port>\n` /
//!   `OK <host_port>\n`), spoken by our VMM's vsock device and by the channel multiplexer.
//! - [`frame`]: the agent protocol itself: the host's requests (`Hello`, `Exec`, stdin,
//!   signals, `Poweroff`) and the agent's replies (output, exit status, errors), as
//!   length-prefixed frames with every bound checked.
//! - [`mux`]: the channel multiplexer, which offers the same hybrid-vsock interface at both
//!   ends of one byte stream (a virtio-serial port) where there is no vsock device. Host code
//!   cannot tell the two transports apart.
//! - The well-known ports and names both sides agree on (below).
//!
//! The agent's ready handshake: once it listens on [`AGENT_PORT`], the agent connects to host
//! port [`READY_PORT`], sends [`frame::Reply::Hello`] and closes.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod frame;
pub mod hybrid;
pub mod mux;
pub mod sock;

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
