//! virtio-vsock (virtio 1.2 §5.10) with Firecracker's hybrid vsock on the host side: the guest
//! (CID 3) reaches the host (CID 2) through Unix sockets, no vhost needed.
//!
//! - Host to guest: a client connects to the socket at `uds_path` and writes `CONNECT <port>\n`;
//!   the device sends the guest a REQUEST from a host port of its own (from 2^30 up), answers
//!   the client `OK <host port>\n` once the guest accepts, and closes the client's stream if
//!   the guest resets instead.
//! - Guest to host: a REQUEST to CID 2 port P connects to the Unix socket `<uds_path>_P`.
//!
//! The device itself holds no path: it accepts on a listener it was given and gets its
//! connections to `<uds_path>_P` from the connector of the host side ([`host`]), which runs in
//! the parent when the VMM has a process of its own.
//!
//! The device thread watches one descriptor of the device, an epoll set holding the listener,
//! every client's stream, a timer for deadlines, and an eventfd saying that packets for the
//! guest were queued outside [`VirtioDevice::process_backend`]. Host data is read straight into
//! the guest's receive buffers and guest data written straight from its transmit buffers, both
//! within the credit each side advertises; the guest is trusted with nothing: a malformed
//! packet is answered with a reset or dropped, and every buffer the device keeps is bounded.

mod connection;
pub mod host;
mod packet;
#[cfg(test)]
mod tests;
mod unix;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use contract::hybrid::ok_line;
use contract::{GUEST_CID, HOST_CID};
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use self::connection::{ConnKey, Connection, State};
use self::host::{Connector, DeviceSide, HostSide};
use self::packet::{ChainBuffers, Header, Op, HEADER_SIZE, MAX_PAYLOAD, TYPE_STREAM};
use self::unix::Handshake;
use super::cursor::Cursor;
use super::kick::Kick;
use super::{BackendWork, VirtioDevice, VirtioState, RING_FEATURES, VIRTIO_F_VERSION_1};
use crate::devices::persist::RestoreError;
use crate::memory::GuestMemory;

