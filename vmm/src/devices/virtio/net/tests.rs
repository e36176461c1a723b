//! The device with a socket pair standing in for passt, behind the transport, and with a
//! real passt.

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::device::{HDR_LEN, QUEUE_SIZE, RX, TX};
use super::*;
use crate::devices::legacy::IrqLine;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::test_util::{self, add_chain, used, used_idx};
use crate::devices::virtio::{BackendWork, VIRTIO_F_VERSION_1};
use crate::memory::{GuestMemory, SharedMemory};
use crate::vm::{HostLoopback, Protocol, PublishedPort};

/// Queue structures: receive at 0, transmit at 0x4000; buffers from 0x1_0000.
const TXQ: u64 = 0x4000;
const RX_BUF: u64 = 0x1_0000;
const TX_BUF: u64 = 0x8_0000;
/// What the Linux driver posts without mergeable buffers: the header and 1518 bytes.
const LINUX_RX_BUF: u32 = (HDR_LEN + 1518) as u32;
const RX_HDR: [u8; HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

fn frame(len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&DEFAULT_MAC);
    f
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut v = (frame.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(frame);
    v
}

fn rx_buf(i: u64) -> u64 {
    RX_BUF + i * 0x1000
}

fn read_mem(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

/// Whether `fd` is readable within `timeout`.
fn readable(fd: RawFd, timeout: Duration) -> bool {
    crate::poll::first_readable(&[fd], Some(timeout)).is_some()
}

/// A device over a socket pair, the peer's end, and the device's two queues in `mem`.
fn device(
    mem: &GuestMemory,
) -> (
    Net<Stream>,
    UnixStream,
    [MockSplitQueue<'_, GuestMemory>; 2],
) {
    let (ours, peer) = UnixStream::pair().unwrap();
    let dev = Net::new(Stream::new(ours, None).unwrap(), DEFAULT_MAC).unwrap();
    let rxq = MockSplitQueue::create(mem, GuestAddress(0), test_util::QUEUE_SIZE);
    let txq = MockSplitQueue::create(mem, GuestAddress(TXQ), test_util::QUEUE_SIZE);
    (dev, peer, [rxq, txq])
}

fn queues(vqs: &[MockSplitQueue<'_, GuestMemory>; 2]) -> [Queue; 2] {
    [
        vqs[0].create_queue().unwrap(),
        vqs[1].create_queue().unwrap(),
    ]
}

#[test]
fn config_and_features() {
    let (ours, _peer) = UnixStream::pair().unwrap();
    let mac = [2, 0, 0, 0, 0, 7];
    let dev = Net::new(Stream::new(ours, None).unwrap(), mac).unwrap();
    assert_eq!(dev.device_type(), 1);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let mut m = [0u8; 8];
    dev.read_config(0, &mut m);
    assert_eq!(m, [2, 0, 0, 0, 0, 7, 0, 0]);
    let f = dev.features();
    assert_ne!(f & VIRTIO_F_VERSION_1, 0);
    assert_ne!(f & (1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MAC), 0);
    // No offloads, no mergeable buffers, no control queue.
    assert_eq!(
        f & 0xffff_ffff & !(1 << 5) & !super::super::RING_FEATURES,
        0
    );
}

#[test]
fn transmitted_frames_reach_the_link_framed_without_their_header() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    let f1 = frame(60, 1);
    let f2 = frame(100, 2);
    // The header in its own descriptor, then header and frame in one.
    mem.write_slice(&[0xaa; HDR_LEN], GuestAddress(TX_BUF))
        .unwrap();
    mem.write_slice(&f1, GuestAddress(TX_BUF + 0x100)).unwrap();
    mem.write_slice(&[0u8; HDR_LEN], GuestAddress(TX_BUF + 0x1000))
        .unwrap();
    mem.write_slice(&f2, GuestAddress(TX_BUF + 0x1000 + HDR_LEN as u64))
        .unwrap();
    add_chain(
        &vqs[1],
        0,
        &[(TX_BUF, 12, false), (TX_BUF + 0x100, 60, false)],
    );
    add_chain(&vqs[1], 2, &[(TX_BUF + 0x1000, 112, false)]);
    assert!(dev.process_queue(TX, &mut q[TX], &mem).unwrap());
    assert_eq!(used_idx(&vqs[1]), 2);
    assert_eq!((used(&vqs[1], 0), used(&vqs[1], 1)), ((0, 0), (2, 0)));
    let mut want = framed(&f1);
    want.extend(framed(&f2));
    let mut got = vec![0; want.len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
}

#[test]
fn received_frames_fill_buffers_after_a_header() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    add_chain(&vqs[0], 0, &[(rx_buf(0), LINUX_RX_BUF, true)]);
    // The header alone in the first descriptor.
    add_chain(
        &vqs[0],
        1,
        &[(rx_buf(1), 12, true), (rx_buf(2), 1518, true)],
    );
    // A notification takes no buffer by itself.
    assert!(!dev.process_queue(RX, &mut q[RX], &mem).unwrap());
    assert_eq!(used_idx(&vqs[0]), 0);
    assert_eq!(q[RX].next_avail(), 2, "both buffers seen");
    let work = dev.process_backend(&mut q, &mem).unwrap();
    assert_eq!(work, BackendWork::default(), "nothing received yet");

    let (f1, f2) = (frame(60, 1), frame(1514, 2));
    peer.write_all(&framed(&f1)).unwrap();
    peer.write_all(&framed(&f2)).unwrap();
    let work = dev.process_backend(&mut q, &mem).unwrap();
    assert_eq!(work.used, 1 << RX);
    assert_eq!(work.starved, None);
    assert_eq!(used_idx(&vqs[0]), 2);
    assert_eq!(used(&vqs[0], 0), (0, 12 + 60));
    assert_eq!(used(&vqs[0], 1), (1, 12 + 1514));
    assert_eq!(read_mem(&mem, rx_buf(0), 12), RX_HDR);
    assert_eq!(read_mem(&mem, rx_buf(0) + 12, 60), f1);
    assert_eq!(read_mem(&mem, rx_buf(1), 12), RX_HDR);
    assert_eq!(read_mem(&mem, rx_buf(2), 1514), f2);
}

#[test]
fn receive_starves_without_buffers_and_resumes_when_they_come() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    let f = frame(80, 3);
    peer.write_all(&framed(&f)).unwrap();
    let work = dev.process_backend(&mut q, &mem).unwrap();
    assert_eq!((work.used, work.starved), (0, Some(RX)));
    // Still starved: the frame waits, nothing is lost.
    assert_eq!(dev.process_backend(&mut q, &mem).unwrap().starved, Some(RX));
    add_chain(&vqs[0], 0, &[(rx_buf(0), LINUX_RX_BUF, true)]);
    assert!(!dev.process_queue(RX, &mut q[RX], &mem).unwrap());
    let work = dev.process_backend(&mut q, &mem).unwrap();
    assert_eq!((work.used, work.starved), (1 << RX, None));
    assert_eq!(used(&vqs[0], 0), (0, 12 + 80));
    assert_eq!(read_mem(&mem, rx_buf(0) + 12, 80), f);
}

#[test]
fn a_frame_larger_than_the_buffer_is_dropped_and_the_buffer_kept() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    add_chain(&vqs[0], 0, &[(rx_buf(0), 12 + 100, true)]);
    peer.write_all(&framed(&frame(101, 1))).unwrap();
    peer.write_all(&framed(&frame(100, 2))).unwrap();
    let work = dev.process_backend(&mut q, &mem).unwrap();
    assert_eq!((work.used, work.starved), (1 << RX, None));
    assert_eq!(used_idx(&vqs[0]), 1);
    assert_eq!(used(&vqs[0], 0), (0, 112));
    assert_eq!(read_mem(&mem, rx_buf(0) + 12, 100), frame(100, 2));
}

#[test]
fn a_frame_split_across_reads_is_delivered_whole() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    add_chain(&vqs[0], 0, &[(rx_buf(0), LINUX_RX_BUF, true)]);
    let bytes = framed(&frame(1000, 4));
    peer.write_all(&bytes[..3]).unwrap();
    assert_eq!(
        dev.process_backend(&mut q, &mem).unwrap(),
        BackendWork::default()
    );
    peer.write_all(&bytes[3..500]).unwrap();
    assert_eq!(
        dev.process_backend(&mut q, &mem).unwrap(),
        BackendWork::default()
    );
    peer.write_all(&bytes[500..]).unwrap();
    assert_eq!(dev.process_backend(&mut q, &mem).unwrap().used, 1 << RX);
    assert_eq!(used(&vqs[0], 0), (0, 1012));
    assert_eq!(read_mem(&mem, rx_buf(0) + 12, 1000), frame(1000, 4));
}

