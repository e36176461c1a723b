//! virtio-console (virtio 1.2 §5.3) with the multiport feature and one named port, which the
//! guest writes to and the host only reads: the arm64 guest's marks port
//! (`contract::ports::MARKS_PORT_NAME`), found by the guest by its name in
//! `/sys/class/virtio-ports/*/name`.
//!
//! Queues, as the multiport layout numbers them for one port: port 0's receiveq and transmitq,
//! then the control receiveq and transmitq. The control protocol is what Linux's
//! `virtio_console` driver runs: it sends DEVICE_READY once its control buffers are posted, the
//! device answers DEVICE_ADD for port 0, the driver sets the port up and sends PORT_READY, and
//! the device answers PORT_NAME and PORT_OPEN 1 (the host is connected: Linux blocks writes
//! to a port until then). The port is not a console port.
//!
//! Every byte the guest puts on the transmitq goes, in order, to the [`PortSink`] given at
//! construction. The host never sends anything on the port: the receiveq's buffers stay with
//! the device, seen once and never used. Control messages for the guest wait, a few at most,
//! for control receive buffers; the device thread comes back for them through an eventfd, the
//! device's backend descriptor. Nothing the guest writes is trusted: malformed control messages
//! are dropped, and what one transmit chain can carry is bounded.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};

use super::cursor::Cursor;
use super::kick::Kick;
use super::{BackendWork, VirtioDevice, VirtioState, RING_FEATURES, VIRTIO_F_VERSION_1};
use crate::devices::persist::RestoreError;
use crate::memory::GuestMemory;

/// Feature bit 1: more than one port, and the control queues (virtio-bindings has no console
/// header).
pub const VIRTIO_CONSOLE_F_MULTIPORT: u64 = 1 << 1;

/// Control events (virtio 1.2 §5.3.6.2; Linux's `include/uapi/linux/virtio_console.h`).
const DEVICE_READY: u16 = 0;
const DEVICE_ADD: u16 = 1;
const PORT_READY: u16 = 3;
const PORT_OPEN: u16 = 6;
const PORT_NAME: u16 = 7;
/// A control message: port id (le32), event (le16), value (le16).
const CONTROL_LEN: usize = 8;

/// Port 0's receiveq (host to guest, unused), port 0's transmitq, the control queues.
const PORT_RX: usize = 0;
const PORT_TX: usize = 1;
const CONTROL_RX: usize = 2;
const CONTROL_TX: usize = 3;
/// Queue sizes. Linux fills a receive queue with a page per slot: the port's receiveq, never
/// used, is kept small.
const QUEUE_SIZES: [u16; 4] = [16, 128, 32, 32];
/// The only port.
const PORT: u32 = 0;

/// Control messages waiting for control receive buffers; more are dropped (a guest repeating
/// DEVICE_READY or PORT_READY without taking the answers cannot grow the queue).
const MAX_PENDING: usize = 16;
/// Longest port name: with its message header it fits any control buffer Linux posts (a page).
pub const MAX_NAME_LEN: usize = 255;
/// Most bytes taken from one transmit chain; the rest are dropped (Linux writes at most 32 KiB
/// at a time, a splice at most a pipe's worth).
const MAX_CHAIN_BYTES: usize = 1 << 20;
/// Bytes handed to the sink at a time.
const CHUNK: usize = 4096;

/// Where the bytes the guest writes to the port go, in order, on the thread that serves the
/// transport (the device thread, or the notifying vCPU: MmioTransport::serve_on_vcpu): it must
/// not block.
pub trait PortSink: Send {
    fn receive(&mut self, bytes: &[u8]);
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid virtio-console port name {0:?}: 1 to {MAX_NAME_LEN} bytes, no NUL")]
    Name(String),
    #[error("cannot create the virtio-console device's eventfd")]
    Eventfd(#[source] io::Error),
}

/// A control message for the driver, about port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Add,
    Name,
    Open,
}

/// What a snapshot keeps of the device: the control messages the driver has not taken yet and
/// where it is in the receive queues. Its port's name and sink are the restoring VM's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleState {
    pub pending: Vec<Message>,
    pub control_rx: u16,
    pub port_rx: u16,
}

pub struct Console {
    name: String,
    sink: Box<dyn PortSink>,
    config: [u8; 12],
    pending: VecDeque<Message>,
    /// Position in the control receiveq.
    control_rx: Cursor,
    /// Position in the port's receiveq, whose buffers are only ever seen.
    port_rx: Cursor,
    /// Raised while messages were queued outside `process_backend`.
    kick: Kick,
}

