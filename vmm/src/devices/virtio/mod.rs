//! Virtio devices over the MMIO transport (virtio 1.x, "modern" only): the transport's register
//! block, the block and entropy devices, and the thread that services their queues.
//!
//! Division of work: vCPU threads handle register accesses ([`mmio::MmioTransport`] behind a
//! mutex on the MMIO bus); queue notifications reach the device thread ([`worker`]) through
//! ioeventfds, and completions reach the guest through irqfds, so neither crosses the VMM's
//! vCPU threads on the data path.

pub mod block;
#[cfg(any(target_arch = "aarch64", test, feature = "fuzzing"))]
pub mod console;
pub mod cursor;
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
pub mod kick;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;
pub mod worker;

use std::io;
use std::os::fd::RawFd;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use serde::{Deserialize, Serialize};

use crate::devices::persist::RestoreError;
use crate::memory::GuestMemory;

/// Feature bit 32: virtio 1.x semantics (the only ones this transport offers).
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// Feature bit 29: the driver says when it wants the next interrupt (`used_event`) and the
/// device when it wants the next notification (`avail_event`). Under nested virtualization every
/// exit and interrupt costs dearly, so this is the main lever on I/O latency.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
/// Feature bit 28: a request may be one ring entry pointing to a table of descriptors
/// (`virtio-queue`'s chain iterator follows such tables, with bounds and nesting checks).
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// Ring features every device here offers: the transport and `virtio-queue` implement them.
pub const RING_FEATURES: u64 = VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC;

/// A device behind the transport: what it offers and how it serves its queues.
pub trait VirtioDevice: Send {
    /// Virtio device ID (2: block, 4: entropy).
    fn device_type(&self) -> u32;
    /// Largest size of each queue; the number of queues is this slice's length.
    fn queue_max_sizes(&self) -> &[u16];
    /// Offered feature bits, `VIRTIO_F_VERSION_1` included.
    fn features(&self) -> u64;
    /// Reads device config space at `offset`; bytes beyond it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Serves one request, a descriptor chain from queue `index`; returns how many bytes it
    /// wrote for the driver. Every address and length in it comes from the guest.
    fn serve(
        &mut self,
        index: usize,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> u32;
    /// Serves the available buffers of queue `index`, each through [`serve`](Self::serve), and
    /// puts them on the used ring. A device that leaves buffers on purpose (receive buffers
    /// waiting for data) must override this and mark them seen with a
    /// [`cursor::Cursor`](cursor::Cursor): the transport serves a queue again for as long as
    /// it has buffers not handed out. `Ok(true)` when it added used buffers (the transport then
    /// asks the queue whether the driver wants an interrupt); `Err` when the queue itself is
    /// broken. Notification suppression is the transport's business.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, virtio_queue::Error> {
        serve_available(self, index, queue, mem)
    }
    /// What a snapshot keeps of the device besides its transport (crate::devices::persist);
    /// `None` for a device that cannot be saved.
    fn save_state(&self) -> Option<VirtioState> {
        None
    }
    /// Takes back `state` into this fresh device (before its transport is restored); refuses a
    /// state of another kind of device, or one it could not be in.
    fn restore_state(&mut self, state: &VirtioState) -> Result<(), RestoreError> {
        Err(RestoreError::DeviceKind {
            saved: state.kind(),
            device: self.device_type(),
        })
    }
    /// The driver set DRIVER_OK: the queues are set up and the device may start its backend.
    fn activate(&mut self) {}
    /// The driver reset the device.
    fn reset(&mut self) {}

    /// A descriptor the device thread watches (level-triggered) for work that does not come
    /// from the driver — a backend socket, or an epoll set of several — valid for the device's
    /// whole life. `None` (the default) for devices that only answer the driver.
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }
    /// Does the work [`backend_fd`](Self::backend_fd) announced, with all of the device's
    /// queues: typically moves data from the backend into receive buffers. Called only while
    /// the device is active. Devices with receive queues override [`process_queue`] for them
    /// so that a notification does not consume empty buffers.
    fn process_backend(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemory,
    ) -> Result<BackendWork, virtio_queue::Error> {
        Ok(BackendWork::default())
    }
}

/// The state of the device behind a transport, by kind of device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VirtioState {
    /// Nothing: the disk is the restoring spec's file, its capacity that file's.
    Block,
    Rng,
    Net(net::NetState),
    Vsock(vsock::VsockState),
    /// The arm64 guest's marks port.
    #[cfg(any(target_arch = "aarch64", test, feature = "fuzzing"))]
    Console(console::ConsoleState),
}

impl VirtioState {
    /// The device kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            VirtioState::Block => "virtio-blk",
            VirtioState::Rng => "virtio-rng",
            VirtioState::Net(_) => "virtio-net",
            VirtioState::Vsock(_) => "virtio-vsock",
            #[cfg(any(target_arch = "aarch64", test, feature = "fuzzing"))]
            VirtioState::Console(_) => "virtio-console",
        }
    }
}