#[test]
fn malformed_transmit_chains_are_dropped() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    let beyond = test_util::MEM_SIZE as u64 + 0x1000;
    let good = frame(60, 9);
    mem.write_slice(&good, GuestAddress(TX_BUF + 12)).unwrap();
    let chains: [&[test_util::Desc]; 7] = [
        &[(TX_BUF, 8, false)],                               // shorter than the header
        &[(TX_BUF, 72, true)],                               // device-writable only
        &[(beyond, 72, false)],                              // outside guest memory
        &[(TX_BUF, (12 + MAX_FRAME + 1) as u32, false)],     // larger than any frame
        &[(TX_BUF, 12 + 10, false)],                         // shorter than Ethernet's header
        &[(test_util::MEM_SIZE as u64 - 40, 72, false)],     // runs off the end of memory
        &[(TX_BUF, 72, false), (TX_BUF + 0x1000, 16, true)], // good, a writable tail ignored
    ];
    let mut index = 0;
    for descs in chains {
        add_chain(&vqs[1], index, descs);
        index += descs.len() as u16;
    }
    assert!(dev.process_queue(TX, &mut q[TX], &mem).unwrap());
    assert_eq!(used_idx(&vqs[1]), 7);
    for i in 0..7 {
        assert_eq!(used(&vqs[1], i).1, 0);
    }
    let want = framed(&good);
    let mut got = vec![0; want.len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    peer.set_nonblocking(true).unwrap();
    assert!(peer.read(&mut [0u8; 1]).is_err(), "nothing else was sent");
}

