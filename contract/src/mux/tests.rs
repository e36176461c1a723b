//! Two multiplexers joined by a socketpair, with real clients and servers on both sides.

use super::*;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh directory for this test's sockets.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nodeos-mux-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One multiplexer running in a thread; dropping `stop` ends it.
struct Side {
    path: PathBuf,
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Side {
    fn start(link: UnixStream, path: PathBuf, role: Role) -> Self {
        let listener = UnixListener::bind(&path).unwrap();
        let (stop_tx, stop_rx) = UnixStream::pair().unwrap();
        let local = path.clone();
        let thread =
            thread::spawn(move || run(link.into(), listener, local, role, Some(stop_rx.into())));
        Side {
            path,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stop.take();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Pair {
    dir: PathBuf,
    host: Side,
    guest: Side,
}

impl Pair {
    fn new() -> Self {
        let dir = temp_dir();
        let (a, b) = UnixStream::pair().unwrap();
        let host = Side::start(a, dir.join("host.sock"), Role::Host);
        let guest = Side::start(b, dir.join("guest.sock"), Role::Guest);
        Pair { dir, host, guest }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An echo server on `<side>_port`: every connection gets back what it sends, then EOF.
fn echo_server(side: &Side, port: u32) {
    let listener = UnixListener::bind(hybrid::host_listener_path(&side.path, port)).unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let _ = io::copy(&mut conn, &mut out);
                let _ = out.shutdown(Shutdown::Write);
            });
        }
    });
}

fn connect(side: &Side, port: u32) -> UnixStream {
    let stream = hybrid::connect(&side.path, port).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// Sends `data` from a thread while reading everything back; returns what came back.
fn echo_through(stream: UnixStream, data: Vec<u8>) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    back
}

#[test]
fn a_host_client_reaches_a_guest_server_and_half_close_passes() {
    let mut pair = Pair::new();
    echo_server(&pair.guest, 1024);
    let stream = connect(&pair.host, 1024);
    assert_eq!(echo_through(stream, b"hello".to_vec()), b"hello");
    // Stopping returns Ok; so does the other side, whose link then closes.
    pair.host.finish().unwrap();
    pair.guest.thread.take().unwrap().join().unwrap().unwrap();
}

#[test]
fn the_client_reads_ok_with_the_channel_id() {
    let pair = Pair::new();
    echo_server(&pair.guest, 7);
    let mut stream = UnixStream::connect(&pair.host.path).unwrap();
    stream.write_all(b"CONNECT 7\n").unwrap();
    assert_eq!(hybrid::read_line(&mut stream).unwrap(), b"OK 1");
    let mut second = UnixStream::connect(&pair.host.path).unwrap();
    second.write_all(b"CONNECT 7\n").unwrap();
    assert_eq!(hybrid::read_line(&mut second).unwrap(), b"OK 2");
}

#[test]
fn ten_megabytes_both_ways_without_loss() {
    let pair = Pair::new();
    echo_server(&pair.guest, 1024);
    echo_server(&pair.host, 1025);
    let data = pattern(10 << 20, 1);
    let back = echo_through(connect(&pair.host, 1024), data.clone());
    assert!(
        back == data,
        "host to guest: {} of {} bytes",
        back.len(),
        data.len()
    );
    let data = pattern(10 << 20, 2);
    let back = echo_through(connect(&pair.guest, 1025), data.clone());
    assert!(
        back == data,
        "guest to host: {} of {} bytes",
        back.len(),
        data.len()
    );
}

#[test]
fn fifty_channels_at_once() {
    let pair = Pair::new();
    echo_server(&pair.guest, 1024);
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let stream = connect(&pair.host, 1024);
            thread::spawn(move || {
                let data = pattern(200 << 10, i as u8);
                echo_through(stream, data.clone()) == data
            })
        })
        .collect();
    for client in clients {
        assert!(client.join().unwrap());
    }
}

#[test]
fn a_stalled_reader_does_not_stop_other_channels() {
    let pair = Pair::new();
    echo_server(&pair.guest, 1024);
    // This client writes and never reads: its echo backs up through the whole channel.
    let stalled = connect(&pair.host, 1024);
    let mut writer = stalled.try_clone().unwrap();
    let stuck = thread::spawn(move || writer.write_all(&pattern(8 << 20, 3)).is_err());
    thread::sleep(Duration::from_millis(300));
    let data = pattern(4 << 20, 4);
    assert!(echo_through(connect(&pair.host, 1024), data.clone()) == data);
    // The stalled writer is still blocked; end it.
    assert!(!stuck.is_finished());
    stalled.shutdown(Shutdown::Both).unwrap();
    assert!(stuck.join().unwrap());
}

