//! The host–guest contract of nodeos-vm: everything both sides must agree on, defined once and
//! linked by both (the VMM, and the guest's init, statically: so std and libc only).
//!
//! Booting (docs/guest-contract.md):
//! - [`params`]: the `nodeos.*` kernel parameters, as a typed [`params::GuestParams`] the host
//!   writes and the guest parses, with the guest's checks on both sides.
//! - [`disks`]: which `/dev/vdX` each virtio-blk disk is (root image, upper layer, volumes).
//! - [`net`]: the addresses of user-mode networking (guest, gateway, DNS).
//! - [`arch`]: the guest architectures (x86-64, arm64).
//! - [`ports`]: the exit and boot-timer I/O ports and the bytes written to them (on arm64, to
//!   a virtio-serial port).
//! - [`status`]: the exit statuses both sides give a meaning (boot failure, timeout, ...).
//!
//! The agent link (docs/agent-protocol.md):
//! - [`hybrid`]: Firecracker's hybrid vsock handshake over a Unix socket (`CONNECT <port>\n` /
//!   `OK <host_port>\n`), spoken by our VMM's vsock device and by the channel multiplexer.
//! - [`frame`]: the agent protocol itself: the host's requests (`Hello`, `Exec`, stdin,
//!   signals, `Poweroff`, `Export`, the guest's environment) and the agent's replies (output,
//!   exit status, a folder's tree, errors), as length-prefixed frames with every bound checked.
//! - [`env`]: the guest's environment entries, checked, which travel in the ready handshake.
//! - [`rlimit`]: a container's process's resource limits, which travel in its `Exec`.
//! - [`mount`]: a container's own file systems (binds, `tmpfs`es), which travel there too.
//! - [`caps`]: a container's process's capability sets, which travel there too.
//! - [`seccomp`]: a container's process's seccomp filter, which travels there too.
//! - [`tree`]: the stream a folder's tree travels in (`Export`, for `:rw` volumes): folders,
//!   files as their data extents, symlinks, checked as it is decoded.
//! - [`mux`]: the channel multiplexer, which offers the same hybrid-vsock interface at both
//!   ends of one byte stream (a virtio-serial port) where there is no vsock device. Host code
//!   cannot tell the two transports apart.
//! - [`sock`]: non-blocking, SIGPIPE-free sends for both ends of a link.
//! - The well-known ports and names both sides agree on (below).
//!
//! And [`codec`], the one bounded little-endian codec of every binary message here and of the
//! guest's own spawn protocol.
//!
//! The agent's activation: once it listens on [`AGENT_PORT`], the guest writes
//! [`ports::TEMPLATE_READY`] to the boot-timer port and waits, at the point a template snapshot
//! is taken; the host connects and sends [`frame::Request::Activate`] ([`activation`]), which
//! the agent answers with [`frame::Reply::Hello`] once the guest is that VM.

pub mod activation;
pub mod arch;
pub mod caps;
pub mod codec;
pub mod disks;
pub mod env;
pub mod frame;
pub mod hybrid;
pub mod mount;
pub mod mux;
pub mod net;
pub mod params;
pub mod ports;
pub mod rlimit;
pub mod seccomp;
pub mod sock;
pub mod status;
pub mod tree;

/// The guest's context ID on our vsock device.
pub const GUEST_CID: u32 = 3;
/// The host's context ID (vsock's `VMADDR_CID_HOST`).
pub const HOST_CID: u32 = 2;
/// The guest agent listens here.
pub const AGENT_PORT: u32 = 1024;
/// Name of the virtio-serial port that carries the multiplexed link where there is no vsock
/// (the QEMU backend on hosts without vhost-vsock).
pub const SERIAL_PORT_NAME: &str = "org.nodeos.agent";
