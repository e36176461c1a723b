//! The virtio-mmio transport, version 2 (virtio 1.x §4.2.2): the register block a driver uses
//! to discover a device, negotiate features, set up queues and drive the device status.
//!
//! Status follows the spec's initialization sequence (ACKNOWLEDGE, DRIVER, FEATURES_OK,
//! DRIVER_OK, one bit at a time; FAILED at any time); FEATURES_OK is refused for features the
//! device did not offer or without VERSION_1; queue registers are writable only between
//! FEATURES_OK and DRIVER_OK. Writing 0 resets the device: queue notifications are detached and
//! the device thread sees an inactive transport, so processing stops before the reset returns.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{
    BackendWork, NotifyRegistrar, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use crate::devices::bus::BusDevice;
use crate::devices::legacy::IrqLine;
use crate::devices::persist::{Persist, RestoreError};
use crate::memory::{GuestMemory, SharedMemory};
use crate::vm::VmExit;

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
pub const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the driver (not checked by Linux).
pub const VENDOR_ID: u32 = 0x5345_444f; // "ODES"
/// Offset of the QueueNotify register, where ioeventfds are attached.
pub const QUEUE_NOTIFY_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;
const CONFIG_OFFSET: u64 = VIRTIO_MMIO_CONFIG as u64;

const S_ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const S_DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
const S_FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const S_DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const S_FAILED: u32 = VIRTIO_CONFIG_S_FAILED;
const S_NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: SharedMemory,
    irq: IrqLine,
    notify: Arc<dyn NotifyRegistrar>,
    /// Guest-physical address of this device's QueueNotify register.
    notify_addr: u64,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// Queue eventfds are attached to QueueNotify in KVM.
    notify_attached: bool,
    /// DRIVER_OK accepted: the device thread may process queues.
    active: bool,
    /// Queues are served on the vCPU that notifies, before its write returns to the guest
    /// ([`serve_on_vcpu`](Self::serve_on_vcpu)), not by the device thread.
    on_vcpu: bool,
}