#[test]
fn malformed_receive_chains_are_returned_empty() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    let beyond = test_util::MEM_SIZE as u64 + 0x1000;
    add_chain(&vqs[0], 0, &[(rx_buf(0), LINUX_RX_BUF, false)]); // device-readable
    add_chain(&vqs[0], 1, &[(beyond, LINUX_RX_BUF, true)]); // outside guest memory
    add_chain(&vqs[0], 2, &[(rx_buf(1), 20, true)]); // cannot hold any frame
    add_chain(&vqs[0], 3, &[(rx_buf(2), LINUX_RX_BUF, true)]);
    let f = frame(64, 5);
    peer.write_all(&framed(&f)).unwrap();
    let work = dev.process_backend(&mut q, &mem).unwrap();
    assert_eq!((work.used, work.starved), (1 << RX, None));
    assert_eq!(used_idx(&vqs[0]), 4);
    assert_eq!(
        (0..4).map(|i| used(&vqs[0], i)).collect::<Vec<_>>(),
        [(0, 0), (1, 0), (2, 0), (3, 12 + 64)]
    );
    assert_eq!(read_mem(&mem, rx_buf(2) + 12, 64), f);
}

#[test]
fn transmit_waits_while_the_link_is_full() {
    let mem = test_util::memory();
    let (mut dev, mut peer, vqs) = device(&mem);
    // A larger transmit queue, to outrun the socket and the link's buffer.
    let txq = MockSplitQueue::create(&mem, GuestAddress(TXQ), 256);
    let mut q = [vqs[0].create_queue().unwrap(), txq.create_queue().unwrap()];
    const CHAINS: u16 = 64;
    const LEN: usize = 32 << 10;
    mem.write_slice(&frame(LEN, 6), GuestAddress(TX_BUF + 12))
        .unwrap();
    for i in 0..CHAINS {
        add_chain(&txq, i, &[(TX_BUF, (12 + LEN) as u32, false)]);
    }
    let fd = dev.backend_fd().unwrap();
    dev.process_queue(TX, &mut q[TX], &mem).unwrap();
    let first = txq.used().idx().load();
    assert!(0 < first && first < CHAINS, "{first} chains sent");
    // The rest is seen, so the transport does not serve the queue again at once...
    assert!(!q[TX].enable_notification(&mem).unwrap());
    // ... and the device waits for the socket, without spinning.
    assert!(!readable(fd, Duration::ZERO));

    let reader = std::thread::spawn(move || {
        let mut all = vec![0u8; usize::from(CHAINS) * (4 + LEN)];
        peer.read_exact(&mut all).unwrap();
        (all, peer)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until every chain is sent and every frame written.
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "transmit never resumed");
        if readable(fd, Duration::from_millis(100)) {
            let work = dev.process_backend(&mut q, &mem).unwrap();
            assert_eq!(work.starved, None);
        }
    }
    let (all, _peer) = reader.join().unwrap();
    assert_eq!(txq.used().idx().load(), CHAINS);
    for chunk in all.chunks(4 + LEN) {
        assert_eq!(chunk[..4], (LEN as u32).to_be_bytes());
        assert_eq!(chunk[4..], frame(LEN, 6));
    }
    // All written: the device no longer watches for room.
    assert!(!readable(fd, Duration::ZERO));
}

