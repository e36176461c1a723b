//! The devices under test, each with its host side: a scratch disk for block (unlinked once
//! open), Unix sockets
//! for vsock (host clients, and a listener the guest can connect to), the peer end of a socket
//! pair standing in for passt for net, a sink that drops what the guest writes for console. The
//! driver's input also plays the host side.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};

use contract::hybrid::host_listener_path;

use super::input::Input;

/// The host port the harness listens on (the corpus's guest packets connect to it).
const HOST_PORT: u32 = 1025;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::console::{Console, PortSink};
use crate::devices::virtio::net::{Net, Stream, DEFAULT_MAC};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::VirtioDevice;

/// Size of the scratch disk: a few sectors, so in-range requests are easy to find.
const DISK_BYTES: u64 = 8 * 512;
/// Largest frame the peer sends: an Ethernet frame's worth, not the whole input.
const MAX_FRAME: u16 = 1600;
/// Host streams kept open at once.
const MAX_STREAMS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Block,
    Rng,
    Vsock,
    Net,
    Console,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Block,
        Kind::Rng,
        Kind::Vsock,
        Kind::Net,
        Kind::Console,
    ];
}

/// The console port's host side: takes the guest's bytes and drops them.
struct Drop;

impl PortSink for Drop {
    fn receive(&mut self, _bytes: &[u8]) {}
}

/// What the host side holds; dropped after the device.
pub enum Host {
    None,
    /// The scratch disk (unlinked), to put back to zeroes between sessions.
    Block(File),
    Vsock {
        dir: tempfile::TempDir,
        /// Where guest connections to host port [`HOST_PORT`] arrive.
        listener: UnixListener,
        streams: Vec<UnixStream>,
    },
    Net(Option<UnixStream>),
}

/// What in a device of `kind` the input picks once, before the session: for block, whether
/// it is read-only. Devices that differ in it are kept apart.
pub fn variant(kind: Kind, input: &mut Input) -> u8 {
    match kind {
        Kind::Block => input.u8() & 1,
        _ => 0,
    }
}

/// A device of `kind` and `variant` (see [`variant`]) and its host side.
pub fn create(kind: Kind, variant: u8) -> (Box<dyn VirtioDevice>, Host) {
    match kind {
        Kind::Block => {
            let disk = tempfile::NamedTempFile::new().expect("scratch disk");
            disk.as_file()
                .set_len(DISK_BYTES)
                .expect("scratch disk size");
            let dev = Block::open(disk.path(), variant != 0, "fuzz").expect("disk");
            // The device keeps the file open; its name goes.
            let file = disk.into_file();
            (Box::new(dev), Host::Block(file))
        }
        Kind::Rng => (Box::new(Rng::new()), Host::None),
        Kind::Console => {
            let dev = Console::new(contract::ports::MARKS_PORT_NAME, Box::new(Drop))
                .expect("console device");
            (Box::new(dev), Host::None)
        }
        Kind::Vsock => {
            let dir = tempfile::tempdir().expect("socket folder");
            let uds = dir.path().join("v");
            let listener =
                UnixListener::bind(host_listener_path(&uds, HOST_PORT)).expect("host listener");
            listener.set_nonblocking(true).expect("non-blocking");
            let dev = Vsock::new(&uds).expect("vsock device");
            let host = Host::Vsock {
                dir,
                listener,
                streams: Vec::new(),
            };
            (Box::new(dev), host)
        }
        Kind::Net => {
            let (ours, peer) = UnixStream::pair().expect("socket pair");
            peer.set_nonblocking(true).expect("non-blocking");
            let link = Stream::new(ours, None).expect("link");
            let dev = Net::new(link, DEFAULT_MAC).expect("net device");
            (Box::new(dev), Host::Net(Some(peer)))
        }
    }
}

impl Host {
    /// Puts the host side back as [`create`] left it, for a device the driver reset, and
    /// says whether it could: `false` when something on the host side outlives the device's
    /// reset (host connections to the device's listener, bytes the peer wrote into the
    /// link's framing, a closed peer), so the device must be made afresh.
    pub fn reset(&mut self, poked: bool) -> bool {
        match self {
            Host::None => true,
            Host::Block(disk) => {
                static ZEROES: [u8; DISK_BYTES as usize] = [0; DISK_BYTES as usize];
                disk.write_all_at(&ZEROES, 0).expect("scratch disk");
                disk.set_len(DISK_BYTES).expect("scratch disk size");
                true
            }
            Host::Vsock {
                listener, streams, ..
            } => {
                streams.clear();
                // Connections the guest made to the host: their device ends went with the
                // reset.
                while listener.accept().is_ok() {}
                !poked
            }
            Host::Net(peer) => {
                // What the device sent.
                if let Some(p) = peer {
                    let mut sink = [0u8; 4096];
                    while matches!(p.read(&mut sink), Ok(n) if n > 0) {}
                }
                !poked && peer.is_some()
            }
        }
    }

    /// Does what the input says on the host side; nothing here blocks.
    pub fn poke(&mut self, input: &mut Input) {
        match self {
            Host::None | Host::Block(_) => {}
            Host::Vsock {
                dir,
                listener,
                streams,
            } => {
                let (what, which) = (input.u8(), usize::from(input.u8()));
                match what % 4 {
                    // A host client: `CONNECT <port>\n`, or anything else.
                    0 if streams.len() < MAX_STREAMS => {
                        if let Ok(s) = UnixStream::connect(dir.path().join("v")) {
                            let _ = s.set_nonblocking(true);
                            streams.push(s);
                        }
                    }
                    // Connections the guest made.
                    1 => {
                        while let Ok((s, _)) = listener.accept() {
                            let _ = s.set_nonblocking(true);
                            streams.push(s);
                        }
                        streams.truncate(MAX_STREAMS);
                    }
                    2 if !streams.is_empty() => {
                        streams.remove(which % streams.len());
                    }
                    _ => {}
                }
                if !streams.is_empty() {
                    let n = which % streams.len();
                    exchange(&mut streams[n], input);
                }
            }
            Host::Net(peer) => match input.u8() % 3 {
                0 => *peer = None,
                1 => {
                    // One frame with its length prefix.
                    let len = input.u16() % MAX_FRAME;
                    let frame = input.bytes(len.into());
                    if let Some(p) = peer {
                        let _ = p.write(&(frame.len() as u32).to_be_bytes());
                        let _ = p.write(frame);
                    }
                }
                _ => {
                    if let Some(p) = peer {
                        exchange(p, input);
                    }
                }
            },
        }
    }
}

/// Writes bytes from `input` to `s` and reads what is there, without waiting.
fn exchange(s: &mut UnixStream, input: &mut Input) {
    let len = input.u8();
    let data = input.bytes(len.into());
    let _ = s.write(data);
    let mut sink = [0u8; 4096];
    let _ = s.read(&mut sink);
}