/// Serves every available buffer of queue `index` through `device.serve` and puts it on the
/// used ring: the default [`VirtioDevice::process_queue`]. `Ok(true)` when it used any.
pub(crate) fn serve_available<D: VirtioDevice + ?Sized>(
    device: &mut D,
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemory,
) -> Result<bool, virtio_queue::Error> {
    let mut used = false;
    while let Some(chain) = queue.iter(mem)?.next() {
        let head = chain.head_index();
        let len = device.serve(index, chain, mem);
        // A head index beyond the queue cannot be returned; the driver lost that buffer.
        if head < queue.size() {
            queue.add_used(mem, head, len)?;
            used = true;
        }
    }
    Ok(used)
}

/// What one [`VirtioDevice::process_backend`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendWork {
    /// Bit `i` set: queue `i` got used buffers (the transport then interrupts if the driver
    /// wants it).
    pub used: u64,
    /// The backend has data but queue `i` has no buffers for it. The transport re-enables that
    /// queue's notifications; unless buffers arrived meanwhile, the device thread stops
    /// watching the backend until the driver's next notification (the backend descriptor
    /// would stay readable and spin).
    pub starved: Option<usize>,
}

impl BackendWork {
    /// The work of a pass that fills queue `queue` alone: whether it used buffers of it, and
    /// whether it was left with data and no buffers.
    pub fn on_queue(queue: usize, used: bool, starved: bool) -> BackendWork {
        BackendWork {
            used: if used { 1 << queue } else { 0 },
            starved: starved.then_some(queue),
        }
    }
}

/// Ties a queue's eventfd to guest writes of the queue's index to `addr` (KVM ioeventfd).
pub trait NotifyRegistrar: Send + Sync {
    fn register(&self, evt: &EventFd, addr: u64, queue: u32) -> io::Result<()>;
    fn unregister(&self, evt: &EventFd, addr: u64, queue: u32) -> io::Result<()>;
}

/// Copies the part of `config` that `offset`/`data` covers into `data`; the rest reads zero.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start < config.len() {
        let n = data.len().min(config.len() - start);
        data[..n].copy_from_slice(&config[start..start + n]);
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Guest memory and a driver-side queue for device tests.

    use virtio_bindings::virtio_mmio::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    use super::mmio::MmioTransport;
    use crate::devices::bus::BusDevice;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    use crate::memory::GuestMemory;

    pub const QUEUE_SIZE: u16 = 16;
    /// Guest memory size for tests: queue structures at 0, buffers from 0x1_0000.
    pub const MEM_SIZE: usize = 0x10_0000;

    pub fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    /// A descriptor: `(addr, len, writable)`.
    pub type Desc = (u64, u32, bool);

    /// Puts one chain of `descs` in the queue's available ring.
    pub fn add_chain(vq: &MockSplitQueue<'_, GuestMemory>, first_index: u16, descs: &[Desc]) {
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, writable))| {
                let mut flags = if writable {
                    VRING_DESC_F_WRITE as u16
                } else {
                    0
                };
                let last = i + 1 == descs.len();
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let next = if last { 0 } else { first_index + i as u16 + 1 };
                RawDescriptor::from(Descriptor::new(addr, len, flags, next))
            })
            .collect();
        vq.add_desc_chains(&raw, first_index).unwrap();
    }

    /// The used ring's entry `i`: (head index, length).
    pub fn used(vq: &MockSplitQueue<'_, GuestMemory>, i: usize) -> (u32, u32) {
        let e = vq.used().ring().ref_at(i).unwrap().load();
        (e.id(), e.len())
    }

    pub fn used_idx(vq: &MockSplitQueue<'_, GuestMemory>) -> u16 {
        vq.used().idx().load()
    }

    pub use super::harness::NoIoeventfd;

    /// Where a driver put one queue: `(size, descriptor table, available ring, used ring)`.
    pub type QueueLayout = (u16, u64, u64, u64);

    /// Takes `t` the way Linux does up to FEATURES_OK (VERSION_1 only) and sets up `queues`;
    /// the caller posts buffers and writes DRIVER_OK.
    pub fn configure(t: &mut MmioTransport, queues: &[QueueLayout]) {
        let mut wr = |offset: u32, value: u32| {
            t.write(u64::from(offset), &value.to_le_bytes());
        };
        wr(VIRTIO_MMIO_STATUS, 1);
        wr(VIRTIO_MMIO_STATUS, 3);
        wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(VIRTIO_MMIO_DRIVER_FEATURES, 1); // VERSION_1
        wr(VIRTIO_MMIO_STATUS, 0xb);
        for (i, &(size, desc, avail, used)) in queues.iter().enumerate() {
            wr(VIRTIO_MMIO_QUEUE_SEL, i as u32);
            wr(VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
            wr(VIRTIO_MMIO_QUEUE_DESC_LOW, desc as u32);
            wr(VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail as u32);
            wr(VIRTIO_MMIO_QUEUE_USED_LOW, used as u32);
            wr(VIRTIO_MMIO_QUEUE_READY, 1);
        }
    }

    /// DRIVER_OK: the device goes live.
    pub fn driver_ok(t: &mut MmioTransport) {
        t.write(u64::from(VIRTIO_MMIO_STATUS), &0xfu32.to_le_bytes());
        assert!(t.is_active());
    }
}