#[test]
fn a_closed_link_leaves_the_guest_offline_quietly() {
    let mem = test_util::memory();
    let (mut dev, peer, vqs) = device(&mem);
    let mut q = queues(&vqs);
    add_chain(&vqs[0], 0, &[(rx_buf(0), LINUX_RX_BUF, true)]);
    drop(peer);
    let fd = dev.backend_fd().unwrap();
    // A test forking meanwhile holds the peer's descriptor until its child execs.
    assert!(readable(fd, Duration::from_secs(5)), "end of stream");
    assert_eq!(
        dev.process_backend(&mut q, &mem).unwrap(),
        BackendWork::default()
    );
    assert!(
        !readable(fd, Duration::ZERO),
        "no longer watched: no spinning"
    );
    // Transmitted frames still complete, into the void.
    add_chain(&vqs[1], 0, &[(TX_BUF, 72, false)]);
    assert!(dev.process_queue(TX, &mut q[TX], &mem).unwrap());
    assert_eq!(used(&vqs[1], 0), (0, 0));
    assert_eq!(used_idx(&vqs[0]), 0);
}

/// Used rings of the transport test (not the mock's, which overlap its available rings).
const USED: [u64; 2] = [0x2000, 0x6000];

/// The device behind the transport, taken to DRIVER_OK as Linux does.
fn transport(
    dev: Net<Stream>,
    mem: &SharedMemory,
    vqs: &[MockSplitQueue<'_, GuestMemory>; 2],
) -> (MmioTransport, EventFd) {
    let irq = IrqLine::new().unwrap();
    let irq_evt = irq.0.try_clone().unwrap();
    let mut t = MmioTransport::new(
        Box::new(dev),
        mem.clone(),
        irq,
        Arc::new(test_util::NoIoeventfd),
        0xd000_0000,
    )
    .unwrap();
    let layout: Vec<test_util::QueueLayout> = vqs
        .iter()
        .zip(USED)
        .map(|(vq, used)| {
            let (desc, avail) = (vq.desc_table_addr().0, vq.avail_addr().0);
            (test_util::QUEUE_SIZE, desc, avail, used)
        })
        .collect();
    test_util::configure(&mut t, &layout);
    test_util::driver_ok(&mut t);
    (t, irq_evt)
}

fn transport_used(mem: &GuestMemory, queue: usize) -> (u16, Vec<(u32, u32)>) {
    let idx: u16 = mem.read_obj(GuestAddress(USED[queue] + 2)).unwrap();
    let entries = (0..u64::from(idx))
        .map(|i| {
            let at = USED[queue] + 4 + 8 * i;
            (
                mem.read_obj(GuestAddress(at)).unwrap(),
                mem.read_obj(GuestAddress(at + 4)).unwrap(),
            )
        })
        .collect();
    (idx, entries)
}

#[test]
fn behind_the_transport_receive_buffers_wait_without_spinning() {
    let mem: SharedMemory = Arc::new(test_util::memory());
    let (dev, mut peer, vqs) = device(&mem);
    let (mut t, irq) = transport(dev, &mem, &vqs);
    // Nothing received: nothing to do, and the socket is not readable.
    assert!(t.process_backend());
    add_chain(&vqs[0], 0, &[(rx_buf(0), LINUX_RX_BUF, true)]);
    add_chain(&vqs[0], 1, &[(rx_buf(1), LINUX_RX_BUF, true)]);
    // A receive notification is served once; the buffers wait for frames.
    assert!(
        !t.process_queue(RX),
        "the transport must not serve the queue again"
    );
    assert_eq!(transport_used(&mem, RX).0, 0);
    assert!(t.process_backend(), "buffers but no frame: keep watching");
    assert_eq!(transport_used(&mem, RX).0, 0);

    let f = frame(90, 7);
    peer.write_all(&framed(&f)).unwrap();
    assert!(t.process_backend());
    assert_eq!(transport_used(&mem, RX), (1, vec![(0, 102)]));
    assert!(irq.read().unwrap() > 0, "the guest is interrupted");
    // A transmitted frame comes back through the peer.
    mem.write_slice(&f, GuestAddress(TX_BUF + 12)).unwrap();
    add_chain(&vqs[1], 0, &[(TX_BUF, 12 + 90, false)]);
    assert!(!t.process_queue(TX));
    assert_eq!(transport_used(&mem, TX), (1, vec![(0, 0)]));
    let mut got = vec![0; 4 + 90];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, framed(&f));
    // Two frames, one buffer left: starved, then parked.
    peer.write_all(&framed(&f)).unwrap();
    peer.write_all(&framed(&f)).unwrap();
    assert!(!t.process_backend());
    assert_eq!(transport_used(&mem, RX).0, 2);
}