pub const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Receive, transmit and event queues. The device never sends events: the driver's event
/// buffers stay with it.
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Most connections at once; more are refused (reset, or the client's stream closed).
const MAX_CONNECTIONS: usize = 256;
/// Most host clients still writing their `CONNECT` line.
const MAX_HANDSHAKES: usize = 64;
/// Most packets waiting for the guest's receive buffers; more are dropped.
const MAX_CONTROL_PACKETS: usize = 1024;
/// Host ports for host-initiated connections are taken from here up.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// A host client must have sent its `CONNECT` line by then.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// The guest must have answered a host REQUEST by then.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection whose close handshake has not ended by then is reset.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often deadlines are checked while there are any.
const DEADLINE_TICK: Duration = Duration::from_millis(250);
/// Readiness events taken from the epoll set per pass.
const EVENTS_PER_PASS: usize = 64;

const LISTENER_TOKEN: u64 = u64::MAX;
const KICK_TOKEN: u64 = u64::MAX - 1;
const TIMER_TOKEN: u64 = u64::MAX - 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for hybrid vsock connections on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the vsock connector for {path}_<port>")]
    Connector {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the vsock device's {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What a stream in the epoll set is; its token is its descriptor.
enum Slot {
    Handshake(Handshake),
    Conn(ConnKey),
}

/// A packet waiting for a receive buffer. The header is filled in when it is sent, with the
/// connection's credit at that time.
struct Control {
    key: ConnKey,
    /// The connection it belongs to: if that one is gone (or replaced), the packet is dropped.
    /// `None` for resets, which outlive their connection.
    conn: Option<u64>,
    op: Op,
    flags: u32,
}

/// What a snapshot keeps of the device: how far it took the receive queue's buffers.
/// Connections are not kept: a restored device has none, and answers a guest packet for one
/// it does not know with a reset, as for any unknown connection. (A snapshot is taken where
/// the guest has listeners only.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    pub rx_cursor: u16,
}

pub struct Vsock {
    listener: UnixListener,
    /// Makes the guest's connections to the host.
    connector: Connector,
    /// The host side, when the device runs in the process that listens (in-process use).
    _host: Option<HostSide>,
    epoll: Epoll,
    /// Signalled when packets for the guest were queued outside `process_backend`.
    kick: Kick,
    timer: TimerFd,
    timer_armed: bool,
    config: [u8; 8],
    streams: HashMap<RawFd, Slot>,
    conns: HashMap<ConnKey, Connection>,
    control: VecDeque<Control>,
    /// Connections whose Unix stream may have data for the guest, served round-robin.
    rx_pending: VecDeque<ConnKey>,
    rx_cursor: Cursor,
    next_port: u32,
    next_conn_id: u64,
    events: Vec<EpollEvent>,
}

impl Vsock {
    /// A vsock device whose host side, in this process, listens on the Unix socket `uds_path`
    /// (a stale socket there is replaced, and the socket is removed with the device).
    pub fn new(uds_path: &Path) -> Result<Vsock, Error> {
        let (host, device) = host::open(uds_path)?;
        let mut vsock = Vsock::given(device)?;
        vsock._host = Some(host);
        Ok(vsock)
    }

    /// A vsock device on the device's part of a host side that another process runs.
    pub fn given(device: DeviceSide) -> Result<Vsock, Error> {
        let setup = |what| move |source| Error::Setup { what, source };
        let epoll = Epoll::new().map_err(setup("epoll set"))?;
        let kick = Kick::new().map_err(setup("eventfd"))?;
        let timer = TimerFd::new()
            .map_err(io::Error::from)
            .map_err(setup("timer"))?;
        for (fd, token) in [
            (device.listener.as_raw_fd(), LISTENER_TOKEN),
            (kick.as_raw_fd(), KICK_TOKEN),
            (timer.as_raw_fd(), TIMER_TOKEN),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(setup("epoll set"))?;
        }
        Ok(Vsock {
            listener: device.listener,
            connector: Connector::new(device.connector),
            _host: None,
            epoll,
            kick,
            timer,
            timer_armed: false,
            config: u64::from(GUEST_CID).to_le_bytes(),
            streams: HashMap::new(),
            conns: HashMap::new(),
            control: VecDeque::new(),
            rx_pending: VecDeque::new(),
            rx_cursor: Cursor::default(),
            next_port: FIRST_HOST_PORT,
            next_conn_id: 0,
            events: vec![EpollEvent::default(); EVENTS_PER_PASS],
        })
    }

    fn has_rx_work(&self) -> bool {
        !self.control.is_empty() || !self.rx_pending.is_empty()
    }

    /// Makes the epoll set readable, so that the device thread comes back for work queued
    /// outside `process_backend`.
    fn kick(&mut self) {
        if self.has_rx_work() {
            self.kick.raise();
        }
    }

    fn arm_timer(&mut self) {
        if !self.timer_armed {
            self.timer_armed = self.timer.reset(DEADLINE_TICK, Some(DEADLINE_TICK)).is_ok();
        }
    }

    fn push_control(&mut self, key: ConnKey, conn: Option<u64>, op: Op, flags: u32) -> bool {
        if self.control.len() >= MAX_CONTROL_PACKETS {
            tracing::debug!("virtio-vsock: {op:?} for {key:?} dropped, the guest takes none");
            return false;
        }
        self.control.push_back(Control {
            key,
            conn,
            op,
            flags,
        });
        true
    }

    /// Forgets the connection (closing its Unix stream) and queues a reset for the guest.
    fn reset_conn(&mut self, key: ConnKey) {
        self.forget(key);
        self.push_control(key, None, Op::Rst, 0);
    }

    fn forget(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            self.streams.remove(&conn.stream.as_raw_fd());
        }
    }

    fn new_conn(&mut self, key: ConnKey, conn: Connection) {
        self.streams
            .insert(conn.stream.as_raw_fd(), Slot::Conn(key));
        self.conns.insert(key, conn);
    }

    fn next_conn_id(&mut self) -> u64 {
        self.next_conn_id += 1;
        self.next_conn_id
    }

    /// A host port no live connection uses.
    fn alloc_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.conns.keys().any(|k| k.local_port == port) {
                return port;
            }
        }
    }

    /// After anything happened to a connection: closes it when nothing is left to move,
    /// tells the guest about shut halves and credit, and sets the stream's epoll interest.
    fn settle(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.finished() {
            self.reset_conn(key);
            return;
        }
        let id = conn.id;
        let shutdown = conn.shutdown_due();
        let credit = conn.state == State::Established && conn.needs_credit_update();
        let closing = conn.closing() && conn.deadline.is_none();
        if closing {
            conn.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        }
        if conn.hup && !conn.rx_queued && conn.wants_read() {
            conn.rx_queued = true;
            self.rx_pending.push_back(key);
        }
        if let Err(e) = conn.sync_interest(&self.epoll) {
            tracing::warn!("virtio-vsock: epoll interest of {key:?}: {e}");
            self.reset_conn(key);
            return;
        }
        if let Some(flags) = shutdown {
            self.push_control(key, Some(id), Op::Shutdown, flags);
        }
        if credit {
            self.queue_credit_update(key);
        }
        if closing {
            self.arm_timer();
        }
    }

    /// Queues a CREDIT_UPDATE for the guest unless one is queued already.
    fn queue_credit_update(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        if !conn.credit_update_queued && self.push_control(key, Some(conn.id), Op::CreditUpdate, 0)
        {
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.credit_update_queued = true;
            }
        }
    }

    /// Takes the readiness of everything in the epoll set.
    fn poll_events(&mut self) {
        let n = match self.epoll.wait(0, &mut self.events) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!("virtio-vsock: epoll: {e}");
                }
                return;
            }
        };
        for i in 0..n {
            let event = self.events[i];
            match event.data() {
                LISTENER_TOKEN => self.accept(),
                KICK_TOKEN => {}
                TIMER_TOKEN => {
                    let _ = self.timer.wait();
                    self.sweep(Instant::now());
                }
                fd => self.stream_event(fd as RawFd, event.event_set()),
            }
        }
    }

    fn accept(&mut self) {
        for _ in 0..EVENTS_PER_PASS {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("virtio-vsock: accept: {e}");
                    return;
                }
            };
            let handshakes = self.streams.len() - self.conns.len();
            if handshakes >= MAX_HANDSHAKES {
                tracing::debug!("virtio-vsock: {handshakes} clients connecting, one dropped");
                continue;
            }
            let fd = stream.as_raw_fd();
            let registered = stream.set_nonblocking(true).and_then(|()| {
                self.epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, fd as u64),
                )
            });
            if let Err(e) = registered {
                tracing::warn!("virtio-vsock: new client: {e}");
                continue;
            }
            let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
            self.streams
                .insert(fd, Slot::Handshake(Handshake::new(stream, deadline)));
            self.arm_timer();
        }
    }

    fn stream_event(&mut self, fd: RawFd, events: EventSet) {
        match self.streams.get_mut(&fd) {
            Some(Slot::Handshake(h)) => match h.advance() {
                Ok(None) => {}
                Ok(Some(port)) => self.host_connect(fd, port),
                Err(e) => {
                    tracing::debug!("virtio-vsock: client dropped: {e}");
                    self.streams.remove(&fd);
                }
            },
            Some(Slot::Conn(key)) => {
                let key = *key;
                self.conn_event(key, events);
            }
            None => {}
        }
    }

    /// A host client's `CONNECT port` line: the guest gets a REQUEST.
    fn host_connect(&mut self, fd: RawFd, port: u32) {
        let Some(Slot::Handshake(h)) = self.streams.remove(&fd) else {
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            tracing::debug!("virtio-vsock: {MAX_CONNECTIONS} connections open, client dropped");
            return;
        }
        let key = ConnKey {
            local_port: self.alloc_port(),
            peer_port: port,
        };
        let id = self.next_conn_id();
        let mut conn = Connection::new(h.stream, id, State::Connecting, Some(EventSet::IN));
        conn.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        self.new_conn(key, conn);
        if self.push_control(key, Some(id), Op::Request, 0) {
            self.arm_timer();
            self.settle(key);
        } else {
            self.forget(key);
        }
    }

    fn conn_event(&mut self, key: ConnKey, events: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            conn.hup = true;
        }
        if conn.state == State::Connecting {
            if conn.hup {
                // The client gave up before the guest answered.
                self.reset_conn(key);
            }
            return;
        }
        if events.contains(EventSet::OUT) || (conn.hup && conn.has_pending()) {
            if let Err(e) = conn.flush() {
                tracing::debug!("virtio-vsock: writing to {key:?}: {e}");
                self.reset_conn(key);
                return;
            }
        }
        if events.contains(EventSet::IN) && !conn.rx_queued && conn.wants_read() {
            conn.rx_queued = true;
            self.rx_pending.push_back(key);
        }
        self.settle(key);
    }

    /// Resets connections and drops clients past their deadline.
    fn sweep(&mut self, now: Instant) {
        self.streams
            .retain(|_, slot| !matches!(slot, Slot::Handshake(h) if h.deadline <= now));
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            tracing::debug!("virtio-vsock: {key:?} timed out");
            self.reset_conn(key);
        }
        let waiting = self.streams.len() > self.conns.len()
            || self.conns.values().any(|c| c.deadline.is_some());
        if !waiting && self.timer_armed {
            self.timer_armed = self.timer.clear().is_err();
        }
    }

    /// The header of a packet from the host side of `key`.
    fn header(key: ConnKey, op: Op, flags: u32, credit: (u32, u32), len: u32) -> Header {
        Header {
            src_cid: u64::from(HOST_CID),
            dst_cid: u64::from(GUEST_CID),
            src_port: key.local_port,
            dst_port: key.peer_port,
            len,
            kind: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: credit.0,
            fwd_cnt: credit.1,
        }
    }

    /// The next queued packet whose connection is still there.
    fn next_control(&mut self) -> Option<Header> {
        while let Some(c) = self.control.pop_front() {
            let credit = match c.conn {
                None => (0, 0),
                Some(id) => {
                    let Some(conn) = self.conns.get_mut(&c.key).filter(|conn| conn.id == id) else {
                        continue;
                    };
                    if c.op == Op::CreditUpdate {
                        conn.credit_update_queued = false;
                    }
                    conn.advertise()
                }
            };
            return Some(Self::header(c.key, c.op, c.flags, credit, 0));
        }
        None
    }

    /// Fills receive buffers with queued packets, then with data from the Unix streams.
    /// Returns (buffers used, work left without buffers).
    fn fill_rx(
        &mut self,
        rx: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<(bool, bool), virtio_queue::Error> {
        let mut used = false;
        while self.has_rx_work() {
            let Some(chain) = self.rx_cursor.pop(rx, mem)? else {
                return Ok((used, true));
            };
            let head = chain.head_index();
            let len = match ChainBuffers::writable(mem, &chain) {
                Some(bufs) if bufs.len() >= HEADER_SIZE => match self.fill_one(&bufs) {
                    Some(len) => len,
                    None => {
                        // Nothing for this buffer after all: it stays the driver's.
                        self.rx_cursor.unpop();
                        continue;
                    }
                },
                _ => {
                    tracing::debug!("virtio-vsock: unusable receive buffer returned");
                    0
                }
            };
            if head < rx.size() {
                rx.add_used(mem, head, len)?;
                used = true;
            }
        }
        Ok((used, false))
    }

    /// Writes one packet into `bufs`; returns its length, or `None` when the buffer was not
    /// needed after all (each such call takes one connection off `rx_pending`).
    fn fill_one(&mut self, bufs: &ChainBuffers<'_>) -> Option<u32> {
        if let Some(header) = self.next_control() {
            bufs.copy_in(0, &header.to_bytes());
            return Some(HEADER_SIZE as u32);
        }
        let room = (bufs.len() - HEADER_SIZE).min(MAX_PAYLOAD);
        if room == 0 {
            tracing::debug!("virtio-vsock: receive buffer without room for data returned");
            return Some(0);
        }
        let key = self.rx_pending.pop_front()?;
        let conn = self.conns.get_mut(&key)?;
        conn.rx_queued = false;
        if !conn.wants_read() {
            self.settle(key);
            return None;
        }
        let max = room.min(conn.peer_credit() as usize);
        match conn.read_into(bufs, HEADER_SIZE, max) {
            Ok(0) => {
                // The stream ended: settle() tells the guest.
                self.settle(key);
                None
            }
            Ok(n) => {
                // Ask again while the buffer was filled: there may be more. A stream out of
                // the epoll set has no readiness events to say so.
                if n == max || conn.hup {
                    conn.rx_queued = true;
                    self.rx_pending.push_back(key);
                }
                let credit = conn.advertise();
                let header = Self::header(key, Op::Rw, 0, credit, n as u32);
                bufs.copy_in(0, &header.to_bytes());
                self.settle(key);
                Some((HEADER_SIZE + n) as u32)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.settle(key);
                None
            }
            Err(e) => {
                tracing::debug!("virtio-vsock: reading from {key:?}: {e}");
                self.reset_conn(key);
                None
            }
        }
    }

    /// Takes every packet on the transmit queue.
    fn process_tx(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, virtio_queue::Error> {
        let used = super::serve_available(self, TX_QUEUE, queue, mem)?;
        // Replies and credit updates wait for receive buffers.
        self.kick();
        Ok(used)
    }

    /// One packet from the guest.
    fn handle_tx(&mut self, mem: &GuestMemory, chain: &DescriptorChain<&GuestMemory>) {
        let Some(bufs) = ChainBuffers::readable(mem, chain) else {
            tracing::debug!("virtio-vsock: transmit buffer outside guest memory");
            return;
        };
        let mut raw = [0u8; HEADER_SIZE];
        if bufs.copy_out(0, &mut raw) < HEADER_SIZE {
            tracing::debug!("virtio-vsock: packet shorter than its header");
            return;
        }
        let hdr = Header::parse(&raw);
        if hdr.src_cid != u64::from(GUEST_CID) {
            tracing::debug!("virtio-vsock: packet from CID {} dropped", hdr.src_cid);
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let op = Op::from_raw(hdr.op);
        let len = hdr.len as usize;
        let valid = hdr.dst_cid == u64::from(HOST_CID)
            && hdr.kind == TYPE_STREAM
            && len <= MAX_PAYLOAD
            && len <= bufs.len() - HEADER_SIZE;
        let Some(op) = op.filter(|_| valid) else {
            tracing::debug!("virtio-vsock: invalid packet {hdr:?}");
            if op != Some(Op::Rst) {
                self.reset_conn(key);
            }
            return;
        };
        match op {
            Op::Request => self.guest_connect(key, &hdr),
            Op::Rst => self.forget(key),
            _ => self.conn_packet(key, op, &hdr, &bufs),
        }
    }

    /// The guest connects to host port `key.local_port`: to the Unix socket `<uds>_<port>`.
    fn guest_connect(&mut self, key: ConnKey, hdr: &Header) {
        if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNECTIONS {
            tracing::debug!("virtio-vsock: REQUEST for {key:?} refused");
            self.reset_conn(key);
            return;
        }
        let stream = match self.connector.connect(key.local_port) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(
                    "virtio-vsock: guest connection to host port {}: {e}",
                    key.local_port
                );
                self.reset_conn(key);
                return;
            }
        };
        let id = self.next_conn_id();
        let mut conn = Connection::new(stream, id, State::Established, None);
        conn.set_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        self.new_conn(key, conn);
        if self.push_control(key, Some(id), Op::Response, 0) {
            self.settle(key);
        } else {
            self.forget(key);
        }
    }

    /// A packet for an existing connection.
    fn conn_packet(&mut self, key: ConnKey, op: Op, hdr: &Header, bufs: &ChainBuffers<'_>) {
        let Some(conn) = self.conns.get_mut(&key) else {
            tracing::debug!("virtio-vsock: {op:?} for unknown {key:?}");
            self.reset_conn(key);
            return;
        };
        conn.set_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        let result = match (op, conn.state) {
            (Op::Response, State::Connecting) => {
                conn.state = State::Established;
                conn.deadline = None;
                write_line(conn, &ok_line(key.local_port))
            }
            (Op::Rw, State::Established) if !conn.tx_closed() => conn
                .recv(bufs, HEADER_SIZE, hdr.len as usize)
                .map_err(|e| e.to_string()),
            (Op::Shutdown, State::Established) => {
                conn.guest_shutdown(hdr.flags).map_err(|e| e.to_string())
            }
            (Op::CreditUpdate | Op::CreditRequest, State::Established) => Ok(()),
            (op, state) => Err(format!("{op:?} in state {state:?}")),
        };
        match result {
            Ok(()) => {
                if op == Op::CreditRequest {
                    self.queue_credit_update(key);
                }
                self.settle(key);
            }
            Err(e) => {
                tracing::debug!("virtio-vsock: {key:?} reset: {e}");
                self.reset_conn(key);
            }
        }
    }
}