impl Console {
    /// A device with one port, named `name` for the guest, whose bytes go to `sink`.
    pub fn new(name: &str, sink: Box<dyn PortSink>) -> Result<Console, Error> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Err(Error::Name(name.to_owned()));
        }
        let kick = Kick::new().map_err(Error::Eventfd)?;
        let mut config = [0u8; 12];
        // cols (le16) and rows (le16) stay 0: no console size; then max_nr_ports (le32), and
        // emerg_wr (le32), which is 0 without VIRTIO_CONSOLE_F_EMERG_WRITE.
        config[4..8].copy_from_slice(&1u32.to_le_bytes());
        Ok(Console {
            name: name.to_owned(),
            sink,
            config,
            pending: VecDeque::new(),
            control_rx: Cursor::default(),
            port_rx: Cursor::default(),
            kick,
        })
    }

    /// Queues `messages` for the driver, all or none.
    fn queue(&mut self, messages: &[Message]) {
        if self.pending.len() + messages.len() > MAX_PENDING {
            tracing::debug!("virtio-console: {messages:?} dropped, the driver takes none");
            return;
        }
        self.pending.extend(messages);
    }

    /// One message from the control transmitq.
    fn control(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) {
        let mut raw = [0u8; CONTROL_LEN];
        let read = Reader::new(mem, chain)
            .map_err(|e| e.to_string())
            .and_then(|mut r| r.read_exact(&mut raw).map_err(|e| e.to_string()));
        if let Err(e) = read {
            tracing::debug!("virtio-console: control message dropped: {e}");
            return;
        }
        let id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let event = u16::from_le_bytes([raw[4], raw[5]]);
        let value = u16::from_le_bytes([raw[6], raw[7]]);
        match (event, value) {
            // The id is unused (Linux sends VIRTIO_CONSOLE_BAD_ID).
            (DEVICE_READY, 1) => self.queue(&[Message::Add]),
            (PORT_READY, 1) if id == PORT => self.queue(&[Message::Name, Message::Open]),
            // The guest opened or closed the port: the host reads all the same.
            (PORT_OPEN, _) if id == PORT => {}
            _ => tracing::debug!(
                "virtio-console: control event {event} (value {value}) for port {id} ignored"
            ),
        }
    }

    /// Every readable byte of a transmit chain (up to [`MAX_CHAIN_BYTES`]), to the sink.
    fn transmit(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) {
        let mut reader = match Reader::new(mem, chain) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::debug!("virtio-console: transmit chain dropped: {e}");
                return;
            }
        };
        if reader.available_bytes() > MAX_CHAIN_BYTES {
            tracing::debug!(
                "virtio-console: {} bytes in one chain, those past {MAX_CHAIN_BYTES} dropped",
                reader.available_bytes()
            );
        }
        let mut left = MAX_CHAIN_BYTES;
        let mut buf = [0u8; CHUNK];
        while left > 0 {
            let want = left.min(CHUNK);
            match reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    self.sink.receive(&buf[..n]);
                    left -= n;
                }
                Err(e) => {
                    tracing::debug!("virtio-console: transmit chain cut short: {e}");
                    break;
                }
            }
        }
    }

    /// The header of `message` on the wire, and what follows it.
    fn encode(&self, message: Message) -> ([u8; CONTROL_LEN], &[u8]) {
        let (event, tail) = match message {
            Message::Add => (DEVICE_ADD, &[][..]),
            // The name without a NUL (the spec's form; Linux takes either).
            Message::Name => (PORT_NAME, self.name.as_bytes()),
            Message::Open => (PORT_OPEN, &[][..]),
        };
        let mut header = [0u8; CONTROL_LEN];
        header[..4].copy_from_slice(&PORT.to_le_bytes());
        header[4..6].copy_from_slice(&event.to_le_bytes());
        header[6..].copy_from_slice(&1u16.to_le_bytes());
        (header, tail)
    }

    /// Puts pending messages into control receive buffers, one each. Returns (buffers used,
    /// messages left without buffers). A buffer that cannot hold its message is returned
    /// unwritten, and the message dropped.
    fn deliver(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<(bool, bool), virtio_queue::Error> {
        if !queue.ready() {
            return Ok((false, false));
        }
        let mut used = false;
        while let Some(&message) = self.pending.front() {
            let Some(chain) = self.control_rx.pop(queue, mem)? else {
                return Ok((used, true));
            };
            self.pending.pop_front();
            let head = chain.head_index();
            let (header, tail) = self.encode(message);
            let len = CONTROL_LEN + tail.len();
            let written = Writer::new(mem, chain)
                .map_err(|e| e.to_string())
                .and_then(|mut w| {
                    if w.available_bytes() < len {
                        return Err(format!("{} bytes, too small", w.available_bytes()));
                    }
                    w.write_all(&header)
                        .and_then(|()| w.write_all(tail))
                        .map_err(|e| e.to_string())
                });
            let len = match written {
                Ok(()) => len as u32,
                Err(e) => {
                    tracing::debug!("virtio-console: control buffer: {e}; {message:?} dropped");
                    0
                }
            };
            if head < queue.size() {
                queue.add_used(mem, head, len)?;
                used = true;
            }
        }
        Ok((used, false))
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT | RING_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    /// Takes one chain of a transmit queue; nothing is written back.
    fn serve(
        &mut self,
        index: usize,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> u32 {
        match index {
            PORT_TX => self.transmit(chain, mem),
            CONTROL_TX => self.control(chain, mem),
            _ => {}
        }
        0
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, virtio_queue::Error> {
        match index {
            PORT_RX => self.port_rx.see_all(queue, mem).map(|()| false),
            PORT_TX => super::serve_available(self, index, queue, mem),
            // Seen and kept for messages. Pending ones left the device thread not watching
            // the backend (starved): it serves the backend after this notification.
            CONTROL_RX => self.control_rx.see_all(queue, mem).map(|()| false),
            CONTROL_TX => {
                let used = super::serve_available(self, index, queue, mem)?;
                // The answers go into the control receiveq: the device thread comes back.
                if !self.pending.is_empty() {
                    self.kick.raise();
                }
                Ok(used)
            }
            _ => Ok(false),
        }
    }

    fn save_state(&self) -> Option<VirtioState> {
        Some(VirtioState::Console(ConsoleState {
            pending: self.pending.iter().copied().collect(),
            control_rx: self.control_rx.position(),
            port_rx: self.port_rx.position(),
        }))
    }

    fn restore_state(&mut self, state: &VirtioState) -> Result<(), RestoreError> {
        let VirtioState::Console(s) = state else {
            return Err(RestoreError::DeviceKind {
                saved: state.kind(),
                device: self.device_type(),
            });
        };
        if s.pending.len() > MAX_PENDING {
            return Err(RestoreError::TooLong {
                what: "virtio-console control messages",
                len: s.pending.len(),
                max: MAX_PENDING,
            });
        }
        self.pending = s.pending.iter().copied().collect();
        self.control_rx = Cursor::at(s.control_rx);
        self.port_rx = Cursor::at(s.port_rx);
        // Messages still for the driver: the device thread delivers them once it runs.
        if !self.pending.is_empty() {
            self.kick.raise();
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.control_rx.reset();
        self.port_rx.reset();
        self.kick.clear();
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.kick.as_raw_fd())
    }

    /// Delivers the pending control messages.
    fn process_backend(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemory,
    ) -> Result<BackendWork, virtio_queue::Error> {
        self.kick.clear();
        let Some(queue) = queues.get_mut(CONTROL_RX) else {
            return Ok(BackendWork::default());
        };
        let (used, starved) = self.deliver(queue, mem)?;
        Ok(BackendWork::on_queue(CONTROL_RX, used, starved))
    }
}

#[cfg(test)]
mod tests {
    //! The device behind the transport, against a driver that keeps its four split queues in
    //! guest memory and brings the device up, and talks to it, as Linux's `virtio_console`
    //! does.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use virtio_bindings::virtio_mmio::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::devices::legacy::IrqLine;
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::test_util;
    use crate::memory::SharedMemory;

    const NAME: &str = contract::ports::MARKS_PORT_NAME;
    /// What Linux puts in the id of DEVICE_READY (VIRTIO_CONSOLE_BAD_ID).
    const BAD_ID: u32 = u32::MAX;
    /// Queue `i`'s rings at `i * RING_SPAN`; buffers from `BUF_BASE`, a page each.
    const RING_SPAN: u64 = 0x2000;
    const BUF_BASE: u64 = 0x1_0000;
    const PAGE: u64 = 0x1000;
    /// A guest address outside guest memory.
    const NOWHERE: u64 = 0x4000_0000;

    /// The bytes the port's sink got.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl PortSink for Collect {
        fn receive(&mut self, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
    }

    impl Collect {
        fn take(&self) -> Vec<u8> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// The driver's side of one split queue.
    struct Ring {
        desc: u64,
        avail: u64,
        used: u64,
        size: u16,
        next_desc: u16,
        avail_idx: u16,
        used_seen: u16,
    }

    impl Ring {
        fn new(index: usize, size: u16) -> Ring {
            let base = index as u64 * RING_SPAN;
            Ring {
                desc: base,
                avail: base + 0x800,
                used: base + 0x1000,
                size,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            }
        }

        fn write_desc(&self, mem: &GuestMemory, index: u16, desc: (u64, u32, u16, u16)) {
            let (addr, len, flags, next) = desc;
            let at = self.desc + 16 * u64::from(index);
            mem.write_obj(addr, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }

        fn make_available(&mut self, mem: &GuestMemory, head: u16) {
            let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
            mem.write_obj(head, GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
                .unwrap();
        }

        /// Makes a chain of `descs` (addr, len, device-writable) available; returns its head.
        fn push(&mut self, mem: &GuestMemory, descs: &[(u64, u32, bool)]) -> u16 {
            let head = self.next_desc;
            for (i, &(addr, len, writable)) in descs.iter().enumerate() {
                let index = (head + i as u16) % self.size;
                let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
                if i + 1 < descs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                self.write_desc(mem, index, (addr, len, flags, (index + 1) % self.size));
            }
            self.next_desc = (head + descs.len() as u16) % self.size;
            self.make_available(mem, head);
            head
        }

        /// Used entries since the last call: (head, len).
        fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
            let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
            let mut out = Vec::new();
            while self.used_seen != idx {
                let at = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
                let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
                out.push((id as u16, len));
                self.used_seen = self.used_seen.wrapping_add(1);
            }
            out
        }
    }

    /// A control message as the driver reads it: (id, event, value, what follows).
    type Control = (u32, u16, u16, Vec<u8>);

    fn control(id: u32, event: u16, value: u16) -> [u8; CONTROL_LEN] {
        let mut raw = [0u8; CONTROL_LEN];
        raw[..4].copy_from_slice(&id.to_le_bytes());
        raw[4..6].copy_from_slice(&event.to_le_bytes());
        raw[6..].copy_from_slice(&value.to_le_bytes());
        raw
    }

    fn add() -> Control {
        (0, DEVICE_ADD, 1, Vec::new())
    }

    fn name() -> Control {
        (0, PORT_NAME, 1, NAME.as_bytes().to_vec())
    }

    fn open() -> Control {
        (0, PORT_OPEN, 1, Vec::new())
    }

    /// The device behind its transport, its sink, and the driver.
    struct Guest {
        t: MmioTransport,
        mem: SharedMemory,
        rings: Vec<Ring>,
        irq: EventFd,
        sink: Collect,
        /// Control receive buffers the device has not used: head -> address.
        control_bufs: HashMap<u16, u64>,
        /// The device thread watches the backend descriptor (the worker's `watched`).
        watched: bool,
        next_page: u64,
    }

    impl Guest {
        /// A device brought up as Linux's probe does, up to DRIVER_OK (its control buffers
        /// not posted yet).
        fn new() -> Guest {
            let mem: SharedMemory = Arc::new(test_util::memory());
            let sink = Collect::default();
            let dev = Console::new(NAME, Box::new(sink.clone())).unwrap();
            let irq = IrqLine::new().unwrap();
            let irq_evt = irq.0.try_clone().unwrap();
            let t = MmioTransport::new(
                Box::new(dev),
                mem.clone(),
                irq,
                Arc::new(test_util::NoIoeventfd),
                0xd000_0000,
            )
            .unwrap();
            let mut g = Guest {
                t,
                mem,
                rings: Vec::new(),
                irq: irq_evt,
                sink,
                control_bufs: HashMap::new(),
                watched: false,
                next_page: 0,
            };
            g.probe();
            g
        }

        fn wr(&mut self, offset: u32, value: u32) {
            self.t.write(u64::from(offset), &value.to_le_bytes());
        }

        fn rd(&mut self, offset: u32) -> u32 {
            let mut data = [0u8; 4];
            self.t.read(u64::from(offset), &mut data);
            u32::from_le_bytes(data)
        }

        /// Reset, features (VERSION_1 and MULTIPORT), config, the four queues, DRIVER_OK.
        fn probe(&mut self) {
            self.probe_leaving(None);
        }

        /// [`probe`](Self::probe), with queue `skip` left not ready.
        fn probe_leaving(&mut self, skip: Option<usize>) {
            self.wr(VIRTIO_MMIO_STATUS, 0);
            self.watched = false;
            self.wr(VIRTIO_MMIO_STATUS, 1);
            self.wr(VIRTIO_MMIO_STATUS, 3);
            assert_eq!(self.rd(VIRTIO_MMIO_DEVICE_ID), 3);
            let mut offered = 0u64;
            for sel in [1u32, 0] {
                self.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
                offered = offered << 32 | u64::from(self.rd(VIRTIO_MMIO_DEVICE_FEATURES));
            }
            let wanted = VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT;
            assert_eq!(offered & wanted, wanted, "{offered:#x}");
            for sel in [0u32, 1] {
                self.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
                self.wr(VIRTIO_MMIO_DRIVER_FEATURES, (wanted >> (32 * sel)) as u32);
            }
            self.wr(VIRTIO_MMIO_STATUS, 0xb);
            assert_eq!(self.rd(VIRTIO_MMIO_STATUS), 0xb, "FEATURES_OK taken");
            // max_nr_ports, after cols and rows.
            assert_eq!(self.rd(VIRTIO_MMIO_CONFIG + 4), 1);
            // Rings fresh from the driver's allocator.
            self.mem
                .write_slice(&[0u8; 4 * RING_SPAN as usize], GuestAddress(0))
                .unwrap();
            self.rings.clear();
            for i in 0..4 {
                self.wr(VIRTIO_MMIO_QUEUE_SEL, i);
                let size = self.rd(VIRTIO_MMIO_QUEUE_NUM_MAX);
                let ring = Ring::new(i as usize, size as u16);
                self.wr(VIRTIO_MMIO_QUEUE_NUM, size);
                self.wr(VIRTIO_MMIO_QUEUE_DESC_LOW, ring.desc as u32);
                self.wr(VIRTIO_MMIO_QUEUE_AVAIL_LOW, ring.avail as u32);
                self.wr(VIRTIO_MMIO_QUEUE_USED_LOW, ring.used as u32);
                if skip != Some(i as usize) {
                    self.wr(VIRTIO_MMIO_QUEUE_READY, 1);
                }
                self.rings.push(ring);
            }
            self.wr(VIRTIO_MMIO_QUEUE_SEL, 4);
            assert_eq!(self.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "four queues");
            self.wr(VIRTIO_MMIO_STATUS, 0xf);
            assert!(self.t.is_active());
            self.control_bufs.clear();
            // Activation notifies every queue.
            for q in 0..4 {
                self.notify(q);
            }
        }

        /// What the device thread does on a notification of queue `q`.
        fn notify(&mut self, q: usize) {
            let mut passes = 0;
            while self.t.process_queue(q) {
                passes += 1;
                assert!(passes < 8, "queue {q} is served again and again");
            }
            if !self.watched {
                self.watched = self.t.process_backend();
            }
            self.run_backend();
        }

        /// What the device thread does while it watches the backend descriptor.
        fn run_backend(&mut self) {
            let fd = self.t.backend_fd().expect("backend descriptor");
            let mut passes = 0;
            while self.watched && crate::poll::first_readable(&[fd], Some(Duration::ZERO)).is_some()
            {
                self.watched = self.t.process_backend();
                passes += 1;
                assert!(passes < 8, "the backend descriptor stays readable");
            }
        }

        fn page(&mut self) -> u64 {
            let addr = BUF_BASE + self.next_page * PAGE;
            self.next_page += 1;
            assert!(addr + PAGE <= test_util::MEM_SIZE as u64);
            addr
        }

        /// Posts a control receive buffer of `descs` (one at a time, as Linux does).
        fn post_control(&mut self, descs: &[(u64, u32, bool)]) -> u16 {
            let head = self.rings[CONTROL_RX].push(&self.mem, descs);
            self.control_bufs.insert(head, descs[0].0);
            self.notify(CONTROL_RX);
            head
        }

        /// Posts `n` control receive buffers of a page each (Linux's `fill_queue`).
        fn fill_control(&mut self, n: usize) {
            for _ in 0..n {
                let addr = self.page();
                self.post_control(&[(addr, PAGE as u32, true)]);
            }
        }

        /// Puts a chain on queue `q` and checks that the device returned it, with nothing
        /// written.
        fn send_chain(&mut self, q: usize, descs: &[(u64, u32, bool)]) {
            let head = self.rings[q].push(&self.mem, descs);
            self.notify(q);
            assert_eq!(self.rings[q].take_used(&self.mem), [(head, 0)]);
        }

        /// Sends `parts`, one descriptor each, on queue `q`.
        fn send(&mut self, q: usize, parts: &[&[u8]]) {
            let descs: Vec<(u64, u32, bool)> = parts
                .iter()
                .map(|part| {
                    let addr = self.page();
                    assert!(part.len() as u64 <= PAGE);
                    self.mem.write_slice(part, GuestAddress(addr)).unwrap();
                    (addr, part.len() as u32, false)
                })
                .collect();
            self.send_chain(q, &descs);
        }

        /// Sends a control message, as Linux's `__send_control_msg` does.
        fn send_control(&mut self, id: u32, event: u16, value: u16) {
            self.send(CONTROL_TX, &[&control(id, event, value)]);
        }

        /// The control messages the device wrote since the last call; buffers returned
        /// empty come as `None`.
        fn received(&mut self) -> Vec<Option<Control>> {
            let used = self.rings[CONTROL_RX].take_used(&self.mem);
            used.into_iter()
                .map(|(head, len)| {
                    let addr = self.control_bufs.remove(&head).expect("a posted buffer");
                    let len = len as usize;
                    if len == 0 {
                        return None;
                    }
                    assert!(len >= CONTROL_LEN, "{len} bytes");
                    let mut raw = vec![0u8; len];
                    self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
                    let id = u32::from_le_bytes(raw[..4].try_into().unwrap());
                    let event = u16::from_le_bytes(raw[4..6].try_into().unwrap());
                    let value = u16::from_le_bytes(raw[6..8].try_into().unwrap());
                    Some((id, event, value, raw[CONTROL_LEN..].to_vec()))
                })
                .collect()
        }

        fn interrupted(&self) -> bool {
            self.irq.read().is_ok_and(|n| n > 0)
        }
    }

    #[test]
    fn identity_features_and_config() {
        let dev = Console::new(NAME, Box::new(Collect::default())).unwrap();
        assert_eq!(dev.device_type(), 3);
        assert_eq!(
            dev.features(),
            VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT | RING_FEATURES
        );
        assert_eq!(dev.queue_max_sizes().len(), 4);
        let mut config = [0xffu8; 16];
        dev.read_config(0, &mut config);
        // cols, rows, max_nr_ports = 1, emerg_wr; nothing past it.
        assert_eq!(config, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_restored_device_delivers_the_messages_the_driver_had_not_taken() {
        let mut dev = Console::new(NAME, Box::new(Collect::default())).unwrap();
        dev.queue(&[Message::Name, Message::Open]);
        dev.control_rx = Cursor::at(7);
        dev.port_rx = Cursor::at(65_535);
        let saved = dev.save_state().unwrap();
        let VirtioState::Console(state) = &saved else {
            panic!("{saved:?} is not a console's state");
        };
        let saved_state = crate::devices::persist::through_json(state);

        let mut back = Console::new(NAME, Box::new(Collect::default())).unwrap();
        back.restore_state(&VirtioState::Console(saved_state.clone()))
            .unwrap();
        assert_eq!(back.save_state(), Some(saved));
        let mut fds = [libc::pollfd {
            fd: back.backend_fd().unwrap(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is one valid pollfd for the call's length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        assert_eq!(
            ready, 1,
            "the device thread is called back for the messages"
        );

        let mut flood = saved_state;
        flood.pending = vec![Message::Add; MAX_PENDING + 1];
        let mut fresh = Console::new(NAME, Box::new(Collect::default())).unwrap();
        assert!(fresh.restore_state(&VirtioState::Console(flood)).is_err());
        assert!(fresh.restore_state(&VirtioState::Rng).is_err());
    }

    #[test]
    fn names_the_guest_could_not_take_are_refused() {
        for bad in [
            String::new(),
            "a\0b".to_owned(),
            "n".repeat(MAX_NAME_LEN + 1),
        ] {
            let made = Console::new(&bad, Box::new(Collect::default()));
            assert!(matches!(made, Err(Error::Name(_))), "{bad:?}");
        }
        assert!(Console::new(&"n".repeat(MAX_NAME_LEN), Box::new(Collect::default())).is_ok());
    }

    /// Linux 6.1: probe, control buffers, DEVICE_READY; DEVICE_ADD; the port's receive
    /// buffers, PORT_READY; PORT_NAME then PORT_OPEN (no CONSOLE_PORT); the guest opens it.
    #[test]
    fn handshake_in_the_order_linux_runs_it() {
        let mut g = Guest::new();
        g.fill_control(32);
        assert_eq!(g.received(), []);
        g.send_control(BAD_ID, DEVICE_READY, 1);
        assert_eq!(g.received(), [Some(add())]);
        assert!(g.interrupted(), "the driver is told");

        for _ in 0..16 {
            let addr = g.page();
            g.rings[PORT_RX].push(&g.mem, &[(addr, PAGE as u32, true)]);
            g.notify(PORT_RX);
        }
        g.send_control(0, PORT_READY, 1);
        assert_eq!(g.received(), [Some(name()), Some(open())]);
        g.send_control(0, PORT_OPEN, 1);
        g.send(PORT_TX, &[b"I"]);
        assert_eq!(g.sink.take(), b"I");
        assert_eq!(g.received(), []);
        assert_eq!(
            g.rings[PORT_RX].take_used(&g.mem),
            [],
            "nothing for the guest"
        );
        // The device thread still watches the backend, which is quiet.
        assert!(g.watched);
        let fd = g.t.backend_fd().unwrap();
        assert!(crate::poll::first_readable(&[fd], Some(Duration::ZERO)).is_none());
    }

    #[test]
    fn bytes_reach_the_sink_in_order_across_chains() {
        let mut g = Guest::new();
        let long: Vec<u8> = (0..3 * PAGE as usize).map(|i| (i % 251) as u8).collect();
        let (a, rest) = long.split_at(PAGE as usize);
        let (b, c) = rest.split_at(PAGE as usize);
        g.send(PORT_TX, &[b"I"]);
        g.send(PORT_TX, &[b"R", b"T"]);
        g.send(PORT_TX, &[a, b, c]);
        g.send(PORT_TX, &[b"X", &[3]]);
        let mut expected = b"IRT".to_vec();
        expected.extend_from_slice(&long);
        expected.extend_from_slice(b"X\x03");
        assert_eq!(g.sink.take(), expected);
        // The transmitq's bytes are the port's, not control messages.
        assert_eq!(g.received(), []);
    }

    #[test]
    fn control_messages_wait_for_receive_buffers() {
        let mut g = Guest::new();
        g.send_control(BAD_ID, DEVICE_READY, 1);
        assert!(!g.watched, "no buffers: the device thread stops watching");
        assert_eq!(g.received(), []);
        g.fill_control(1);
        assert_eq!(g.received(), [Some(add())]);
        assert!(g.watched);

        g.send_control(0, PORT_READY, 1);
        assert!(!g.watched);
        // Buffers posted without a notification are found at the next one.
        let addr = g.page();
        let head = g.rings[CONTROL_RX].push(&g.mem, &[(addr, PAGE as u32, true)]);
        g.control_bufs.insert(head, addr);
        assert_eq!(g.received(), []);
        g.fill_control(1);
        assert_eq!(g.received(), [Some(name()), Some(open())]);
        g.fill_control(1);
        assert_eq!(g.received(), []);
    }

    /// A queue not ready is left alone: it is neither written nor a reason to stop.
    #[test]
    fn a_control_receiveq_not_set_up_is_left_alone() {
        let mut g = Guest::new();
        g.probe_leaving(Some(CONTROL_RX));
        g.send_control(BAD_ID, DEVICE_READY, 1);
        assert!(g.t.is_active());
        assert!(g.watched, "not starved: there is no queue to wait for");
        g.send(PORT_TX, &[b"still"]);
        assert_eq!(g.sink.take(), b"still");
    }

    #[test]
    fn malformed_control_messages_are_dropped() {
        let mut g = Guest::new();
        g.fill_control(8);
        // Short, in a device-writable buffer, outside guest memory.
        g.send(CONTROL_TX, &[&control(BAD_ID, DEVICE_READY, 1)[..7]]);
        let addr = g.page();
        g.mem
            .write_slice(&control(BAD_ID, DEVICE_READY, 1), GuestAddress(addr))
            .unwrap();
        g.send_chain(CONTROL_TX, &[(addr, 8, true)]);
        g.send_chain(CONTROL_TX, &[(addr, 4, false), (NOWHERE, 4, false)]);
        g.send_chain(CONTROL_TX, &[(addr, u32::MAX, false)]);
        // Unknown events, events the driver does not send, ports that are not there,
        // failures.
        for (id, event, value) in [
            (0, 99, 1),
            (0, DEVICE_ADD, 1),
            (0, PORT_NAME, 1),
            (0, 4, 1), // CONSOLE_PORT
            (0, 5, 1), // RESIZE
            (1, PORT_READY, 1),
            (BAD_ID, PORT_READY, 1),
            (0, PORT_READY, 0),
            (BAD_ID, DEVICE_READY, 0),
            (7, PORT_OPEN, 1),
        ] {
            g.send_control(id, event, value);
        }
        assert_eq!(g.received(), []);
        // A well-formed message split across descriptors, with bytes after it, is taken.
        let raw = control(BAD_ID, DEVICE_READY, 1);
        g.send(CONTROL_TX, &[&raw[..3], &raw[3..], b"tail"]);
        assert_eq!(g.received(), [Some(add())]);
    }

    #[test]
    fn repeated_ready_messages_queue_a_bounded_number_of_answers() {
        let mut g = Guest::new();
        for _ in 0..100 {
            g.send_control(BAD_ID, DEVICE_READY, 1);
            g.send_control(0, PORT_READY, 1);
        }
        g.fill_control(32);
        let got = g.received();
        assert_eq!(got.len(), MAX_PENDING);
        // Whole answers, in order.
        let one = [Some(add()), Some(name()), Some(open())];
        for (i, m) in got.iter().enumerate() {
            assert_eq!(*m, one[i % 3], "message {i}");
        }
        g.send_control(BAD_ID, DEVICE_READY, 1);
        assert_eq!(g.received(), [Some(add())], "room again");
    }

    #[test]
    fn unusable_control_buffers_are_returned_unwritten() {
        let mut g = Guest::new();
        let small = g.page();
        let read_only = g.page();
        g.mem.write_slice(&[0xaa; 64], GuestAddress(small)).unwrap();
        g.mem
            .write_slice(&[0xaa; 64], GuestAddress(read_only))
            .unwrap();
        // Too small for PORT_NAME; device-readable only; outside guest memory; good.
        g.post_control(&[(small, CONTROL_LEN as u32 + 4, true)]);
        g.post_control(&[(read_only, PAGE as u32, false)]);
        g.post_control(&[(NOWHERE, PAGE as u32, true)]);
        g.fill_control(1);
        g.send_control(0, PORT_READY, 1);
        g.send_control(BAD_ID, DEVICE_READY, 1);
        g.send_control(BAD_ID, DEVICE_READY, 1);
        // NAME (too small), OPEN (read-only), ADD (nowhere): dropped; the next ADD arrives.
        assert_eq!(g.received(), [None, None, None, Some(add())]);
        for addr in [small, read_only] {
            let mut b = [0u8; 64];
            g.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
            assert_eq!(b, [0xaa; 64], "buffer at {addr:#x} written");
        }
    }

    #[test]
    fn hostile_transmit_chains() {
        let mut g = Guest::new();
        let addr = g.page();
        g.mem.write_slice(b"abcd", GuestAddress(addr)).unwrap();
        // Device-writable only: nothing to read.
        g.send_chain(PORT_TX, &[(addr, 4, true)]);
        // Readable, then writable: the readable part.
        g.send_chain(PORT_TX, &[(addr, 2, false), (addr + 2, 2, true)]);
        assert_eq!(g.sink.take(), b"ab");
        // A descriptor outside guest memory, or longer than it: the chain is dropped whole.
        g.send_chain(PORT_TX, &[(addr, 4, false), (NOWHERE, 4, false)]);
        g.send_chain(PORT_TX, &[(addr, u32::MAX, false)]);
        assert_eq!(g.sink.take(), b"");
        // Several times guest memory in one chain: capped.
        let big = (
            BUF_BASE,
            (test_util::MEM_SIZE as u64 - BUF_BASE) as u32,
            false,
        );
        g.send_chain(PORT_TX, &[big, big, big, big]);
        assert_eq!(g.sink.take().len(), MAX_CHAIN_BYTES);
        // A chain that loops on itself ends.
        let ring = &mut g.rings[PORT_TX];
        let index = ring.next_desc;
        ring.write_desc(&g.mem, index, (addr, 4, VRING_DESC_F_NEXT as u16, index));
        ring.next_desc = (index + 1) % ring.size;
        ring.make_available(&g.mem, index);
        g.notify(PORT_TX);
        assert_eq!(g.rings[PORT_TX].take_used(&g.mem), [(index, 0)]);
        let looped = g.sink.take();
        assert!(looped.len() <= 4 * usize::from(g.rings[PORT_TX].size));
        // The port still works.
        g.send(PORT_TX, &[b"ok"]);
        assert_eq!(g.sink.take(), b"ok");
    }

    #[test]
    fn the_port_receiveq_is_held_without_being_served_again() {
        let mut g = Guest::new();
        for _ in 0..16 {
            let addr = g.page();
            g.rings[PORT_RX].push(&g.mem, &[(addr, PAGE as u32, true)]);
        }
        assert!(!g.t.process_queue(PORT_RX), "served once");
        g.notify(PORT_RX);
        g.fill_control(4);
        g.send_control(BAD_ID, DEVICE_READY, 1);
        assert_eq!(g.rings[PORT_RX].take_used(&g.mem), []);
        // More than the queue holds: the ring is broken, the device needs a reset.
        let ring = &mut g.rings[PORT_RX];
        ring.avail_idx = ring.avail_idx.wrapping_add(ring.size);
        g.mem
            .write_obj(ring.avail_idx, GuestAddress(ring.avail + 2))
            .unwrap();
        assert!(!g.t.process_queue(PORT_RX));
        assert!(!g.t.is_active());
    }

    #[test]
    fn a_reset_forgets_pending_messages() {
        let mut g = Guest::new();
        g.send_control(BAD_ID, DEVICE_READY, 1);
        g.send_control(0, PORT_READY, 1);
        g.next_page = 0;
        g.probe();
        g.fill_control(8);
        assert_eq!(g.received(), []);
        g.send_control(BAD_ID, DEVICE_READY, 1);
        assert_eq!(g.received(), [Some(add())]);
    }
}