/// Ethernet + ARP request from the guest for `target`.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&DEFAULT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&DEFAULT_MAC);
    f.extend_from_slice(&[10, 0, 2, 15]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// Ethernet + IPv4 + UDP from the guest's 10.0.2.15:`sport` to `dst`:`dport`.
fn udp_frame(dst_mac: &[u8], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&DEFAULT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 2, 15]);
    ip.extend_from_slice(&dst);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(payload);
    f
}

/// Serves the device until a receive buffer is used; returns the frame in it.
fn receive(
    dev: &mut Net<Stream>,
    q: &mut [Queue; 2],
    mem: &GuestMemory,
    vq: &MockSplitQueue<'_, GuestMemory>,
    n: u16,
) -> Vec<u8> {
    let fd = dev.backend_fd().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while used_idx(vq) <= n {
        assert!(Instant::now() < deadline, "no frame from passt");
        if readable(fd, Duration::from_millis(100)) {
            dev.process_backend(q, mem).unwrap();
        }
    }
    let (head, len) = used(vq, usize::from(n));
    let at = rx_buf(u64::from(head));
    assert_eq!(read_mem(mem, at, HDR_LEN), RX_HDR);
    read_mem(mem, at + HDR_LEN as u64, len as usize - HDR_LEN)
}

/// Whether passt is installed; says the test is skipped when not.
fn passt_installed() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("passt").is_file()));
    if !on_path {
        println!("skipped: passt is not installed (apt-get install passt)");
    }
    on_path
}

