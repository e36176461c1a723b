//! The virtio-net device over a [`Link`].
//!
//! Receive buffers are taken only when a frame is there for them, and transmit chains only
//! while the link has room, both through a [`Cursor`]. The device thread watches one epoll set:
//! the link for reading always, and for writing while frames wait to be written, so a backend
//! that cannot keep up pauses the guest's transmit queue instead of losing frames.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{Error, Link, ETH_HLEN, MAX_FRAME};
use crate::devices::persist::RestoreError;
use crate::devices::virtio::cursor::Cursor;
use crate::devices::virtio::{
    read_config_bytes, BackendWork, VirtioDevice, VirtioState, RING_FEATURES, VIRTIO_F_VERSION_1,
};
use crate::memory::GuestMemory;

pub const RX: usize = 0;
pub const TX: usize = 1;
pub const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr_v1`, in front of every frame in guest memory.
pub const HDR_LEN: usize = 12;
/// The header of every received frame: no checksum or segmentation information, and the one
/// buffer the frame is in (`num_buffers`, the last field).
const RX_HDR: [u8; HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
/// Frames (or transmit chains) handled per call, so the device thread comes back to its other
/// devices and the vCPUs to the transport; what is left is served on the next call.
const BATCH: usize = QUEUE_SIZE as usize;

pub struct Net<L: Link> {
    link: L,
    /// The descriptor the device thread watches: [`Link::fd`] inside.
    events: Epoll,
    /// `EPOLLOUT` is watched too: frames wait to be written, or chains to be sent.
    watch_out: bool,
    /// The link failed; transmitted frames are dropped from now on.
    down: bool,
    mac: [u8; 6],
    rx: Cursor,
    tx: Cursor,
    /// The frame of the transmit chain being served.
    frame: Vec<u8>,
}

/// What a snapshot keeps of the device: how far it took each queue's buffers (the transport's
/// queue state says how far it has seen them). The link is the restoring spec's; frames on
/// their way through the old one are lost, as on a wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub rx_cursor: u16,
    pub tx_cursor: u16,
}

/// What became of a receive chain offered a frame.
enum Delivery {
    /// The frame is in it: the used length.
    Done(u32),
    /// It cannot hold the frame; it may hold the next one.
    TooSmall,
    /// It cannot hold any frame: returned to the driver empty.
    Unusable,
}

impl<L: Link> Net<L> {
    pub fn new(link: L, mac: [u8; 6]) -> Result<Self, Error> {
        let events = Epoll::new().map_err(Error::Epoll)?;
        events
            .ctl(
                ControlOperation::Add,
                link.fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(Error::Epoll)?;
        Ok(Net {
            link,
            events,
            watch_out: false,
            down: false,
            mac,
            rx: Cursor::default(),
            tx: Cursor::default(),
            frame: Vec::with_capacity(MAX_FRAME),
        })
    }

    /// The link failed: it is no longer watched, and the guest's interface stays without it.
    fn link_down(&mut self, e: std::io::Error) {
        tracing::warn!("virtio-net: the network backend is gone, the guest is offline: {e}");
        let _ = self.events.ctl(
            ControlOperation::Delete,
            self.link.fd(),
            EpollEvent::default(),
        );
        self.down = true;
    }

    fn set_watch_out(&mut self, on: bool) {
        if on == self.watch_out || self.down {
            return;
        }
        let set = if on {
            EventSet::IN | EventSet::OUT
        } else {
            EventSet::IN
        };
        match self.events.ctl(
            ControlOperation::Modify,
            self.link.fd(),
            EpollEvent::new(set, 0),
        ) {
            Ok(()) => self.watch_out = on,
            Err(e) => tracing::warn!("virtio-net: cannot watch the backend: {e}"),
        }
    }

    /// Writes queued frames; `true` when all are out (or the link is gone).
    fn flush(&mut self) -> bool {
        if self.down {
            return true;
        }
        match self.link.flush() {
            Ok(done) => done,
            Err(e) => {
                self.link_down(e);
                true
            }
        }
    }

    /// Sends the transmit chains the link has room for. `Ok(true)` when it returned chains.
    fn serve_tx(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, virtio_queue::Error> {
        let mut used = false;
        let mut batch_full = true;
        for _ in 0..BATCH {
            if !self.down && !self.link.can_queue() {
                self.flush();
                if !self.down && !self.link.can_queue() {
                    batch_full = false;
                    break;
                }
            }
            let Some(chain) = self.tx.pop(queue, mem)? else {
                batch_full = false;
                break;
            };
            let head = chain.head_index();
            if self.read_frame(chain, mem) && !self.down {
                self.link.queue(&self.frame);
            }
            // A head beyond the queue cannot be returned; the driver lost that chain.
            if head < queue.size() {
                queue.add_used(mem, head, 0)?;
                used = true;
            }
        }
        let flushed = self.flush();
        if batch_full {
            // The transport serves the queue again; after `process_backend`, the link being
            // writable brings the device back.
            self.set_watch_out(true);
        } else {
            // Chains left for lack of room wait for the link to be writable: the transport
            // must not count them as new, or it would serve the queue again at once.
            self.tx.see_all(queue, mem)?;
            self.set_watch_out(!flushed);
        }
        Ok(used)
    }

    /// Reads the frame of a transmit chain into `self.frame`; `false` when the chain is
    /// malformed or the frame too short or too long, and dropped.
    fn read_frame(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> bool {
        let Ok(mut reader) = Reader::new(mem, chain) else {
            tracing::debug!("virtio-net: transmit chain outside guest memory");
            return false;
        };
        let Some(len) = reader.available_bytes().checked_sub(HDR_LEN) else {
            tracing::debug!("virtio-net: transmit chain shorter than its header");
            return false;
        };
        if !(ETH_HLEN..=MAX_FRAME).contains(&len) {
            tracing::debug!("virtio-net: dropped a transmitted frame of {len} bytes");
            return false;
        }
        // No offloads were offered: the header says nothing we act on.
        let mut hdr = [0u8; HDR_LEN];
        self.frame.resize(len, 0);
        reader.read_exact(&mut hdr).is_ok() && reader.read_exact(&mut self.frame).is_ok()
    }

    /// Moves received frames into receive buffers. Returns whether it used buffers, and
    /// whether a frame waits for buffers the driver has not given.
    fn fill_rx(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<(bool, bool), virtio_queue::Error> {
        let mut used = false;
        for _ in 0..BATCH {
            let frame = match self.link.recv() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok((used, false)),
                Err(e) => {
                    self.link_down(e);
                    return Ok((used, false));
                }
            };
            let Some(chain) = self.rx.pop(queue, mem)? else {
                return Ok((used, true));
            };
            let head = chain.head_index();
            if head >= queue.size() {
                continue;
            }
            match deliver(frame, chain, mem) {
                Delivery::Done(len) => {
                    queue.add_used(mem, head, len)?;
                    used = true;
                    self.link.consume();
                }
                Delivery::TooSmall => {
                    tracing::debug!(
                        "virtio-net: dropped a received frame of {} bytes, larger than the \
                         driver's buffer",
                        frame.len()
                    );
                    self.rx.unpop();
                    self.link.consume();
                }
                Delivery::Unusable => {
                    queue.add_used(mem, head, 0)?;
                    used = true;
                }
            }
        }
        Ok((used, false))
    }

    /// Drops received frames: the driver has no receive queue to put them in.
    fn drop_rx(&mut self) {
        for _ in 0..BATCH {
            match self.link.recv() {
                Ok(Some(_)) => self.link.consume(),
                Ok(None) => return,
                Err(e) => return self.link_down(e),
            }
        }
    }
}

/// Writes the header and `frame` into a receive chain.
fn deliver(frame: &[u8], chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> Delivery {
    let Ok(mut writer) = Writer::new(mem, chain) else {
        tracing::debug!("virtio-net: receive chain outside guest memory");
        return Delivery::Unusable;
    };
    let room = writer.available_bytes();
    if room < HDR_LEN + ETH_HLEN {
        tracing::debug!("virtio-net: receive chain of {room} writable bytes");
        return Delivery::Unusable;
    }
    if room < HDR_LEN + frame.len() {
        return Delivery::TooSmall;
    }
    if writer.write_all(&RX_HDR).is_err() || writer.write_all(frame).is_err() {
        return Delivery::Unusable;
    }
    // At most HDR_LEN + MAX_FRAME.
    Delivery::Done((HDR_LEN + frame.len()) as u32)
}

impl<L: Link> VirtioDevice for Net<L> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | RING_FEATURES | (1 << VIRTIO_NET_F_MAC)
    }

    /// `mac`, the only field: without `VIRTIO_NET_F_STATUS` the link is always up.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.mac, offset, data);
    }

    /// Never called: both queues are served by [`process_queue`](Self::process_queue).
    fn serve(&mut self, _: usize, _: DescriptorChain<&GuestMemory>, _: &GuestMemory) -> u32 {
        0
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, virtio_queue::Error> {
        match index {
            // New receive buffers: the device thread fills them from the backend next.
            RX => self.rx.see_all(queue, mem).map(|()| false),
            TX => self.serve_tx(queue, mem),
            _ => Ok(false),
        }
    }

    fn save_state(&self) -> Option<VirtioState> {
        Some(VirtioState::Net(NetState {
            rx_cursor: self.rx.position(),
            tx_cursor: self.tx.position(),
        }))
    }

    fn restore_state(&mut self, state: &VirtioState) -> Result<(), RestoreError> {
        match state {
            VirtioState::Net(s) => {
                self.rx = Cursor::at(s.rx_cursor);
                self.tx = Cursor::at(s.tx_cursor);
                Ok(())
            }
            other => Err(RestoreError::DeviceKind {
                saved: other.kind(),
                device: self.device_type(),
            }),
        }
    }

    fn reset(&mut self) {
        self.rx.reset();
        self.tx.reset();
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.events.as_raw_fd())
    }

    fn process_backend(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemory,
    ) -> Result<BackendWork, virtio_queue::Error> {
        let mut work = BackendWork::default();
        let [rxq, txq] = queues else {
            return Ok(work);
        };
        if txq.ready() && self.serve_tx(txq, mem)? {
            work.used |= 1 << TX;
        }
        if self.down {
            return Ok(work);
        }
        if !rxq.ready() {
            self.drop_rx();
            return Ok(work);
        }
        let (used, starved) = self.fill_rx(rxq, mem)?;
        if used {
            work.used |= 1 << RX;
        }
        if starved {
            work.starved = Some(RX);
        }
        Ok(work)
    }
}