#[test]
fn a_refused_port_closes_the_client_stream() {
    let pair = Pair::new();
    let err = hybrid::connect(&pair.host.path, 4000).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let err = hybrid::connect(&pair.guest.path, 4000).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // Garbage instead of CONNECT: the client is dropped, the multiplexer goes on.
    let mut bad = UnixStream::connect(&pair.host.path).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    assert_eq!(hybrid::read_line(&mut bad).unwrap(), b"");
    echo_server(&pair.guest, 1024);
    assert_eq!(echo_through(connect(&pair.host, 1024), b"x".to_vec()), b"x");
}

#[test]
fn closing_the_link_ends_run() {
    let dir = temp_dir();
    let (link, peer) = UnixStream::pair().unwrap();
    let mut side = Side::start(link, dir.join("m.sock"), Role::Guest);
    drop(peer);
    side.thread.take().unwrap().join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs one multiplexer against raw bytes written to its link; returns how `run` ended.
fn feed(bytes: &[u8]) -> io::Result<()> {
    let dir = temp_dir();
    let (link, mut peer) = UnixStream::pair().unwrap();
    let listener = UnixListener::bind(dir.join("m.sock")).unwrap();
    let path = dir.join("m.sock");
    let thread = thread::spawn(move || run(link.into(), listener, path, Role::Guest, None));
    peer.write_all(bytes).unwrap();
    // Keep the link open: an error must come from the bytes, not from the end of the link.
    let result = thread.join().unwrap();
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn frame(id: u32, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = id.to_le_bytes().to_vec();
    f.push(op);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn garbage_on_the_link_is_an_error() {
    let random = pattern(4096, 9);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("unknown op", frame(1, 0x77, &[])),
        (
            "length over the bound",
            frame(1, op::DATA, &[])[..5]
                .iter()
                .copied()
                .chain(((MAX_DATA + 1) as u32).to_le_bytes())
                .collect(),
        ),
        ("channel id 0", frame(0, op::OPEN, &1024u32.to_le_bytes())),
        ("data for a channel never opened", frame(5, op::DATA, b"x")),
        (
            "open in the other side's space",
            frame(GUEST_ID_BIT | 1, op::OPEN, &1u32.to_le_bytes()),
        ),
        ("short open", frame(1, op::OPEN, &[1])),
        (
            "ids going back",
            [
                frame(3, op::OPEN, &1u32.to_le_bytes()),
                frame(2, op::OPEN, &1u32.to_le_bytes()),
            ]
            .concat(),
        ),
        (
            "accept for a channel never opened",
            frame(GUEST_ID_BIT | 1, op::ACCEPT, &[]),
        ),
        ("empty data", frame(1, op::DATA, &[])),
    ];
    for (what, bytes) in cases {
        let err = feed(&bytes).expect_err(what);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        assert!(err.to_string().starts_with("mux link: "), "{what}: {err}");
    }
}

#[test]
fn data_beyond_the_credit_is_an_error() {
    let dir = temp_dir();
    let server = UnixListener::bind(dir.join("m.sock_1")).unwrap();
    let (link, mut peer) = UnixStream::pair().unwrap();
    let listener = UnixListener::bind(dir.join("m.sock")).unwrap();
    let path = dir.join("m.sock");
    let thread = thread::spawn(move || run(link.into(), listener, path, Role::Guest, None));
    peer.write_all(&frame(1, op::OPEN, &1u32.to_le_bytes()))
        .unwrap();
    let (_conn, _) = server.accept().unwrap(); // connected, never reads
    let chunk = vec![0u8; MAX_DATA];
    // The socket buffer takes some (and that much is credited back, though this peer does
    // not listen); then the window fills, and the next frame is over the credit.
    for _ in 0..1024 {
        if peer.write_all(&frame(1, op::DATA, &chunk)).is_err() {
            break; // the multiplexer already gave up and closed the link
        }
    }
    let err = thread.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("credit"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