#[test]
fn passt_answers_arp_and_takes_the_gateway_to_the_host() {
    if !passt_installed() {
        return;
    }
    let mem = test_util::memory();
    let (sock, process) =
        passt::spawn(&HostLoopback::All, &[], passt::HelperThreads::Filtered).unwrap();
    let dev = Net::new(Stream::new(sock, Some(process)).unwrap(), DEFAULT_MAC).unwrap();
    let vqs = [
        MockSplitQueue::create(&mem, GuestAddress(0), test_util::QUEUE_SIZE),
        MockSplitQueue::create(&mem, GuestAddress(TXQ), test_util::QUEUE_SIZE),
    ];
    let mut dev = dev;
    let mut q = queues(&vqs);
    for i in 0..4 {
        add_chain(&vqs[0], i, &[(rx_buf(u64::from(i)), LINUX_RX_BUF, true)]);
    }
    dev.process_queue(RX, &mut q[RX], &mem).unwrap();

    let send = |dev: &mut Net<Stream>, q: &mut [Queue; 2], index: u16, f: &[u8]| {
        let at = TX_BUF + u64::from(index) * 0x1000;
        mem.write_slice(&[0u8; HDR_LEN], GuestAddress(at)).unwrap();
        mem.write_slice(f, GuestAddress(at + HDR_LEN as u64))
            .unwrap();
        add_chain(&vqs[1], index, &[(at, (HDR_LEN + f.len()) as u32, false)]);
        assert!(dev.process_queue(TX, &mut q[TX], &mem).unwrap());
    };

    // Who has 10.0.2.2? passt answers for the gateway.
    send(&mut dev, &mut q, 0, &arp_request([10, 0, 2, 2]));
    let reply = receive(&mut dev, &mut q, &mem, &vqs[0], 0);
    assert_eq!(reply[12..14], [0x08, 0x06], "ARP: {reply:02x?}");
    assert_eq!(reply[20..22], [0, 2], "an ARP reply");
    assert_eq!(reply[28..32], [10, 0, 2, 2], "from the gateway");
    assert_eq!(reply[32..38], DEFAULT_MAC, "to us");
    let gateway_mac = reply[22..28].to_vec();

    // A datagram to the gateway reaches the host's loopback, and the answer comes back.
    let host = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = host.local_addr().unwrap().port();
    send(
        &mut dev,
        &mut q,
        1,
        &udp_frame(&gateway_mac, [10, 0, 2, 2], 40000, port, b"ping"),
    );
    let mut buf = [0u8; 16];
    let (n, from) = host.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    host.send_to(b"pong", from).unwrap();
    let answer = receive(&mut dev, &mut q, &mem, &vqs[0], 1);
    assert_eq!(answer[12..14], [0x08, 0x00], "IPv4: {answer:02x?}");
    assert_eq!(answer[26..30], [10, 0, 2, 2], "from the gateway");
    assert_eq!(answer[30..34], [10, 0, 2, 15], "to the guest");
    assert_eq!(
        answer[36..38],
        40000u16.to_be_bytes(),
        "to the sending port"
    );
    assert_eq!(&answer[42..46], b"pong");
}

/// Ethernet + IPv4 + TCP SYN from the guest's 10.0.2.15:`sport` to `dst`:`dport`, as a guest
/// that forges its frames can send it (checksums are not passt's to check).
fn tcp_syn(dst_mac: &[u8], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    tcp_segment(dst_mac, dst, (sport, dport), (1000, 0), TCP_SYN, &[])
}