impl MmioTransport {
    /// A transport for `device` whose registers start at `base`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: SharedMemory,
        irq: IrqLine,
        notify: Arc<dyn NotifyRegistrar>,
        base: u64,
    ) -> std::io::Result<Self> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| {
                Queue::new(max)
                    .map_err(|e| std::io::Error::other(format!("invalid queue size {max}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let queue_evts = queues
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            irq,
            notify,
            notify_addr: base + QUEUE_NOTIFY_OFFSET,
            queues,
            queue_evts,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            notify_attached: false,
            active: false,
            on_vcpu: false,
        })
    }

    /// Serves this transport's queues, and then its backend, on the vCPU that notifies, within
    /// its QueueNotify write: for a device whose requests must take effect before the guest
    /// goes on (the marks port of an arm64 guest, which powers off right after writing its exit
    /// status). No ioeventfd is attached; the device thread never sees a notification, and so
    /// never watches the backend either.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub fn serve_on_vcpu(mut self) -> Self {
        self.on_vcpu = true;
        self
    }

    /// The eventfd signalled when the guest notifies queue `i` (watched by the device thread).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The state of the device behind the transport, for a snapshot (`None`: it cannot be
    /// saved).
    pub fn device_state(&self) -> Option<super::VirtioState> {
        self.device.save_state()
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The queues as the driver set them up.
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn has_status(&self, set: u32, clear: u32) -> bool {
        self.status & set == set && self.status & clear == 0
    }

    /// Serves queue `index` after a notification; called by the device thread. Returns `true`
    /// when the driver added buffers after the device re-enabled notifications: the caller
    /// calls again (after dropping the lock, so vCPUs get at the registers meanwhile), because
    /// the driver may have seen notifications disabled and not notified.
    pub fn process_queue(&mut self, index: usize) -> bool {
        if !self.active || index >= self.queues.len() {
            return false;
        }
        match self.serve_queue(index) {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(
                    device = self.device.device_type(),
                    queue = index,
                    "virtio queue broken, device needs reset: {e}"
                );
                self.fail();
                false
            }
        }
    }

    /// One pass of the usual loop: notifications off, serve, interrupt if the driver wants
    /// one, notifications on and re-check the available ring.
    fn serve_queue(&mut self, index: usize) -> Result<bool, virtio_queue::Error> {
        let queue = &mut self.queues[index];
        if !queue.ready() {
            return Ok(false);
        }
        let mem: &GuestMemory = &self.mem;
        // Without EVENT_IDX this sets VRING_USED_F_NO_NOTIFY; with it, the driver stops
        // notifying by itself once past the `avail_event` last published.
        queue.disable_notification(mem)?;
        let used = self.device.process_queue(index, queue, mem)?;
        // With EVENT_IDX, only when the used index passed the driver's `used_event`.
        let interrupt = used && queue.needs_notification(mem)?;
        // Publishes `avail_event` (or clears NO_NOTIFY), then reads the available index again.
        let more = queue.enable_notification(mem)?;
        if interrupt {
            self.raise(VIRTIO_MMIO_INT_VRING);
        }
        Ok(more)
    }

    /// The device's backend descriptor, watched by the device thread.
    pub fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.backend_fd()
    }

    /// Lets the device do the work its backend descriptor announced. Returns `false` when the
    /// device thread should stop watching that descriptor until the next queue notification:
    /// the device is inactive, broken, or waiting for the driver's buffers.
    pub fn process_backend(&mut self) -> bool {
        if !self.active {
            return false;
        }
        match self.serve_backend() {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(
                    device = self.device.device_type(),
                    "virtio queue broken, device needs reset: {e}"
                );
                self.fail();
                false
            }
        }
    }

    fn serve_backend(&mut self) -> Result<bool, virtio_queue::Error> {
        let mem = self.mem.clone();
        let mem: &GuestMemory = &mem;
        loop {
            let BackendWork { used, starved } =
                self.device.process_backend(&mut self.queues, mem)?;
            let mut interrupt = false;
            for (i, queue) in self.queues.iter_mut().enumerate().take(64) {
                if used & (1 << i) != 0 && queue.needs_notification(mem)? {
                    interrupt = true;
                }
            }
            if interrupt {
                self.raise(VIRTIO_MMIO_INT_VRING);
            }
            let Some(queue) = starved.and_then(|i| self.queues.get_mut(i)) else {
                return Ok(true);
            };
            // With EVENT_IDX the driver notifies only when it passes `avail_event`: publish
            // it now, or it would never tell us about the buffers it adds next.
            if !queue.enable_notification(mem)? {
                return Ok(false);
            }
        }
    }

    /// Queue `index` has buffers: served now on the vCPU ([`serve_on_vcpu`](Self::serve_on_vcpu)),
    /// or passed to the device thread through the queue's eventfd.
    fn notified(&mut self, index: usize) {
        /// Passes over a queue whose driver keeps adding buffers: the rest waits for its next
        /// notification, so a guest cannot hold its vCPU here.
        const MAX_PASSES: usize = 16;
        if self.on_vcpu {
            for _ in 0..MAX_PASSES {
                if !self.process_queue(index) {
                    break;
                }
            }
            // And what the device has for the driver now (the device thread, which would
            // otherwise do it, never hears of this transport).
            self.process_backend();
        } else if let Some(evt) = self.queue_evts.get(index) {
            let _ = evt.write(1);
        }
    }

    fn raise(&mut self, reason: u32) {
        self.interrupt_status |= reason;
        self.irq.trigger();
    }

    /// The device cannot go on until the driver resets it.
    fn fail(&mut self) {
        self.active = false;
        self.detach_notifications();
        self.status |= S_NEEDS_RESET;
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    fn attach_notifications(&mut self) {
        if self.on_vcpu {
            return;
        }
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = self.notify.register(evt, self.notify_addr, i as u32) {
                // QueueNotify writes then exit to the VMM, which signals the eventfd itself.
                tracing::debug!("no ioeventfd for queue {i} at {:#x}: {e}", self.notify_addr);
            }
        }
        self.notify_attached = true;
    }

    fn detach_notifications(&mut self) {
        if !self.notify_attached {
            return;
        }
        for (i, evt) in self.queue_evts.iter().enumerate() {
            let _ = self.notify.unregister(evt, self.notify_addr, i as u32);
        }
        self.notify_attached = false;
    }

    fn activate(&mut self) -> bool {
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&*self.mem) {
                tracing::warn!(
                    device = self.device.device_type(),
                    "queue {i} is outside guest memory or misaligned"
                );
                return false;
            }
        }
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        for q in &mut self.queues {
            q.set_event_idx(event_idx);
        }
        self.attach_notifications();
        self.active = true;
        self.device.activate();
        // Serve whatever the driver queued before DRIVER_OK.
        for i in 0..self.queues.len() {
            self.notified(i);
        }
        true
    }

    fn reset(&mut self) {
        self.active = false;
        self.detach_notifications();
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        // Drop notifications that arrived before the reset.
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt_status = 0;
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & S_FAILED != 0 {
            self.status |= S_FAILED;
            return;
        }
        let added = value & !self.status;
        if value & self.status != self.status || added.count_ones() != 1 {
            tracing::debug!(
                "virtio-mmio: ignored status {value:#x} (was {:#x})",
                self.status
            );
            return;
        }
        let before = self.status & !S_NEEDS_RESET;
        match added {
            S_ACK if before == 0 => self.status |= S_ACK,
            S_DRIVER if before == S_ACK => self.status |= S_DRIVER,
            S_FEATURES_OK if before == S_ACK | S_DRIVER => {
                let offered = self.device.features();
                if self.driver_features & !offered == 0
                    && self.driver_features & VIRTIO_F_VERSION_1 != 0
                {
                    self.status |= S_FEATURES_OK;
                } else {
                    tracing::warn!(
                        "virtio-mmio: driver features {:#x} not a subset of {offered:#x} with VERSION_1",
                        self.driver_features
                    );
                }
            }
            S_DRIVER_OK if before == S_ACK | S_DRIVER | S_FEATURES_OK => {
                self.status |= S_DRIVER_OK;
                if !self.activate() {
                    self.fail();
                }
            }
            _ => tracing::debug!(
                "virtio-mmio: ignored status {value:#x} (was {:#x})",
                self.status
            ),
        }
    }

    fn read_register(&self, offset: u32) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            // No shared memory regions: a length of all ones means "absent".
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            _ => {
                tracing::trace!("virtio-mmio: read of register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        let queue_config = self.has_status(S_FEATURES_OK, S_DRIVER_OK | S_FAILED);
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                if self.has_status(S_DRIVER, S_FEATURES_OK | S_FAILED) {
                    match self.driver_features_sel {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | u64::from(value)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                        }
                        _ => {}
                    }
                } else {
                    tracing::debug!(
                        "virtio-mmio: driver features written in status {:#x}",
                        self.status
                    );
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => {
                if !queue_config {
                    tracing::debug!(
                        "virtio-mmio: queue register {offset:#x} written in status {:#x}",
                        self.status
                    );
                    return;
                }
                let Some(q) = self.selected_queue() else {
                    return;
                };
                match offset {
                    VIRTIO_MMIO_QUEUE_NUM => {
                        // Invalid sizes (zero, not a power of two, over the max) are refused
                        // by the queue; is_valid at DRIVER_OK catches what remains.
                        q.set_size(value as u16);
                    }
                    VIRTIO_MMIO_QUEUE_READY => q.set_ready(value == 1),
                    VIRTIO_MMIO_QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
                    VIRTIO_MMIO_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
                    VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(value), None),
                    VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(value)),
                    VIRTIO_MMIO_QUEUE_USED_LOW => q.set_used_ring_address(Some(value), None),
                    VIRTIO_MMIO_QUEUE_USED_HIGH => q.set_used_ring_address(None, Some(value)),
                    _ => unreachable!(),
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                // Only reached when no ioeventfd caught the write.
                if self.active {
                    self.notified(value as usize);
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => self.set_status(value),
            _ => tracing::trace!("virtio-mmio: write of register {offset:#x}"),
        }
    }
}

