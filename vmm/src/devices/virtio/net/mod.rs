//! virtio-net (virtio 1.2 §5.1): one receive and one transmit queue, a fixed MAC address, no
//! offloads. Frames reach the host through a [`Link`]: passt (user-mode networking, no
//! privileges; [`passt`], behind the [`guard`] on the host's loopback) or an existing TAP
//! interface ([`tap`]).
//!
//! Every frame in either direction is preceded in guest memory by the 12-byte
//! `virtio_net_hdr_v1`. Without `VIRTIO_NET_F_MRG_RXBUF` each receive chain holds one whole
//! frame; the Linux driver then posts buffers for 1518-byte frames, so larger ones are dropped,
//! as a NIC drops what its ring cannot hold.

mod device;
pub mod guard;
pub mod passt;
mod stream;
pub mod tap;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{OwnedFd, RawFd};

pub use device::{Net, NetState};
pub use passt::HelperThreads;
pub use stream::Stream;
pub use tap::Tap;

use super::VirtioDevice;
use crate::vm::NetSpec;

/// QEMU's default for user networking: locally administered, so it clashes with no vendor.
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The largest frame carried either way, Ethernet header included: Linux's `ETH_MAX_MTU`,
/// which is also the most passt accepts.
pub const MAX_FRAME: usize = 65535;
/// An Ethernet header: shorter frames are malformed.
pub const ETH_HLEN: usize = 14;

/// Where the device's frames go and come from. Both directions are non-blocking.
pub trait Link: Send {
    /// The descriptor that is readable when frames arrive and writable when queued frames can
    /// be written.
    fn fd(&self) -> RawFd;
    /// The next frame received, at least [`ETH_HLEN`] and at most [`MAX_FRAME`] bytes; it stays
    /// the next one until [`consume`](Self::consume). `Ok(None)` when none has arrived whole;
    /// `Err` when the link is gone for good.
    fn recv(&mut self) -> io::Result<Option<&[u8]>>;
    /// Drops the frame [`recv`](Self::recv) returned.
    fn consume(&mut self);
    /// Whether [`queue`](Self::queue) can take a frame of [`MAX_FRAME`] bytes now.
    fn can_queue(&self) -> bool;
    /// Queues `frame` for sending; dropped if there is no room.
    fn queue(&mut self, frame: &[u8]);
    /// Writes what is queued, as far as the backend takes it: `Ok(true)` when all of it went.
    /// `Err` when the link is gone for good.
    fn flush(&mut self) -> io::Result<bool>;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Passt(#[from] passt::Error),
    #[error(transparent)]
    Tap(#[from] tap::Error),
    #[error("cannot create the network device's epoll set")]
    Epoll(#[source] io::Error),
}

/// The host end of the guest's network link: passt's socket, with passt running until this is
/// dropped (or handed to the device, which then owns it), or a descriptor attached to the TAP
/// interface. A jailed VMM gets the descriptor from the process that opened it: it cannot reach
/// the host's network from its own namespace.
pub struct HostEnd {
    pub fd: OwnedFd,
    passt: Option<passt::Process>,
}

impl HostEnd {
    /// Starts passt (served by threads of this process, filtered or not) or attaches to the
    /// TAP interface, for `spec`.
    pub fn open(spec: &NetSpec, helpers: HelperThreads) -> Result<HostEnd, Error> {
        Ok(match spec {
            NetSpec::User {
                host_loopback,
                published,
            } => {
                let (sock, passt) = passt::spawn(host_loopback, published, helpers)?;
                HostEnd {
                    fd: sock.into(),
                    passt: Some(passt),
                }
            }
            NetSpec::Tap(name) => HostEnd {
                fd: Tap::open(name)?.into_file().into(),
                passt: None,
            },
        })
    }

    /// A host end another process opened (and where its passt runs).
    pub fn given(fd: OwnedFd) -> HostEnd {
        HostEnd { fd, passt: None }
    }
}

/// The guest's network device for `spec` over `end`.
pub fn attach(spec: &NetSpec, end: HostEnd, mac: [u8; 6]) -> Result<Box<dyn VirtioDevice>, Error> {
    Ok(match spec {
        NetSpec::User { .. } => {
            let stream = Stream::new(end.fd.into(), end.passt).map_err(passt::Error::Socket)?;
            Box::new(Net::new(stream, mac)?)
        }
        NetSpec::Tap(name) => Box::new(Net::new(Tap::attached(end.fd.into(), name), mac)?),
    })
}