const TCP_SYN: u8 = 0x02;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// Ethernet + IPv4 + TCP from the guest's 10.0.2.15:`ports.0` to `dst`:`ports.1`, with sequence
/// and acknowledgment numbers `numbers`, `flags` and `data` (checksums left out, as above).
fn tcp_segment(
    dst_mac: &[u8],
    dst: [u8; 4],
    ports: (u16, u16),
    numbers: (u32, u32),
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&DEFAULT_MAC);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&((40 + data.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&numbers.0.to_be_bytes());
    f.extend_from_slice(&numbers.1.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    f.extend_from_slice(data);
    f
}

/// The link to a real passt, as the VM's device sees it (frames with their length), behind the
/// guard.
struct PasstLink {
    sock: UnixStream,
    _passt: passt::Process,
    gateway_mac: Vec<u8>,
}

impl PasstLink {
    fn new(host_loopback: HostLoopback) -> PasstLink {
        PasstLink::publishing(host_loopback, &[])
    }

    /// A link whose passt forwards `published` to the guest (which sends the first frame, an
    /// ARP request, as a guest does when it comes up: passt sends to the guest's Ethernet
    /// address once it has seen it).
    fn publishing(host_loopback: HostLoopback, published: &[PublishedPort]) -> PasstLink {
        let (sock, passt) =
            passt::spawn(&host_loopback, published, passt::HelperThreads::Filtered).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut link = PasstLink {
            sock,
            _passt: passt,
            gateway_mac: Vec::new(),
        };
        link.send(&arp_request(contract::net::GATEWAY.octets()));
        let reply = link
            .frames_within(Duration::from_secs(10))
            .into_iter()
            .find(|f| f[12..14] == [0x08, 0x06])
            .expect("an ARP reply for the gateway");
        link.gateway_mac = reply[22..28].to_vec();
        link
    }

    fn send(&mut self, frame: &[u8]) {
        self.sock.write_all(&framed(frame)).unwrap();
    }

    /// The frames that come back within `wait` (all of them, however long that is, once one
    /// has come).
    fn frames_within(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut bytes = Vec::new();
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            match self.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !bytes.is_empty() {
                        break;
                    }
                }
                Err(e) => panic!("reading from passt's link: {e}"),
            }
        }
        let mut frames = Vec::new();
        while bytes.len() >= 4 {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            frames.push(bytes[4..4 + len].to_vec());
            bytes.drain(..4 + len);
        }
        frames
    }

    /// Sends a SYN to `dst`:`port` and says what came back from `dst`: a SYN-ACK (`0x12`), a
    /// reset (`0x14`), or nothing.
    fn connect(&mut self, dst: [u8; 4], port: u16, sport: u16) -> Option<u8> {
        let syn = tcp_syn(&self.gateway_mac.clone(), dst, sport, port);
        self.send(&syn);
        self.frames_within(Duration::from_secs(2))
            .into_iter()
            .filter(|f| f[12..14] == [0x08, 0x00] && f[23] == 6 && f[26..30] == dst)
            .filter(|f| f[34..36] == port.to_be_bytes() && f[36..38] == sport.to_be_bytes())
            .map(|f| f[47])
            .next()
    }
}

/// Whether `listener` has a connection waiting (it is non-blocking).
fn accepted(listener: &std::net::TcpListener) -> bool {
    listener.accept().is_ok()
}

#[test]
fn forged_frames_never_reach_the_hosts_loopback() {
    if !passt_installed() {
        return;
    }
    // Nothing of the loopback is open. passt alone (even with --no-map-gw) would connect a
    // SYN to 127.0.0.1 or 0.0.0.0 to this listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut link = PasstLink::new(HostLoopback::Closed);
    for (i, dst) in [[127, 0, 0, 1], [127, 0, 0, 2], [0, 0, 0, 0]]
        .into_iter()
        .enumerate()
    {
        assert_eq!(link.connect(dst, port, 40002 + i as u16), None, "{dst:?}");
    }
    assert!(
        !accepted(&listener),
        "a forged frame reached the host's loopback"
    );
    // The gateway refuses at once: a reset (RST, ACK).
    assert_eq!(
        link.connect(contract::net::GATEWAY.octets(), port, 40001),
        Some(0x14)
    );

    // One port open: that one is the host's loopback, the others are refused, and the
    // loopback itself is still no destination.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_port = other.local_addr().unwrap().port();
    let mut link = PasstLink::new(HostLoopback::TcpPorts(vec![port]));
    assert_eq!(
        link.connect(contract::net::GATEWAY.octets(), port, 40010),
        Some(0x12)
    );
    assert!(accepted(&listener));
    assert_eq!(
        link.connect(contract::net::GATEWAY.octets(), other_port, 40011),
        Some(0x14)
    );
    assert_eq!(link.connect([127, 0, 0, 1], other_port, 40012), None);
    assert!(
        !accepted(&other),
        "a closed port of the loopback was reached"
    );

    // All of it open: through the gateway only.
    let mut link = PasstLink::new(HostLoopback::All);
    assert_eq!(
        link.connect(contract::net::GATEWAY.octets(), other_port, 40020),
        Some(0x12)
    );
    assert!(accepted(&other));
    assert_eq!(link.connect([127, 0, 0, 1], port, 40021), None);
    assert!(!accepted(&listener));
}

