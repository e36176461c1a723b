//! The device against a driver simulated in guest memory (three split queues) and real Unix
//! sockets on the host side.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use contract::hybrid;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use super::connection::BUF_ALLOC;
use super::packet::{SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::*;
use crate::devices::virtio::test_util;

const QSIZE: u16 = 64;
/// Receive buffers the driver keeps posted, each a header and `RX_DATA` bytes.
const RX_BUFS: u64 = 16;
const RX_DATA: u32 = 4096;
const SLOT: u64 = 0x2000;
const TX_BASE: u64 = 0x1_0000;
const TX_SLOTS: u64 = 16;
const RX_BASE: u64 = 0x4_0000;
/// The driver's receive buffer, as it advertises it in its headers.
const GUEST_BUF_ALLOC: u32 = 64 << 10;
const WAIT: Duration = Duration::from_secs(20);

/// The driver's side of one split queue, at `index * 0x1000`.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    fn new(index: u64) -> Ring {
        let base = index * 0x1000;
        Ring {
            desc: base,
            avail: base + 0x400,
            used: base + 0x800,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(self.desc as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail as u32), Some(0));
        q.set_used_ring_address(Some(self.used as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Makes a chain of `descs` (addr, len, device-writable) available; returns its head.
    fn push(&mut self, mem: &GuestMemory, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in descs.iter().enumerate() {
            let index = (head + i as u16) % QSIZE;
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let at = self.desc + 16 * u64::from(index);
            mem.write_obj(addr, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj((index + 1) % QSIZE, GuestAddress(at + 14))
                .unwrap();
        }
        self.next_desc = (head + descs.len() as u16) % QSIZE;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    /// Used entries since the last call: (head, len).
    fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

type Packet = (Header, Vec<u8>);

/// A device, its Unix socket, and a driver that keeps receive buffers posted.
struct Harness {
    dir: tempfile::TempDir,
    mem: GuestMemory,
    dev: Vsock,
    queues: Vec<Queue>,
    rx: Ring,
    tx: Ring,
    /// Receive chain head -> buffer address.
    rx_bufs: HashMap<u16, u64>,
    /// Header and data in one descriptor (Linux 6.2+) instead of two (Linux 6.1).
    rx_one_desc: bool,
    tx_next: u64,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

fn guest_hdr(op: Op, guest_port: u32, host_port: u32) -> Header {
    Header {
        src_cid: u64::from(GUEST_CID),
        dst_cid: u64::from(HOST_CID),
        src_port: guest_port,
        dst_port: host_port,
        len: 0,
        kind: TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc: GUEST_BUF_ALLOC,
        fwd_cnt: 0,
    }
}

impl Harness {
    fn new() -> Harness {
        Self::with_rx(false, RX_BUFS)
    }

    /// `rx_bufs` receive buffers posted, each in one descriptor or two.
    fn with_rx(rx_one_desc: bool, rx_bufs: u64) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let dev = Vsock::new(&dir.path().join("v.sock")).unwrap();
        let (rx, tx, event) = (Ring::new(0), Ring::new(1), Ring::new(2));
        let queues = vec![rx.queue(), tx.queue(), event.queue()];
        let mut h = Harness {
            dir,
            mem: test_util::memory(),
            dev,
            queues,
            rx,
            tx,
            rx_bufs: HashMap::new(),
            rx_one_desc,
            tx_next: 0,
        };
        h.dev.activate();
        h.post_rx_bufs(rx_bufs);
        h
    }

    fn post_rx_bufs(&mut self, n: u64) {
        for i in 0..n {
            self.post_rx(RX_BASE + i * SLOT);
        }
    }

    /// The driver resets the device and sets its queues up again.
    fn driver_reset(&mut self) {
        self.dev.reset();
        self.mem
            .write_slice(&[0u8; 0x3000], GuestAddress(0))
            .unwrap();
        let (rx, tx, event) = (Ring::new(0), Ring::new(1), Ring::new(2));
        self.queues = vec![rx.queue(), tx.queue(), event.queue()];
        (self.rx, self.tx) = (rx, tx);
        self.rx_bufs.clear();
        self.dev.activate();
        self.post_rx_bufs(RX_BUFS);
    }

    /// Pumps until the device closes `stream` (the client's end of a connection).
    fn wait_closed(&mut self, stream: &mut UnixStream) {
        stream.set_nonblocking(true).unwrap();
        let until = Instant::now() + WAIT;
        loop {
            self.pump();
            match stream.read(&mut [0u8; 64]) {
                // A stream closed with unread data resets its peer.
                Ok(0) => return,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Ok(n) => panic!("{n} bytes instead of the end of the stream"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < until, "stream still open");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn uds(&self) -> PathBuf {
        self.dir.path().join("v.sock")
    }

    fn post_rx(&mut self, addr: u64) {
        let head = if self.rx_one_desc {
            self.rx
                .push(&self.mem, &[(addr, HEADER_SIZE as u32 + RX_DATA, true)])
        } else {
            self.rx.push(
                &self.mem,
                &[(addr, HEADER_SIZE as u32, true), (addr + 64, RX_DATA, true)],
            )
        };
        self.rx_bufs.insert(head, addr);
    }

    /// Puts a chain on the transmit queue and has the device serve it.
    fn send_chain(&mut self, descs: &[(u64, u32, bool)]) {
        self.tx.push(&self.mem, descs);
        self.dev
            .process_queue(TX_QUEUE, &mut self.queues[TX_QUEUE], &self.mem)
            .unwrap();
        assert!(self.tx.take_used(&self.mem).len() == 1, "packet returned");
    }

    /// Sends a packet: the header in one descriptor, the data (if any) in another.
    fn send(&mut self, mut hdr: Header, data: &[u8]) {
        let addr = TX_BASE + (self.tx_next % TX_SLOTS) * SLOT;
        self.tx_next += 1;
        hdr.len = data.len() as u32;
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .unwrap();
        if data.is_empty() {
            self.send_chain(&[(addr, HEADER_SIZE as u32, false)]);
        } else {
            assert!(data.len() as u64 <= SLOT - 64);
            self.mem.write_slice(data, GuestAddress(addr + 64)).unwrap();
            self.send_chain(&[
                (addr, HEADER_SIZE as u32, false),
                (addr + 64, data.len() as u32, false),
            ]);
        }
    }

    /// Lets the device fill receive buffers until it has nothing more; returns the packets,
    /// the buffers posted again.
    fn pump(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        loop {
            let work = self
                .dev
                .process_backend(&mut self.queues, &self.mem)
                .unwrap();
            let used = self.rx.take_used(&self.mem);
            if used.is_empty() {
                assert_eq!(work.used, 0);
                return out;
            }
            for (head, len) in used {
                let addr = self.rx_bufs.remove(&head).expect("a posted buffer");
                if len > 0 {
                    out.push(self.read_packet(addr, len));
                }
                self.post_rx(addr);
            }
        }
    }

    fn read_packet(&self, addr: u64, len: u32) -> Packet {
        let mut raw = [0u8; HEADER_SIZE];
        self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
        let hdr = Header::parse(&raw);
        assert_eq!(hdr.len as usize + HEADER_SIZE, len as usize, "{hdr:?}");
        let data_at = if self.rx_one_desc {
            addr + HEADER_SIZE as u64
        } else {
            addr + 64
        };
        let mut data = vec![0u8; hdr.len as usize];
        self.mem
            .read_slice(&mut data, GuestAddress(data_at))
            .unwrap();
        (hdr, data)
    }

    /// Pumps until `pred` holds for a received packet; returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            if let Some(p) = self.pump().into_iter().find(|p| pred(p)) {
                return p;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("no {what}");
    }

    /// A host client's connection to guest port `port`, accepted by the guest; returns the
    /// client's stream and the host port the device chose.
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut client = UnixStream::connect(self.uds()).unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        client
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        let (req, _) = self.wait_for("REQUEST", |(h, _)| h.op == Op::Request as u16);
        assert_eq!(
            (req.src_cid, req.dst_cid, req.dst_port, req.kind),
            (2, 3, port, TYPE_STREAM)
        );
        assert!(req.src_port >= FIRST_HOST_PORT);
        assert_eq!(req.buf_alloc, BUF_ALLOC);
        self.send(guest_hdr(Op::Response, port, req.src_port), &[]);
        assert_eq!(
            hybrid::read_line(&mut client).unwrap(),
            format!("OK {}", req.src_port).as_bytes()
        );
        (client, req.src_port)
    }

    /// A guest connection from `guest_port` to host port `host_port`, where a listener waits.
    fn guest_connect(
        &mut self,
        listener: &UnixListener,
        guest_port: u32,
        host_port: u32,
    ) -> UnixStream {
        self.send(guest_hdr(Op::Request, guest_port, host_port), &[]);
        let (resp, _) = self.wait_for("RESPONSE or RST", |(h, _)| h.dst_port == guest_port);
        assert_eq!(resp.op, Op::Response as u16, "{resp:?}");
        assert_eq!(
            (resp.src_port, resp.src_cid, resp.dst_cid),
            (host_port, 2, 3)
        );
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    }
}

fn is(op: Op) -> impl Fn(&Packet) -> bool {
    move |(h, _)| h.op == op as u16
}

#[test]
fn device_id_queues_config_features() {
    let h = Harness::new();
    assert_eq!(h.dev.device_type(), 19);
    assert_eq!(h.dev.queue_max_sizes().len(), 3);
    let mut cid = [0u8; 8];
    h.dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 3);
    assert_eq!(h.dev.features(), VIRTIO_F_VERSION_1 | RING_FEATURES);
    assert!(h.dev.backend_fd().is_some());
}

/// A notification of the receive or event queue takes no buffer, and leaves nothing for the
/// transport's re-check (which would otherwise serve the queue again, forever).
#[test]
fn receive_and_event_notifications_take_no_buffers() {
    let mut h = Harness::new();
    let mut event = Ring::new(2);
    event.push(&h.mem, &[(RX_BASE - SLOT, 8, true)]);
    for q in [RX_QUEUE, 2] {
        let queue = &mut h.queues[q];
        assert!(!h.dev.process_queue(q, queue, &h.mem).unwrap());
        assert!(!queue.enable_notification(&h.mem).unwrap(), "queue {q}");
    }
    assert!(h.rx.take_used(&h.mem).is_empty());
    assert!(event.take_used(&h.mem).is_empty());
    // The buffers are still there for packets.
    h.host_connect(1024);
}

#[test]
fn host_connect_data_both_ways_and_close() {
    for one_desc in [false, true] {
        let mut h = Harness::with_rx(one_desc, RX_BUFS);
        let (mut client, host_port) = h.host_connect(1024);
        client.write_all(b"ping").unwrap();
        let (hdr, data) = h.wait_for("data", is(Op::Rw));
        assert_eq!(
            (hdr.src_port, hdr.dst_port, &data[..]),
            (host_port, 1024, &b"ping"[..])
        );
        h.send(guest_hdr(Op::Rw, 1024, host_port), b"pong");
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"pong");

        // The client closes: the guest hears both halves are shut and resets.
        drop(client);
        let (hdr, _) = h.wait_for("SHUTDOWN", is(Op::Shutdown));
        assert_eq!(hdr.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
        h.send(guest_hdr(Op::Rst, 1024, host_port), &[]);
        assert!(h.dev.conns.is_empty());
        // The connection is gone: more data is answered with a reset.
        h.send(guest_hdr(Op::Rw, 1024, host_port), b"late");
        h.wait_for("RST", is(Op::Rst));
    }
}

#[test]
fn guest_reset_refuses_a_host_connect() {
    let mut h = Harness::new();
    let uds = h.uds();
    let client = thread::spawn(move || hybrid::connect(&uds, 4000));
    let (req, _) = h.wait_for("REQUEST", is(Op::Request));
    h.send(guest_hdr(Op::Rst, 4000, req.src_port), &[]);
    let err = client.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(h.dev.conns.is_empty());
}

#[test]
fn host_ports_are_unique() {
    let mut h = Harness::new();
    let (_a, pa) = h.host_connect(1024);
    let (_b, pb) = h.host_connect(1024);
    assert_ne!(pa, pb);
}

#[test]
fn bad_clients_are_dropped() {
    let mut h = Harness::new();
    let mut garbage = UnixStream::connect(h.uds()).unwrap();
    garbage.write_all(b"HELLO 1024\n").unwrap();
    let mut long = UnixStream::connect(h.uds()).unwrap();
    long.write_all(&[b'7'; 100]).unwrap();
    let mut silent = UnixStream::connect(h.uds()).unwrap();
    h.wait_closed(&mut garbage);
    h.wait_closed(&mut long);
    assert!(h.pump().is_empty());
    // The silent one is dropped at its deadline.
    h.dev.sweep(Instant::now() + HANDSHAKE_TIMEOUT);
    h.wait_closed(&mut silent);
    assert!(h.dev.streams.is_empty());
    // The listener still serves.
    h.host_connect(1024);
}

#[test]
fn unanswered_request_times_out() {
    let mut h = Harness::new();
    let mut client = UnixStream::connect(h.uds()).unwrap();
    client.write_all(b"CONNECT 5\n").unwrap();
    h.wait_for("REQUEST", is(Op::Request));
    h.dev.sweep(Instant::now() + CONNECT_TIMEOUT);
    h.wait_for("RST", is(Op::Rst));
    client.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn guest_connects_to_host_listeners() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(hybrid::host_listener_path(&h.uds(), 1025)).unwrap();
    let mut s = h.guest_connect(&listener, 50_000, 1025);
    h.send(guest_hdr(Op::Rw, 50_000, 1025), b"hello");
    let mut got = [0u8; 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    s.write_all(b"world").unwrap();
    let (hdr, data) = h.wait_for("data", is(Op::Rw));
    assert_eq!(
        (hdr.src_port, hdr.dst_port, &data[..]),
        (1025, 50_000, &b"world"[..])
    );

    // Nothing listens on 1026: a reset.
    h.send(guest_hdr(Op::Request, 50_001, 1026), &[]);
    let (rst, _) = h.wait_for("RST", |(h, _)| h.dst_port == 50_001);
    assert_eq!((rst.op, rst.src_port), (Op::Rst as u16, 1026));
    // Nor to another CID.
    let mut other = guest_hdr(Op::Request, 50_002, 1025);
    other.dst_cid = 7;
    h.send(other, &[]);
    let (rst, _) = h.wait_for("RST", |(h, _)| h.dst_port == 50_002);
    assert_eq!(rst.op, Op::Rst as u16);
}

#[test]
fn guest_half_close_then_host_close() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(hybrid::host_listener_path(&h.uds(), 1025)).unwrap();
    let mut s = h.guest_connect(&listener, 7, 1025);
    h.send(guest_hdr(Op::Rw, 7, 1025), b"request");
    let mut shut = guest_hdr(Op::Shutdown, 7, 1025);
    shut.flags = SHUTDOWN_SEND;
    h.send(shut, &[]);
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request", "then end of stream");
    // The host still answers, then closes: the guest gets the reply, a SHUTDOWN, and with
    // both halves shut, a reset.
    s.write_all(b"reply").unwrap();
    drop(s);
    let mut packets = Vec::new();
    let until = Instant::now() + WAIT;
    while !packets.iter().any(is(Op::Rst)) && Instant::now() < until {
        packets.extend(h.pump());
    }
    let ops: Vec<u16> = packets.iter().map(|(h, _)| h.op).collect();
    assert_eq!(ops, [Op::Rw as u16, Op::Rst as u16], "{packets:?}");
    assert_eq!(packets[0].1, b"reply");
    assert!(h.dev.conns.is_empty());
}

#[test]
fn close_handshake_times_out() {
    let mut h = Harness::new();
    let (client, _) = h.host_connect(9);
    drop(client);
    h.wait_for("SHUTDOWN", is(Op::Shutdown));
    // The guest never resets.
    h.dev.sweep(Instant::now() + CLOSE_TIMEOUT);
    h.wait_for("RST", is(Op::Rst));
    assert!(h.dev.conns.is_empty());
}

#[test]
fn guest_shutdown_of_both_halves_is_answered_with_a_reset() {
    let mut h = Harness::new();
    let (mut client, port) = h.host_connect(9);
    let mut shut = guest_hdr(Op::Shutdown, 9, port);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    h.send(shut, &[]);
    h.wait_for("RST", is(Op::Rst));
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn credit_request_gets_an_update() {
    let mut h = Harness::new();
    let (_client, port) = h.host_connect(9);
    h.send(guest_hdr(Op::CreditRequest, 9, port), &[]);
    let (upd, _) = h.wait_for("CREDIT_UPDATE", is(Op::CreditUpdate));
    assert_eq!((upd.buf_alloc, upd.fwd_cnt), (BUF_ALLOC, 0));
}

/// 1 MiB from a host client to the guest, which advertises a 64 KiB buffer and consumes it in
/// steps: the device never has more in flight than the guest's credit.
#[test]
fn a_megabyte_to_the_guest_within_its_credit() {
    const TOTAL: usize = 1 << 20;
    let mut h = Harness::new();
    let (client, port) = h.host_connect(77);
    let writer = thread::spawn(move || {
        let mut client = client;
        client.write_all(&pattern(TOTAL, 5)).unwrap();
        client
    });
    let mut got = Vec::with_capacity(TOTAL);
    let mut fwd_cnt = 0usize;
    let until = Instant::now() + WAIT;
    while got.len() < TOTAL {
        assert!(Instant::now() < until, "{} bytes received", got.len());
        for (hdr, data) in h.pump() {
            assert_eq!(hdr.op, Op::Rw as u16, "{hdr:?}");
            got.extend_from_slice(&data);
            assert!(
                got.len() - fwd_cnt <= GUEST_BUF_ALLOC as usize,
                "{} bytes in flight",
                got.len() - fwd_cnt
            );
        }
        // The guest's application reads half of what it holds, then says so.
        if got.len() > fwd_cnt {
            fwd_cnt += (got.len() - fwd_cnt).div_ceil(2);
            let mut upd = guest_hdr(Op::CreditUpdate, 77, port);
            upd.fwd_cnt = fwd_cnt as u32;
            h.send(upd, &[]);
        }
    }
    assert!(got == pattern(TOTAL, 5), "data intact");
    drop(writer.join().unwrap());
}

/// 1 MiB from the guest to a host listener that reads slowly at first: the device buffers what
/// the socket does not take, within the credit it advertised, and updates the credit as the
/// socket drains.
#[test]
fn a_megabyte_from_the_guest_within_our_credit() {
    const TOTAL: usize = 1 << 20;
    const CHUNK: usize = 4096;
    let mut h = Harness::new();
    let listener = UnixListener::bind(hybrid::host_listener_path(&h.uds(), 1025)).unwrap();
    let s = h.guest_connect(&listener, 9, 1025);
    let reader = thread::spawn(move || {
        let mut s = s;
        thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let data = pattern(TOTAL, 9);
    let (mut sent, mut peer_fwd, mut peer_alloc) = (0usize, 0u32, BUF_ALLOC);
    let mut saw_update = false;
    let until = Instant::now() + WAIT;
    while sent < TOTAL {
        assert!(Instant::now() < until, "{sent} bytes sent");
        let credit = peer_alloc as usize - (sent - peer_fwd as usize);
        let n = credit.min(CHUNK).min(TOTAL - sent);
        if n > 0 {
            h.send(guest_hdr(Op::Rw, 9, 1025), &data[sent..sent + n]);
            sent += n;
        }
        for (hdr, _) in h.pump() {
            assert_eq!(hdr.op, Op::CreditUpdate as u16, "{hdr:?}");
            saw_update = true;
            (peer_fwd, peer_alloc) = (hdr.fwd_cnt, hdr.buf_alloc);
        }
        if n == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(saw_update);
    let mut shut = guest_hdr(Op::Shutdown, 9, 1025);
    shut.flags = SHUTDOWN_SEND;
    h.send(shut, &[]);
    // The rest drains as the reader takes it; the stream ends after the last byte.
    let until = Instant::now() + WAIT;
    while !reader.is_finished() {
        assert!(Instant::now() < until, "reader still waiting");
        h.pump();
        thread::sleep(Duration::from_millis(1));
    }
    assert!(reader.join().unwrap() == data, "data intact");
}

#[test]
fn guest_ignoring_our_credit_is_reset() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(hybrid::host_listener_path(&h.uds(), 1025)).unwrap();
    let _s = h.guest_connect(&listener, 9, 1025);
    let chunk = pattern(4096, 1);
    // The socket takes a few hundred KiB, the device BUF_ALLOC more; nothing reads them.
    for _ in 0..512 {
        h.send(guest_hdr(Op::Rw, 9, 1025), &chunk);
        if h.dev.conns.is_empty() {
            break;
        }
    }
    assert!(h.dev.conns.is_empty(), "reset");
    h.wait_for("RST", is(Op::Rst));
}

#[test]
fn malformed_packets_are_dropped_or_reset() {
    let mut h = Harness::new();
    let addr = TX_BASE;
    let beyond = test_util::MEM_SIZE as u64 + 0x1000;
    // Shorter than a header; outside guest memory; write-only: dropped without a word.
    h.mem
        .write_slice(
            &guest_hdr(Op::Request, 1, 1025).to_bytes(),
            GuestAddress(addr),
        )
        .unwrap();
    h.send_chain(&[(addr, 20, false)]);
    h.send_chain(&[(beyond, HEADER_SIZE as u32, false)]);
    h.send_chain(&[(addr, HEADER_SIZE as u32, true)]);
    h.send_chain(&[(addr, u32::MAX, false)]);
    // A header split across descriptors is fine (nothing listens on 1025: a reset).
    h.send_chain(&[(addr, 10, false), (addr + 10, 34, false)]);
    let (rst, _) = h.wait_for("RST", is(Op::Rst));
    assert_eq!(rst.dst_port, 1);
    // Spoofed source: dropped.
    let mut spoofed = guest_hdr(Op::Request, 2, 1025);
    spoofed.src_cid = 9;
    h.send(spoofed, &[]);
    assert!(h.pump().is_empty());
    // A reset is never answered.
    h.send(guest_hdr(Op::Rst, 2, 1025), &[]);
    assert!(h.pump().is_empty());

    let mut bad = Vec::new();
    let mut unknown_op = guest_hdr(Op::Rw, 3, 1025);
    unknown_op.op = 99;
    bad.push(unknown_op);
    let mut seqpacket = guest_hdr(Op::Request, 4, 1025);
    seqpacket.kind = 2;
    bad.push(seqpacket);
    bad.push(guest_hdr(Op::Rw, 5, 1025)); // unknown connection
    bad.push(guest_hdr(Op::Response, 6, 1025));
    bad.push(guest_hdr(Op::Shutdown, 8, 1025));
    for hdr in bad {
        h.send(hdr, &[]);
        let (rst, _) = h.wait_for("RST", is(Op::Rst));
        assert_eq!(rst.dst_port, hdr.src_port, "{hdr:?}");
    }
    // A length beyond the descriptors, and beyond any packet.
    for len in [100, u32::MAX] {
        let mut hdr = guest_hdr(Op::Rw, 10, 1025);
        hdr.len = len;
        h.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .unwrap();
        h.send_chain(&[(addr, HEADER_SIZE as u32, false), (addr + 64, 10, false)]);
        h.wait_for("RST", is(Op::Rst));
    }
    // The device still works.
    h.host_connect(1);
}

#[test]
fn unusable_receive_buffers_are_returned_empty() {
    let mut h = Harness::with_rx(false, 0);
    let beyond = test_util::MEM_SIZE as u64 + 0x1000;
    let small = h.rx.push(&h.mem, &[(RX_BASE, 10, true)]);
    let outside = h.rx.push(&h.mem, &[(beyond, 100, true)]);
    let read_only = h.rx.push(&h.mem, &[(RX_BASE, 100, false)]);
    let header_only = h.rx.push(&h.mem, &[(RX_BASE, HEADER_SIZE as u32, true)]);
    let mut client = UnixStream::connect(h.uds()).unwrap();
    client.write_all(b"CONNECT 2\n").unwrap();
    let until = Instant::now() + WAIT;
    let mut used = Vec::new();
    while used.len() < 4 {
        assert!(Instant::now() < until);
        h.dev.process_backend(&mut h.queues, &h.mem).unwrap();
        used.extend(h.rx.take_used(&h.mem));
    }
    assert_eq!(
        used,
        [
            (small, 0),
            (outside, 0),
            (read_only, 0),
            (header_only, HEADER_SIZE as u32)
        ]
    );
    let (req, _) = h.read_packet(RX_BASE, HEADER_SIZE as u32);
    assert_eq!(req.op, Op::Request as u16);
    // Out of buffers: the device says it is starved.
    let mut c2 = UnixStream::connect(h.uds()).unwrap();
    c2.write_all(b"CONNECT 3\n").unwrap();
    let until = Instant::now() + WAIT;
    loop {
        let work = h.dev.process_backend(&mut h.queues, &h.mem).unwrap();
        if work.starved == Some(RX_QUEUE) {
            break;
        }
        assert!(Instant::now() < until);
    }
}

#[test]
fn connections_are_limited() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(hybrid::host_listener_path(&h.uds(), 1025)).unwrap();
    let mut streams = Vec::new();
    for port in 0..MAX_CONNECTIONS as u32 {
        streams.push(h.guest_connect(&listener, port, 1025));
    }
    h.send(guest_hdr(Op::Request, 99_999, 1025), &[]);
    let (rst, _) = h.wait_for("RST", |(h, _)| h.dst_port == 99_999);
    assert_eq!(rst.op, Op::Rst as u16);
    // A host client over the limit is closed.
    let mut client = UnixStream::connect(h.uds()).unwrap();
    client.write_all(b"CONNECT 1\n").unwrap();
    h.wait_closed(&mut client);
    assert_eq!(h.dev.conns.len(), MAX_CONNECTIONS);
}

#[test]
fn reset_closes_every_stream_and_keeps_listening() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(hybrid::host_listener_path(&h.uds(), 1025)).unwrap();
    let (mut client, _) = h.host_connect(1024);
    let mut s = h.guest_connect(&listener, 9, 1025);
    h.driver_reset();
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
    h.host_connect(1024);
}

#[test]
fn stale_sockets_are_replaced_and_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    drop(UnixListener::bind(&path).unwrap());
    let dev = Vsock::new(&path).unwrap();
    assert!(path.exists());
    drop(dev);
    assert!(!path.exists());
    // Something that is not a socket is left alone, and is an error.
    std::fs::write(&path, b"data").unwrap();
    let err = Vsock::new(&path).err().unwrap();
    assert!(err.to_string().contains("v.sock"), "{err}");
}

/// The device behind the MMIO transport, served by the device thread: the driver runs out of
/// receive buffers midway, the device thread parks the backend and resumes on the driver's
/// notification.
#[test]
fn served_by_the_device_thread() {
    use crate::devices::legacy::IrqLine;
    use crate::devices::lock;
    use crate::devices::virtio::{mmio::MmioTransport, worker};
    use std::sync::{Arc, Mutex};

    const TOTAL: usize = 200 << 10;
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = Arc::new(test_util::memory());
    let dev = Vsock::new(&uds).unwrap();
    let mut t = MmioTransport::new(
        Box::new(dev),
        mem.clone(),
        IrqLine::new().unwrap(),
        Arc::new(test_util::NoIoeventfd),
        0xd000_0000,
    )
    .unwrap();
    let mut rings = [Ring::new(0), Ring::new(1), Ring::new(2)];
    let layout: Vec<test_util::QueueLayout> = rings
        .iter()
        .map(|r| (QSIZE, r.desc, r.avail, r.used))
        .collect();
    test_util::configure(&mut t, &layout);
    let mut rx_bufs = HashMap::new();
    let post = |ring: &mut Ring, rx_bufs: &mut HashMap<u16, u64>, addr: u64| {
        let head = ring.push(&mem, &[(addr, HEADER_SIZE as u32 + RX_DATA, true)]);
        rx_bufs.insert(head, addr);
    };
    for i in 0..4 {
        post(&mut rings[0], &mut rx_bufs, RX_BASE + i * SLOT);
    }
    test_util::driver_ok(&mut t);
    let transports = vec![Arc::new(Mutex::new(t))];
    let notify = |q: usize| lock(&transports[0]).queue_evts()[q].write(1).unwrap();
    let control = Arc::new(crate::kvm::VmControl::new(1).unwrap());
    let c = control.clone();
    let worker = worker::Worker::new(&transports, &*control).unwrap();
    // The device thread as the VMM runs it: under its seccomp filter.
    let thread = thread::spawn(move || {
        crate::seccomp::apply(crate::seccomp::ThreadKind::Virtio).unwrap();
        worker.run(&*c)
    });

    let mut client = UnixStream::connect(&uds).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(b"CONNECT 1024\n").unwrap();
    let until = Instant::now() + WAIT;
    let mut received = Vec::new();
    let mut host_port = None;
    let data = pattern(TOTAL, 3);
    let mut writer = None;
    while received.len() < TOTAL {
        assert!(Instant::now() < until, "{} bytes received", received.len());
        let used = rings[0].take_used(&mem);
        if used.is_empty() {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        for (head, len) in used {
            let addr = rx_bufs.remove(&head).unwrap();
            let mut raw = [0u8; HEADER_SIZE];
            mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let hdr = Header::parse(&raw);
            assert_eq!(len as usize, HEADER_SIZE + hdr.len as usize);
            match Op::from_raw(hdr.op) {
                Some(Op::Request) => host_port = Some(hdr.src_port),
                Some(Op::Rw) => {
                    let mut d = vec![0u8; hdr.len as usize];
                    mem.read_slice(&mut d, GuestAddress(addr + HEADER_SIZE as u64))
                        .unwrap();
                    received.extend_from_slice(&d);
                }
                op => panic!("{op:?}"),
            }
            post(&mut rings[0], &mut rx_bufs, addr);
        }
        notify(RX_QUEUE);
        if let (Some(port), None) = (host_port, &writer) {
            // Accept, with a receive buffer as large as the whole transfer.
            let mut resp = guest_hdr(Op::Response, 1024, port);
            resp.buf_alloc = TOTAL as u32;
            mem.write_slice(&resp.to_bytes(), GuestAddress(TX_BASE))
                .unwrap();
            rings[1].push(&mem, &[(TX_BASE, HEADER_SIZE as u32, false)]);
            notify(TX_QUEUE);
            assert_eq!(
                hybrid::read_line(&mut client).unwrap(),
                format!("OK {port}").as_bytes()
            );
            let mut c = client.try_clone().unwrap();
            let d = data.clone();
            writer = Some(thread::spawn(move || c.write_all(&d).unwrap()));
        }
    }
    assert!(received == data, "data intact");
    writer.unwrap().join().unwrap();
    control.stop(Ok(crate::vm::VmExit::Stopped));
    thread.join().unwrap().unwrap();
}

/// A snapshot keeps the receive cursor (through JSON, as the file does); a state of another
/// kind of device is refused.
#[test]
fn the_receive_cursor_round_trips_through_a_snapshot() {
    use crate::devices::persist::{through_json, RestoreError};
    use crate::devices::virtio::VirtioState;
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Vsock::new(&dir.path().join("v.sock")).unwrap();
    let state = VirtioState::Vsock(VsockState { rx_cursor: 300 });
    dev.restore_state(&through_json(&state)).unwrap();
    assert_eq!(dev.save_state(), Some(state));
    let err = dev.restore_state(&VirtioState::Block).unwrap_err();
    assert!(matches!(err, RestoreError::DeviceKind { .. }), "{err}");
}