/// Writes the handshake reply to a stream that has had nothing written to it yet, so its
/// socket buffer takes the whole line.
fn write_line(conn: &mut Connection, line: &str) -> Result<(), String> {
    match contract::sock::send(&conn.stream, line.as_bytes()) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(n) => Err(format!("the client took {n} bytes of {line:?}")),
        Err(e) => Err(format!("writing {line:?}: {e}")),
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | RING_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    /// Takes one packet from the transmit queue; nothing is written back.
    fn serve(
        &mut self,
        index: usize,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> u32 {
        if index == TX_QUEUE {
            self.handle_tx(mem, &chain);
        }
        0
    }

    /// Serves the transmit queue. Receive buffers are filled by `process_backend` when there
    /// is something to put in them, and event buffers are kept.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, virtio_queue::Error> {
        match index {
            RX_QUEUE => self.rx_cursor.see_all(queue, mem).map(|()| false),
            TX_QUEUE => self.process_tx(queue, mem),
            // The event queue's buffers are seen and kept.
            _ => queue.avail_idx(mem, Ordering::Acquire).map(|idx| {
                queue.set_next_avail(idx.0);
                false
            }),
        }
    }

    fn save_state(&self) -> Option<VirtioState> {
        Some(VirtioState::Vsock(VsockState {
            rx_cursor: self.rx_cursor.position(),
        }))
    }

    fn restore_state(&mut self, state: &VirtioState) -> Result<(), RestoreError> {
        match state {
            VirtioState::Vsock(s) => {
                self.rx_cursor = Cursor::at(s.rx_cursor);
                Ok(())
            }
            other => Err(RestoreError::DeviceKind {
                saved: other.kind(),
                device: self.device_type(),
            }),
        }
    }

    fn reset(&mut self) {
        self.conns.clear();
        self.streams.clear();
        self.control.clear();
        self.rx_pending.clear();
        self.rx_cursor.reset();
        self.kick.clear();
        if self.timer_armed {
            self.timer_armed = self.timer.clear().is_err();
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn process_backend(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemory,
    ) -> Result<BackendWork, virtio_queue::Error> {
        self.kick.clear();
        self.poll_events();
        let Some(rx) = queues.get_mut(RX_QUEUE) else {
            return Ok(BackendWork::default());
        };
        let (used, starved) = self.fill_rx(rx, mem)?;
        Ok(BackendWork::on_queue(RX_QUEUE, used, starved))
    }
}