/// A connection to a published port of the host reaches the guest's port, from the gateway,
/// and the guest's answers from that port reach the host's client; the port opens nothing of
/// the host's loopback to the guest.
#[test]
fn a_published_port_reaches_the_guest_and_opens_nothing() {
    if !passt_installed() {
        return;
    }
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = match free.local_addr().unwrap() {
        std::net::SocketAddr::V4(addr) => addr,
        other => panic!("{other}"),
    };
    drop(free);
    let guest_port = 8080;
    let mut link = PasstLink::publishing(
        HostLoopback::Closed,
        &[PublishedPort {
            host,
            guest_port,
            protocol: Protocol::Tcp,
        }],
    );
    let client = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = [0u8; 17];
        stream.read_exact(&mut answer).unwrap();
        answer
    });
    let gateway = contract::net::GATEWAY.octets();
    let syn = link
        .frames_within(Duration::from_secs(10))
        .into_iter()
        .find(|f| f[12..14] == [0x08, 0x00] && f[23] == 6 && f[47] == TCP_SYN)
        .expect("passt's SYN to the guest");
    assert_eq!(syn[26..30], gateway, "from the gateway");
    assert_eq!(syn[30..34], [10, 0, 2, 15], "to the guest");
    assert_eq!(syn[36..38], guest_port.to_be_bytes(), "to its port");
    let their_port = u16::from_be_bytes([syn[34], syn[35]]);
    let their_seq = u32::from_be_bytes(syn[38..42].try_into().unwrap());
    let gateway_mac = link.gateway_mac.clone();
    let ports = (guest_port, their_port);
    let answer = |numbers, flags, data: &[u8]| {
        tcp_segment(&gateway_mac, gateway, ports, numbers, flags, data)
    };
    link.send(&answer((5000, their_seq + 1), TCP_SYN | TCP_ACK, &[]));
    link.send(&answer(
        (5001, their_seq + 1),
        TCP_PSH | TCP_ACK,
        b"hi from the guest",
    ));
    assert_eq!(&client.join().unwrap(), b"hi from the guest");

    // From the published port, the guest still opens no connection to the loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(link.connect(gateway, port, guest_port), Some(0x14));
    assert_eq!(link.connect([127, 0, 0, 1], port, guest_port), None);
    assert!(!accepted(&listener), "the loopback was reached");
}

/// A snapshot keeps the device's cursors (through JSON, as the file does), and a state of
/// another kind of device is refused.
#[test]
fn cursors_round_trip_through_a_snapshot() {
    use crate::devices::persist::{through_json, RestoreError};
    use crate::devices::virtio::{VirtioDevice, VirtioState};
    let mem = test_util::memory();
    let (mut dev, _peer, _queues) = device(&mem);
    let state = VirtioState::Net(NetState {
        rx_cursor: 5,
        tx_cursor: 65_535,
    });
    dev.restore_state(&through_json(&state)).unwrap();
    assert_eq!(dev.save_state(), Some(state));
    let (mut fresh, _peer, _queues) = device(&mem);
    let err = fresh.restore_state(&VirtioState::Rng).unwrap_err();
    assert!(matches!(err, RestoreError::DeviceKind { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the state of a virtio-rng device saved for a device of type 1"
    );
}