/// What a transport runs on besides its state: [`MmioTransport::new`]'s arguments, the device
/// a fresh one of the saved type.
pub struct TransportArgs {
    pub device: Box<dyn VirtioDevice>,
    pub mem: SharedMemory,
    pub irq: IrqLine,
    pub notify: Arc<dyn NotifyRegistrar>,
    pub base: u64,
}

/// The transport's registers as the driver left them, and its queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub status: u32,
    pub interrupt_status: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueRegisters>,
}

/// One queue: its geometry as the driver set it up, and how far the device got in its rings
/// (virtio-queue's `QueueState`, which has no serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRegisters {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
}

impl From<QueueState> for QueueRegisters {
    fn from(q: QueueState) -> Self {
        QueueRegisters {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

impl From<&QueueRegisters> for QueueState {
    fn from(q: &QueueRegisters) -> Self {
        QueueState {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

impl Persist for MmioTransport {
    type State = TransportState;
    type Args = TransportArgs;

    fn save(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            status: self.status,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
        }
    }

    /// A transport that was live (DRIVER_OK, not broken) is activated again as at DRIVER_OK:
    /// its queues are checked against guest memory, its notifications attached, its device
    /// activated, and every queue served once (a notification the pause caught is not lost).
    fn restore(args: TransportArgs, state: &TransportState) -> Result<Self, RestoreError> {
        let TransportArgs {
            device,
            mem,
            irq,
            notify,
            base,
        } = args;
        let mut t =
            MmioTransport::new(device, mem, irq, notify, base).map_err(RestoreError::Transport)?;
        let device = t.device.device_type();
        if state.device_type != device {
            return Err(RestoreError::DeviceType {
                saved: state.device_type,
                device,
            });
        }
        if state.queues.len() != t.queues.len() {
            return Err(RestoreError::QueueCount {
                saved: state.queues.len(),
                device: t.queues.len(),
            });
        }
        let offered = t.device.features();
        if state.driver_features & !offered != 0 {
            return Err(RestoreError::Features {
                driver: state.driver_features,
                offered,
            });
        }
        for (index, (queue, saved)) in t.queues.iter_mut().zip(&state.queues).enumerate() {
            if saved.max_size != queue.max_size() {
                return Err(RestoreError::QueueMaxSize {
                    index,
                    saved: saved.max_size,
                    max: queue.max_size(),
                });
            }
            *queue = Queue::try_from(QueueState::from(saved))
                .map_err(|source| RestoreError::Queue { index, source })?;
        }
        t.device_features_sel = state.device_features_sel;
        t.driver_features_sel = state.driver_features_sel;
        t.driver_features = state.driver_features;
        t.queue_sel = state.queue_sel;
        t.status = state.status;
        t.interrupt_status = state.interrupt_status;
        t.config_generation = state.config_generation;
        if t.has_status(S_DRIVER_OK, S_NEEDS_RESET) && !t.activate() {
            t.fail();
        }
        Ok(t)
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
        } else if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&self.read_register(offset as u32).to_le_bytes());
        } else {
            tracing::debug!(
                "virtio-mmio: {}-byte read of register {offset:#x}",
                data.len()
            );
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmExit> {
        if offset >= CONFIG_OFFSET {
            // Neither device has writable config fields.
            tracing::trace!("virtio-mmio: config write at {offset:#x} ignored");
        } else if let (Ok(bytes), true) = (<[u8; 4]>::try_from(data), offset.is_multiple_of(4)) {
            self.write_register(offset as u32, u32::from_le_bytes(bytes));
        } else {
            tracing::debug!(
                "virtio-mmio: {}-byte write of register {offset:#x}",
                data.len()
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::test_util::{self, add_chain};
    use std::sync::Mutex;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    /// A device with two queues that counts how it is used.
    struct Dummy {
        processed: Arc<Mutex<Vec<usize>>>,
        resets: Arc<Mutex<u32>>,
    }

    const DUMMY_FEATURES: u64 = VIRTIO_F_VERSION_1 | 0b101;

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn features(&self) -> u64 {
            DUMMY_FEATURES
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], offset, data);
        }
        fn serve(
            &mut self,
            _index: usize,
            _chain: virtio_queue::DescriptorChain<&crate::memory::GuestMemory>,
            _mem: &crate::memory::GuestMemory,
        ) -> u32 {
            unreachable!("Dummy records queues in process_queue and serves no chain")
        }
        fn process_queue(
            &mut self,
            index: usize,
            _q: &mut Queue,
            _m: &crate::memory::GuestMemory,
        ) -> Result<bool, virtio_queue::Error> {
            self.processed.lock().unwrap().push(index);
            Ok(index == 0)
        }
        fn reset(&mut self) {
            *self.resets.lock().unwrap() += 1;
        }
    }

    #[derive(Default)]
    struct Registrations(Mutex<Vec<(bool, u64, u32)>>);

    impl NotifyRegistrar for Registrations {
        fn register(&self, _evt: &EventFd, addr: u64, queue: u32) -> std::io::Result<()> {
            self.0.lock().unwrap().push((true, addr, queue));
            Ok(())
        }
        fn unregister(&self, _evt: &EventFd, addr: u64, queue: u32) -> std::io::Result<()> {
            self.0.lock().unwrap().push((false, addr, queue));
            Ok(())
        }
    }

    struct Fixture {
        t: MmioTransport,
        regs: Arc<Registrations>,
        irq: EventFd,
        processed: Arc<Mutex<Vec<usize>>>,
        resets: Arc<Mutex<u32>>,
    }

    const BASE: u64 = 0xd000_0000;

    fn fixture() -> Fixture {
        let processed = Arc::new(Mutex::new(Vec::new()));
        let resets = Arc::new(Mutex::new(0));
        let regs = Arc::new(Registrations::default());
        let irq = IrqLine::new().unwrap();
        let irq_evt = irq.0.try_clone().unwrap();
        let dev = Dummy {
            processed: processed.clone(),
            resets: resets.clone(),
        };
        let t = MmioTransport::new(
            Box::new(dev),
            Arc::new(test_util::memory()),
            irq,
            regs.clone(),
            BASE,
        )
        .unwrap();
        Fixture {
            t,
            regs,
            irq: irq_evt,
            processed,
            resets,
        }
    }

    fn rd(t: &mut MmioTransport, offset: u32) -> u32 {
        let mut d = [0u8; 4];
        t.read(u64::from(offset), &mut d);
        u32::from_le_bytes(d)
    }

    fn wr(t: &mut MmioTransport, offset: u32, value: u32) {
        assert_eq!(t.write(u64::from(offset), &value.to_le_bytes()), None);
    }

    /// The Linux driver's sequence up to FEATURES_OK, then a valid queue 0.
    fn negotiate(t: &mut MmioTransport, features: u64) {
        wr(t, VIRTIO_MMIO_STATUS, 0);
        wr(t, VIRTIO_MMIO_STATUS, S_ACK);
        wr(t, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        wr(t, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    }

    /// [`negotiate`], [`setup_queue0`], then DRIVER_OK.
    fn bring_up(t: &mut MmioTransport) {
        negotiate(t, VIRTIO_F_VERSION_1);
        setup_queue0(t);
        wr(
            t,
            VIRTIO_MMIO_STATUS,
            S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
        );
    }

    fn setup_queue0(t: &mut MmioTransport) {
        wr(t, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 16);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
        wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
        wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
        wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }

    #[test]
    fn identification_registers() {
        let mut f = fixture();
        let t = &mut f.t;
        assert_eq!(rd(t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(rd(t, VIRTIO_MMIO_DEVICE_ID), 42);
        assert_eq!(rd(t, VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
        assert_eq!(rd(t, VIRTIO_MMIO_CONFIG_GENERATION), 0);
        assert_eq!(rd(t, VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
        assert_eq!(
            rd(t, 0x0fc + 4),
            0x0403_0201,
            "config space starts at 0x100"
        );
        let mut b = [0u8; 2];
        t.read(0x106, &mut b);
        assert_eq!(b, [7, 8]);
        t.read(0x107, &mut b);
        assert_eq!(b, [8, 0], "past the config reads zero");
        let mut odd = [0xffu8; 2];
        t.read(u64::from(VIRTIO_MMIO_MAGIC_VALUE), &mut odd);
        assert_eq!(odd, [0, 0], "registers take 32-bit accesses only");
    }

    #[test]
    fn feature_select_banks() {
        let mut f = fixture();
        let t = &mut f.t;
        wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(t, VIRTIO_MMIO_DEVICE_FEATURES), 0b101);
        wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(t, VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
        wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
        assert_eq!(rd(t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    }

    #[test]
    fn status_follows_the_init_sequence() {
        let mut f = fixture();
        let t = &mut f.t;
        // Skipping a step is refused.
        wr(t, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER);
        assert_eq!(rd(t, VIRTIO_MMIO_STATUS), 0);
        wr(t, VIRTIO_MMIO_STATUS, S_ACK);
        wr(t, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
        assert_eq!(rd(t, VIRTIO_MMIO_STATUS), S_ACK);
        wr(t, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER);
        // Features written before DRIVER would be ignored; now they count.
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        wr(t, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
        assert_eq!(rd(t, VIRTIO_MMIO_STATUS), S_ACK | S_DRIVER | S_FEATURES_OK);
        // Clearing a bit without a reset is refused.
        wr(t, VIRTIO_MMIO_STATUS, S_ACK);
        assert_eq!(rd(t, VIRTIO_MMIO_STATUS), S_ACK | S_DRIVER | S_FEATURES_OK);
        // FAILED sticks at any time.
        wr(t, VIRTIO_MMIO_STATUS, S_FAILED);
        assert_ne!(rd(t, VIRTIO_MMIO_STATUS) & S_FAILED, 0);
        wr(t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(rd(t, VIRTIO_MMIO_STATUS), 0);
    }

    #[test]
    fn features_ok_needs_a_subset_with_version_1() {
        let mut f = fixture();
        negotiate(&mut f.t, 0b101); // no VERSION_1
        assert_eq!(rd(&mut f.t, VIRTIO_MMIO_STATUS) & S_FEATURES_OK, 0);
        negotiate(&mut f.t, VIRTIO_F_VERSION_1 | 0b10); // bit 1 not offered
        assert_eq!(rd(&mut f.t, VIRTIO_MMIO_STATUS) & S_FEATURES_OK, 0);
        negotiate(&mut f.t, VIRTIO_F_VERSION_1 | 0b100);
        assert_ne!(rd(&mut f.t, VIRTIO_MMIO_STATUS) & S_FEATURES_OK, 0);
        // Features are frozen after FEATURES_OK.
        wr(&mut f.t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr(&mut f.t, VIRTIO_MMIO_DRIVER_FEATURES, 0b1);
        assert_eq!(f.t.driver_features, VIRTIO_F_VERSION_1 | 0b100);
    }

    #[test]
    fn queue_registers() {
        let mut f = fixture();
        let t = &mut f.t;
        // Before FEATURES_OK queue set-up is ignored.
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 4);
        assert_eq!(t.queues[0].size(), 16);
        negotiate(t, VIRTIO_F_VERSION_1);
        wr(t, VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX), 8);
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 4);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x1);
        wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2002);
        wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3004);
        wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(rd(t, VIRTIO_MMIO_QUEUE_READY), 1);
        let q = &t.queues[1];
        assert_eq!(
            (q.size(), q.desc_table(), q.avail_ring(), q.used_ring()),
            (4, 0x1_0000_1000, 0x2002, 0x3004)
        );
        // Invalid size and alignment are refused.
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 3);
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 16);
        wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3001);
        assert_eq!((t.queues[1].size(), t.queues[1].used_ring()), (4, 0x3004));
        // A queue that does not exist.
        wr(t, VIRTIO_MMIO_QUEUE_SEL, 2);
        assert_eq!(rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
        wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(rd(t, VIRTIO_MMIO_QUEUE_READY), 0);
    }

    #[test]
    fn a_transport_served_on_the_vcpu_serves_within_the_notify_write() {
        let mut f = fixture();
        f.t = f.t.serve_on_vcpu();
        bring_up(&mut f.t);
        assert!(f.t.is_active());
        assert!(f.regs.0.lock().unwrap().is_empty(), "no ioeventfd attached");
        // DRIVER_OK served what was queued before it; each notification is served at once.
        assert_eq!(*f.processed.lock().unwrap(), vec![0]);
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert_eq!(*f.processed.lock().unwrap(), vec![0, 0]);
        assert_eq!(
            f.t.queue_evts()[0].read().ok(),
            None,
            "nothing for the device thread"
        );
        // A queue that is not set up, or does not exist, is not served.
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_NOTIFY, 7);
        assert_eq!(f.processed.lock().unwrap().len(), 2);
    }

    #[test]
    fn driver_ok_attaches_notifications_and_reset_detaches() {
        let mut f = fixture();
        bring_up(&mut f.t);
        assert!(f.t.is_active());
        let notify = BASE + 0x50;
        assert_eq!(
            *f.regs.0.lock().unwrap(),
            vec![(true, notify, 0), (true, notify, 1)]
        );
        // Queue set-up is frozen after DRIVER_OK.
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_NUM, 2);
        assert_eq!(f.t.queues[0].size(), 16);

        // A notification reaches the device; used buffers raise the interrupt.
        f.t.process_queue(0);
        assert_eq!(*f.processed.lock().unwrap(), vec![0]);
        assert_eq!(
            rd(&mut f.t, VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_VRING
        );
        assert!(f.irq.read().unwrap() > 0);
        wr(&mut f.t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(rd(&mut f.t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);

        // The fallback path: a QueueNotify write that reached the VMM signals the eventfd.
        let _ = f.t.queue_evts()[1].read();
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
        assert_eq!(f.t.queue_evts()[1].read().unwrap(), 1);

        wr(&mut f.t, VIRTIO_MMIO_STATUS, 0);
        assert!(!f.t.is_active());
        assert_eq!(
            *f.resets.lock().unwrap(),
            2,
            "negotiate() starts with a reset too"
        );
        assert_eq!(
            f.regs.0.lock().unwrap()[2..],
            [(false, notify, 0), (false, notify, 1)]
        );
        assert!(!f.t.queues[0].ready());
        assert_eq!(f.t.queues[0].size(), 16);
        // After a reset nothing is processed and notifications are ignored.
        f.t.process_queue(0);
        assert_eq!(f.processed.lock().unwrap().len(), 1);
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(
            f.t.queue_evts()[0].read().is_err(),
            "no notification after reset"
        );
    }

    #[test]
    fn invalid_queue_at_driver_ok_needs_reset() {
        let mut f = fixture();
        negotiate(&mut f.t, VIRTIO_F_VERSION_1);
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_SEL, 0);
        // Used ring beyond guest memory.
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x4000_0000);
        wr(&mut f.t, VIRTIO_MMIO_QUEUE_READY, 1);
        wr(
            &mut f.t,
            VIRTIO_MMIO_STATUS,
            S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
        );
        assert!(!f.t.is_active());
        assert_ne!(rd(&mut f.t, VIRTIO_MMIO_STATUS) & S_NEEDS_RESET, 0);
        assert_eq!(
            rd(&mut f.t, VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_CONFIG
        );
        // A reset recovers.
        bring_up(&mut f.t);
        assert!(f.t.is_active());
        assert_eq!(
            rd(&mut f.t, VIRTIO_MMIO_STATUS),
            S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK
        );
    }

    /// The used ring of the queues below. Not the mock's: in virtio-queue 0.18 `MockSplitQueue`
    /// places its used ring over the end of its available ring, `used_event` included.
    const USED_RING: u64 = 0x800;

    fn used_idx(mem: &GuestMemory) -> u16 {
        mem.read_obj(GuestAddress(USED_RING + 2)).unwrap()
    }

    /// A transport for `dev` whose queue 0 is `vq`'s descriptor table and available ring and
    /// [`USED_RING`], taken to DRIVER_OK with `features`. Returns it with the eventfd behind
    /// its interrupt line.
    fn transport_on(
        dev: Box<dyn VirtioDevice>,
        mem: &SharedMemory,
        vq: &MockSplitQueue<'_, GuestMemory>,
        features: u64,
    ) -> (MmioTransport, EventFd) {
        let irq = IrqLine::new().unwrap();
        let irq_evt = irq.0.try_clone().unwrap();
        let regs = Arc::new(Registrations::default());
        let mut t = MmioTransport::new(dev, mem.clone(), irq, regs, BASE).unwrap();
        negotiate(&mut t, features);
        let addr = |a: GuestAddress| a.raw_value() as u32;
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr(
            &mut t,
            VIRTIO_MMIO_QUEUE_NUM,
            u32::from(test_util::QUEUE_SIZE),
        );
        wr(
            &mut t,
            VIRTIO_MMIO_QUEUE_DESC_LOW,
            addr(vq.desc_table_addr()),
        );
        wr(&mut t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, addr(vq.avail_addr()));
        wr(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, USED_RING as u32);
        wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        wr(
            &mut t,
            VIRTIO_MMIO_STATUS,
            S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK,
        );
        assert!(t.is_active());
        (t, irq_evt)
    }

    /// Where the driver writes `used_event` (after the available ring).
    fn used_event_addr(vq: &MockSplitQueue<'_, GuestMemory>) -> GuestAddress {
        vq.avail_addr()
            .unchecked_add(4 + 2 * u64::from(test_util::QUEUE_SIZE))
    }

    /// Where the device writes `avail_event` (after the used ring).
    fn avail_event_addr() -> GuestAddress {
        GuestAddress(USED_RING + 4 + 8 * u64::from(test_util::QUEUE_SIZE))
    }

    fn interrupts(irq: &EventFd) -> u64 {
        irq.read().unwrap_or(0)
    }

    /// A live transport's registers and queues come back as they were, on a fresh device, and
    /// its queues go on from where they were; a state for another device is refused.
    #[test]
    fn state_round_trips() {
        use crate::devices::persist::through_json;
        let mem: SharedMemory = Arc::new(test_util::memory());
        let vq = MockSplitQueue::new(&*mem, test_util::QUEUE_SIZE);
        let features = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX;
        let (mut t, _irq) = transport_on(Box::new(Rng::new()), &mem, &vq, features);
        let buf = |i: u16| (0x1_0000 + u64::from(i) * 0x100, 16, true);
        add_chain(&vq, 0, &[buf(0)]);
        add_chain(&vq, 1, &[buf(1)]);
        t.process_queue(0);
        wr(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        let state = through_json(&t.save());
        assert_eq!(state.queues[0].next_used, 2);
        assert_eq!(state.interrupt_status, VIRTIO_MMIO_INT_VRING);

        let regs = Arc::new(Registrations::default());
        let args = |device: Box<dyn VirtioDevice>, regs: Arc<Registrations>| TransportArgs {
            device,
            mem: mem.clone(),
            irq: IrqLine::new().unwrap(),
            notify: regs,
            base: BASE,
        };
        let rng = Rng::restore((), &Rng::new().save()).unwrap();
        let mut restored =
            MmioTransport::restore(args(Box::new(rng), regs.clone()), &state).unwrap();
        assert_eq!(restored.save(), state);
        assert!(restored.is_active());
        assert_eq!(
            *regs.0.lock().unwrap(),
            [(true, BASE + QUEUE_NOTIFY_OFFSET, 0)]
        );
        for reg in [
            VIRTIO_MMIO_STATUS,
            VIRTIO_MMIO_INTERRUPT_STATUS,
            VIRTIO_MMIO_DEVICE_FEATURES,
            VIRTIO_MMIO_QUEUE_READY,
        ] {
            assert_eq!(rd(&mut restored, reg), rd(&mut t, reg), "register {reg:#x}");
        }
        add_chain(&vq, 2, &[buf(2)]);
        restored.process_queue(0);
        assert_eq!(used_idx(&mem), 3, "the used ring goes on");

        let other = fixture().t.save();
        let err = MmioTransport::restore(args(Box::<Rng>::default(), regs.clone()), &other).err();
        assert!(
            matches!(
                err,
                Some(RestoreError::DeviceType {
                    saved: 42,
                    device: 4
                })
            ),
            "{err:?}"
        );
        let mut bad = state.clone();
        bad.queues[0].size = 3; // not a power of two
        let err = MmioTransport::restore(args(Box::<Rng>::default(), regs), &bad).err();
        assert!(
            matches!(err, Some(RestoreError::Queue { index: 0, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn event_idx_interrupts_only_when_the_driver_asks() {
        let mem: SharedMemory = Arc::new(test_util::memory());
        let vq = MockSplitQueue::new(&*mem, test_util::QUEUE_SIZE);
        let features = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX;
        let (mut t, irq) = transport_on(Box::new(Rng::new()), &mem, &vq, features);
        let buf = |i: u16| (0x1_0000 + u64::from(i) * 0x100, 16, true);

        // used_event 0: an interrupt once the used index passes 0.
        mem.write_obj(0u16, used_event_addr(&vq)).unwrap();
        add_chain(&vq, 0, &[buf(0)]);
        assert!(!t.process_queue(0));
        assert_eq!((used_idx(&mem), interrupts(&irq)), (1, 1));
        // The device asks to be notified when the driver makes buffer 1 available.
        assert_eq!(mem.read_obj::<u16>(avail_event_addr()).unwrap(), 1);

        // used_event 2: nothing at used index 2, an interrupt at 3.
        mem.write_obj(2u16, used_event_addr(&vq)).unwrap();
        add_chain(&vq, 1, &[buf(1)]);
        assert!(!t.process_queue(0));
        assert_eq!((used_idx(&mem), interrupts(&irq)), (2, 0));
        add_chain(&vq, 2, &[buf(2)]);
        assert!(!t.process_queue(0));
        assert_eq!((used_idx(&mem), interrupts(&irq)), (3, 1));
        assert_eq!(mem.read_obj::<u16>(avail_event_addr()).unwrap(), 3);

        // A batch that steps over used_event interrupts once; a stale used_event not at all.
        mem.write_obj(3u16, used_event_addr(&vq)).unwrap();
        add_chain(&vq, 3, &[buf(3)]);
        add_chain(&vq, 4, &[buf(4)]);
        assert!(!t.process_queue(0));
        assert_eq!((used_idx(&mem), interrupts(&irq)), (5, 1));
        add_chain(&vq, 5, &[buf(5)]);
        assert!(!t.process_queue(0));
        assert_eq!((used_idx(&mem), interrupts(&irq)), (6, 0));
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_VRING
        );
    }

    #[test]
    fn without_event_idx_every_batch_interrupts() {
        let mem: SharedMemory = Arc::new(test_util::memory());
        let vq = MockSplitQueue::new(&*mem, test_util::QUEUE_SIZE);
        let (mut t, irq) = transport_on(Box::new(Rng::new()), &mem, &vq, VIRTIO_F_VERSION_1);
        // A used_event the driver did not negotiate is ignored.
        mem.write_obj(100u16, used_event_addr(&vq)).unwrap();
        for i in 0..3u16 {
            add_chain(&vq, i, &[(0x1_0000, 16, true)]);
            assert!(!t.process_queue(0));
            assert_eq!((used_idx(&mem), interrupts(&irq)), (i + 1, 1));
        }
        // Notifications are enabled again after each pass (VRING_USED_F_NO_NOTIFY cleared),
        // and avail_event is not written.
        assert_eq!(mem.read_obj::<u16>(GuestAddress(USED_RING)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u16>(avail_event_addr()).unwrap(), 0);
        // Nothing used, no interrupt.
        assert!(!t.process_queue(0));
        assert_eq!(interrupts(&irq), 0);
    }

    /// virtio-rng, and a driver that makes buffer 1 available while the device serves the
    /// first pass, when it would see notifications suppressed and not notify.
    struct RacingDriver {
        rng: Rng,
        avail: GuestAddress,
        raced: bool,
    }

    impl VirtioDevice for RacingDriver {
        fn device_type(&self) -> u32 {
            self.rng.device_type()
        }
        fn queue_max_sizes(&self) -> &[u16] {
            self.rng.queue_max_sizes()
        }
        fn features(&self) -> u64 {
            self.rng.features()
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            self.rng.read_config(offset, data)
        }
        fn serve(
            &mut self,
            index: usize,
            chain: virtio_queue::DescriptorChain<&GuestMemory>,
            mem: &GuestMemory,
        ) -> u32 {
            self.rng.serve(index, chain, mem)
        }
        fn process_queue(
            &mut self,
            index: usize,
            q: &mut Queue,
            mem: &GuestMemory,
        ) -> Result<bool, virtio_queue::Error> {
            let used = self.rng.process_queue(index, q, mem)?;
            if !std::mem::replace(&mut self.raced, true) {
                mem.write_obj(1u16, self.avail.unchecked_add(4 + 2))
                    .unwrap();
                mem.write_obj(2u16, self.avail.unchecked_add(2)).unwrap();
            }
            Ok(used)
        }
    }

    #[test]
    fn buffers_added_during_a_pass_are_not_lost() {
        for features in [
            VIRTIO_F_VERSION_1,
            VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX,
        ] {
            let mem: SharedMemory = Arc::new(test_util::memory());
            let vq = MockSplitQueue::new(&*mem, test_util::QUEUE_SIZE);
            let dev = RacingDriver {
                rng: Rng::new(),
                avail: vq.avail_addr(),
                raced: false,
            };
            let (mut t, irq) = transport_on(Box::new(dev), &mem, &vq, features);
            add_chain(&vq, 0, &[(0x1_0000, 16, true)]);
            let d1 = Descriptor::new(0x2_0000, 16, VRING_DESC_F_WRITE as u16, 0);
            vq.desc_table().store(1, RawDescriptor::from(d1)).unwrap();
            assert!(t.process_queue(0), "the re-check sees buffer 1");
            assert_eq!(used_idx(&mem), 1);
            assert!(!t.process_queue(0));
            assert_eq!(used_idx(&mem), 2);
            assert!(interrupts(&irq) > 0);
        }
    }

    #[test]
    fn a_queue_not_ready_is_left_alone() {
        let mut f = fixture();
        bring_up(&mut f.t);
        // Queue 1 was never set up: a notification for it neither breaks the device nor
        // touches guest memory at the queue's default (zero) addresses.
        assert!(!f.t.process_queue(1));
        assert!(f.t.is_active());
        assert!(f.processed.lock().unwrap().is_empty());
        assert_eq!(f.t.mem.read_obj::<u16>(GuestAddress(0)).unwrap(), 0);
    }
}
