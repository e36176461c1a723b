//! The channel multiplexer: Firecracker's hybrid vsock (see [`crate::hybrid`]) over one byte
//! stream, the "link", where there is no vsock device (the QEMU backend: a virtio-serial port).
//!
//! The same [`run`] loop runs at both ends, host and guest. Local clients connect to its
//! `listener` and write `CONNECT <port>\n`; the multiplexer opens a channel to the peer, which
//! connects to its own `<local_path>_<port>` Unix socket. When that works the client reads
//! `OK <channel id>\n` and the two streams are joined; when it does not, the client's stream is
//! closed (as the VMM does for a refused vsock connection). Either side may open channels.
//!
//! Link frames: `u32` channel id, `u8` op, `u32` payload length (all little-endian), payload of
//! at most [`MAX_DATA`] bytes (docs/agent-protocol.md). Channel ids are chosen by the side that
//! opens the channel, increasing, from its own half of the id space ([`Role`]), so ids are never
//! reused and frames that cross a reset are recognised as stale and dropped.
//!
//! Flow control is per channel: a side sends at most [`WINDOW`] bytes of data the receiver has
//! not credited back yet; the receiver credits bytes as its local client reads them. So a slow
//! reader on one channel never stalls the link or another channel, and every buffer is bounded:
//! per channel by the window, the link's output by [`LINK_OUT_HIGH`] (no local stream is read
//! above it) and [`LINK_OUT_MAX`] (the link is not read above it). A side that breaks the
//! protocol (unknown op, bad length, data over its credit, a frame for a channel never opened)
//! ends [`run`] with an error: the link is then out of step and cannot be trusted.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::hybrid;

/// Largest payload of a link frame (and of one `DATA` frame).
pub const MAX_DATA: usize = 64 << 10;
/// Bytes of data a side may have in flight on one channel before the receiver credits them.
pub const WINDOW: u32 = 256 << 10;
/// Channels open at once, those still waiting for the peer included.
pub const MAX_CHANNELS: usize = 256;
/// Local clients that have connected but not yet sent their `CONNECT` line.
const MAX_HANDSHAKES: usize = 32;
/// Above this much unsent link output, no local stream is read.
pub const LINK_OUT_HIGH: usize = 256 << 10;
/// Above this much unsent link output, the link itself is not read (so the replies it would
/// cause cannot pile up); only a peer that stops reading gets here.
pub const LINK_OUT_MAX: usize = 4 << 20;
/// Credit is returned once this much has been delivered locally, or when the buffer empties.
const CREDIT_BATCH: u32 = 64 << 10;
/// Bytes before a link frame's payload.
pub const FRAME_HEADER: usize = 9;
/// The id bit of channels the guest opens.
const GUEST_ID_BIT: u32 = 1 << 31;

/// Link frame operations.
mod op {
    /// Opener to peer: connect to your `<local_path>_<port>`; payload: `u32` port.
    pub const OPEN: u8 = 1;
    /// Peer to opener: connected.
    pub const ACCEPT: u8 = 2;
    /// Either way: the channel is refused or aborted; drop it.
    pub const RESET: u8 = 3;
    /// Either way: stream bytes (1..=MAX_DATA).
    pub const DATA: u8 = 4;
    /// Either way: end of this direction's stream (half close).
    pub const SHUTDOWN: u8 = 5;
    /// Either way: `u32` more bytes of data may be sent.
    pub const CREDIT: u8 = 6;
}

/// Which end of the link this is; it picks the half of the channel id space used for the
/// channels this side opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Host,
    Guest,
}

impl Role {
    fn first_id(self) -> u32 {
        match self {
            Role::Host => 1,
            Role::Guest => GUEST_ID_BIT | 1,
        }
    }

    fn opens(self, id: u32) -> bool {
        (id & GUEST_ID_BIT != 0) == (self == Role::Guest)
    }
}

/// Runs the multiplexer until the link closes (`Ok`), `stop` becomes readable or hangs up
/// (`Ok`), or the link fails or carries something that is not the protocol (`Err`).
///
/// `listener` serves local clients (hybrid `CONNECT`); channels the peer opens to port `P`
/// connect to `<local_path>_P`. `link` may be a socket or a character device.
pub fn run(
    link: OwnedFd,
    listener: UnixListener,
    local_path: PathBuf,
    role: Role,
    stop: Option<OwnedFd>,
) -> io::Result<()> {
    set_nonblocking(link.as_fd())?;
    listener.set_nonblocking(true)?;
    let mut mux = Mux {
        link_is_socket: is_socket(link.as_fd())?,
        link,
        link_in: Vec::with_capacity(FRAME_HEADER + MAX_DATA),
        link_out: VecDeque::new(),
        listener,
        local_path,
        role,
        next_id: role.first_id(),
        peer_last_id: 0,
        channels: BTreeMap::new(),
        handshakes: Vec::new(),
    };
    loop {
        match mux.turn(stop.as_ref().map(|fd| fd.as_fd()))? {
            Turn::Continue => {}
            Turn::Stop => return Ok(()),
        }
    }
}

enum Turn {
    Continue,
    Stop,
}

/// What a poll entry stands for.
#[derive(Clone, Copy)]
enum Target {
    Link,
    Stop,
    Listener,
    Handshake(usize),
    Channel(u32),
}

/// One joined stream.
struct Channel {
    stream: UnixStream,
    /// The peer accepted (always true for channels the peer opened).
    accepted: bool,
    /// Data from the peer not yet written to the local stream (at most [`WINDOW`]).
    to_local: VecDeque<u8>,
    /// How much data the peer still lets us send.
    send_credit: u32,
    /// How much data we still let the peer send.
    recv_allowance: u32,
    /// Delivered locally but not yet credited back.
    unreported: u32,
    /// The local stream ended and `SHUTDOWN` was sent.
    local_eof: bool,
    /// The peer sent `SHUTDOWN`.
    peer_eof: bool,
    /// The local stream's write side is shut down (after `peer_eof`, once flushed).
    write_shut: bool,
}

impl Channel {
    fn new(stream: UnixStream, accepted: bool) -> Self {
        Channel {
            stream,
            accepted,
            to_local: VecDeque::new(),
            send_credit: WINDOW,
            recv_allowance: WINDOW,
            unreported: 0,
            local_eof: false,
            peer_eof: false,
            write_shut: false,
        }
    }

    fn finished(&self) -> bool {
        self.local_eof && self.write_shut
    }
}

/// A local client that has not yet said which port it wants.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

struct Mux {
    link: OwnedFd,
    link_is_socket: bool,
    /// Received link bytes not yet parsed: at most one frame.
    link_in: Vec<u8>,
    link_out: VecDeque<u8>,
    listener: UnixListener,
    local_path: PathBuf,
    role: Role,
    next_id: u32,
    /// Highest id of a channel the peer opened.
    peer_last_id: u32,
    channels: BTreeMap<u32, Channel>,
    handshakes: Vec<Handshake>,
}

impl Mux {
    /// One poll and what it found ready.
    fn turn(&mut self, stop: Option<BorrowedFd<'_>>) -> io::Result<Turn> {
        let mut fds = Vec::new();
        let mut targets = Vec::new();
        let mut watch = |fd: RawFd, events: libc::c_short, target: Target| {
            if events != 0 {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                targets.push(target);
            }
        };
        let mut link_events = 0;
        if self.link_out.len() < LINK_OUT_MAX {
            link_events |= libc::POLLIN;
        }
        if !self.link_out.is_empty() {
            link_events |= libc::POLLOUT;
        }
        watch(self.link.as_raw_fd(), link_events, Target::Link);
        if let Some(stop) = stop {
            watch(stop.as_raw_fd(), libc::POLLIN, Target::Stop);
        }
        if self.channels.len() + self.handshakes.len() < MAX_CHANNELS
            && self.handshakes.len() < MAX_HANDSHAKES
        {
            watch(self.listener.as_raw_fd(), libc::POLLIN, Target::Listener);
        }
        for (i, handshake) in self.handshakes.iter().enumerate() {
            watch(
                handshake.stream.as_raw_fd(),
                libc::POLLIN,
                Target::Handshake(i),
            );
        }
        let reading_local = self.link_out.len() < LINK_OUT_HIGH;
        for (&id, channel) in &self.channels {
            let mut events = 0;
            if reading_local && channel.accepted && !channel.local_eof && channel.send_credit > 0 {
                events |= libc::POLLIN;
            }
            if !channel.to_local.is_empty() {
                events |= libc::POLLOUT;
            }
            watch(channel.stream.as_raw_fd(), events, Target::Channel(id));
        }

        poll(&mut fds)?;

        let mut ready_handshakes = Vec::new();
        for (pfd, target) in fds.iter().zip(targets) {
            if pfd.revents == 0 {
                continue;
            }
            match target {
                Target::Stop => return Ok(Turn::Stop),
                Target::Link => {
                    if pfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
                        && !self.flush_link()?
                    {
                        return Ok(Turn::Stop);
                    }
                    if pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0
                        && !self.read_link()?
                    {
                        return Ok(Turn::Stop);
                    }
                }
                Target::Listener => self.accept_clients(),
                Target::Handshake(i) => ready_handshakes.push(i),
                Target::Channel(id) => self.service_channel(id),
            }
        }
        // Highest index first, so that swap_remove only moves entries already dealt with.
        for i in ready_handshakes.into_iter().rev() {
            self.continue_handshake(i);
        }
        if !self.flush_link()? {
            return Ok(Turn::Stop);
        }
        Ok(Turn::Continue)
    }

    fn queue(&mut self, id: u32, op: u8, payload: &[u8]) {
        self.link_out.extend(id.to_le_bytes());
        self.link_out.push_back(op);
        self.link_out.extend((payload.len() as u32).to_le_bytes());
        self.link_out.extend(payload);
    }

    /// Writes what the link takes now. `Ok(false)` when the peer has gone.
    fn flush_link(&mut self) -> io::Result<bool> {
        while !self.link_out.is_empty() {
            let (chunk, _) = self.link_out.as_slices();
            let written = if self.link_is_socket {
                crate::sock::send(self.link.as_fd(), chunk)
            } else {
                write(self.link.as_fd(), chunk)
            };
            match written {
                Ok(n) => {
                    self.link_out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if link_closed(&e) => return Ok(false),
                Err(e) => return Err(link_error(format!("write: {e}"))),
            }
        }
        Ok(true)
    }

    /// Reads from the link and handles every whole frame. `Ok(false)` at its end.
    fn read_link(&mut self) -> io::Result<bool> {
        let start = self.link_in.len();
        self.link_in.resize(FRAME_HEADER + MAX_DATA, 0);
        let read = read(self.link.as_fd(), &mut self.link_in[start..]);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                self.link_in.truncate(start);
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(true),
                    _ if link_closed(&e) => Ok(false),
                    _ => Err(link_error(format!("read: {e}"))),
                };
            }
        };
        self.link_in.truncate(start + n);
        if n == 0 {
            return Ok(false);
        }
        let mut at = 0;
        while let Some((id, op, len)) = parse_header(&self.link_in[at..])? {
            let end = at + FRAME_HEADER + len;
            if self.link_in.len() < end {
                break;
            }
            let payload = self.link_in[at + FRAME_HEADER..end].to_vec();
            self.handle_frame(id, op, &payload)?;
            at = end;
        }
        self.link_in.drain(..at);
        Ok(true)
    }

    fn handle_frame(&mut self, id: u32, op: u8, payload: &[u8]) -> io::Result<()> {
        let bad = |why: &str| link_error(format!("channel {id:#x}: {why}"));
        if id & !GUEST_ID_BIT == 0 {
            return Err(bad("no such channel id"));
        }
        let ours = self.role.opens(id);
        if ours && id >= self.next_id {
            return Err(bad("frame for a channel this side never opened"));
        }
        if !ours && op != op::OPEN && id > self.peer_last_id {
            return Err(bad("frame for a channel the peer never opened"));
        }
        match op {
            op::OPEN => {
                if ours {
                    return Err(bad("the peer opened a channel in this side's id space"));
                }
                if id <= self.peer_last_id {
                    return Err(bad("channel ids must increase"));
                }
                self.peer_last_id = id;
                let port = u32::from_le_bytes(payload.try_into().map_err(|_| bad("bad OPEN"))?);
                let path = hybrid::host_listener_path(&self.local_path, port);
                match (self.channels.len() < MAX_CHANNELS)
                    .then(|| connect_nonblocking(&path))
                    .and_then(Result::ok)
                {
                    Some(stream) => {
                        self.channels.insert(id, Channel::new(stream, true));
                        self.queue(id, op::ACCEPT, &[]);
                    }
                    None => self.queue(id, op::RESET, &[]),
                }
            }
            op::ACCEPT => {
                if !ours || !payload.is_empty() {
                    return Err(bad("bad ACCEPT"));
                }
                let Some(channel) = self.channels.get_mut(&id) else {
                    return Ok(()); // the client gave up meanwhile: its RESET is on the way
                };
                if channel.accepted {
                    return Err(bad("accepted twice"));
                }
                channel.accepted = true;
                let line = hybrid::ok_line(id);
                if !matches!(crate::sock::send(channel.stream.as_fd(), line.as_bytes()), Ok(n) if n == line.len())
                {
                    self.reset(id);
                }
            }
            op::RESET => {
                if !payload.is_empty() {
                    return Err(bad("bad RESET"));
                }
                self.channels.remove(&id);
            }
            op::DATA => {
                if payload.is_empty() {
                    return Err(bad("empty DATA"));
                }
                let Some(channel) = self.channels.get_mut(&id) else {
                    return Ok(()); // reset by this side; the peer did not know yet
                };
                if !channel.accepted || channel.peer_eof {
                    return Err(bad("DATA before ACCEPT or after SHUTDOWN"));
                }
                let len = payload.len() as u32;
                if len > channel.recv_allowance {
                    return Err(bad("DATA over the channel's credit"));
                }
                channel.recv_allowance -= len;
                channel.to_local.extend(payload);
            }
            op::SHUTDOWN => {
                if !payload.is_empty() {
                    return Err(bad("bad SHUTDOWN"));
                }
                let Some(channel) = self.channels.get_mut(&id) else {
                    return Ok(());
                };
                if !channel.accepted || channel.peer_eof {
                    return Err(bad("SHUTDOWN before ACCEPT or twice"));
                }
                channel.peer_eof = true;
                self.write_local(id);
            }
            op::CREDIT => {
                let credit = u32::from_le_bytes(payload.try_into().map_err(|_| bad("bad CREDIT"))?);
                let Some(channel) = self.channels.get_mut(&id) else {
                    return Ok(());
                };
                match channel.send_credit.checked_add(credit) {
                    Some(total) if total <= WINDOW => channel.send_credit = total,
                    _ => return Err(bad("CREDIT beyond the window")),
                }
            }
            _ => return Err(bad(&format!("unknown op {op}"))),
        }
        Ok(())
    }

    /// Drops a channel on this side and tells the peer to drop it too.
    fn reset(&mut self, id: u32) {
        self.channels.remove(&id);
        self.queue(id, op::RESET, &[]);
    }

    fn accept_clients(&mut self) {
        while self.channels.len() + self.handshakes.len() < MAX_CHANNELS
            && self.handshakes.len() < MAX_HANDSHAKES
        {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.handshakes.push(Handshake {
                            stream,
                            line: Vec::new(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: none left; anything else (ECONNABORTED, EMFILE): try again later.
                Err(_) => return,
            }
        }
    }

    /// Reads the client's `CONNECT` line byte by byte (nothing after it is consumed), then
    /// opens its channel; a client that sends anything else is dropped.
    fn continue_handshake(&mut self, i: usize) {
        let handshake = &mut self.handshakes[i];
        let mut byte = [0u8; 1];
        let port = loop {
            match handshake.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break hybrid::parse_connect(&handshake.line),
                Ok(1) if handshake.line.len() + 1 < hybrid::MAX_LINE => {
                    handshake.line.push(byte[0])
                }
                Ok(_) => break None, // end of stream, or a line too long
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break None,
            }
        };
        let handshake = self.handshakes.swap_remove(i);
        let Some(port) = port else { return };
        let id = self.next_id;
        if id & !GUEST_ID_BIT == !GUEST_ID_BIT || self.channels.len() >= MAX_CHANNELS {
            return; // ids used up (after 2^31 channels) or too many channels: refused
        }
        self.next_id += 1;
        self.channels
            .insert(id, Channel::new(handshake.stream, false));
        self.queue(id, op::OPEN, &port.to_le_bytes());
    }

    fn service_channel(&mut self, id: u32) {
        self.write_local(id);
        self.read_local(id);
    }

    /// Writes buffered peer data to the local stream, credits what left, and passes on the
    /// peer's end of stream once everything before it is written.
    fn write_local(&mut self, id: u32) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let mut delivered = 0u32;
        while !channel.to_local.is_empty() {
            let (chunk, _) = channel.to_local.as_slices();
            match crate::sock::send(channel.stream.as_fd(), chunk) {
                Ok(n) => {
                    channel.to_local.drain(..n);
                    delivered += n as u32;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.reset(id),
            }
        }
        channel.unreported += delivered;
        let credit = channel.unreported;
        let flushed = channel.to_local.is_empty();
        if credit > 0 && (flushed || credit >= CREDIT_BATCH) {
            channel.unreported = 0;
            channel.recv_allowance += credit;
        }
        if flushed && channel.peer_eof && !channel.write_shut {
            channel.write_shut = true;
            // A client that already closed its end makes this fail; nothing is lost then.
            let _ = channel.stream.shutdown(std::net::Shutdown::Write);
        }
        let finished = channel.finished();
        if credit > 0 && (flushed || credit >= CREDIT_BATCH) && !channel.peer_eof {
            self.queue(id, op::CREDIT, &credit.to_le_bytes());
        }
        if finished {
            self.channels.remove(&id);
        }
    }

    /// Reads what the local client wrote, within the channel's credit, and sends it on.
    fn read_local(&mut self, id: u32) {
        let mut buf = vec![0u8; MAX_DATA];
        while self.link_out.len() < LINK_OUT_HIGH {
            let Some(channel) = self.channels.get_mut(&id) else {
                return;
            };
            if !channel.accepted || channel.local_eof || channel.send_credit == 0 {
                return;
            }
            let want = (channel.send_credit as usize).min(MAX_DATA);
            match channel.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    channel.local_eof = true;
                    let finished = channel.finished();
                    self.queue(id, op::SHUTDOWN, &[]);
                    if finished {
                        self.channels.remove(&id);
                    }
                    return;
                }
                Ok(n) => {
                    channel.send_credit -= n as u32;
                    self.queue(id, op::DATA, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.reset(id),
            }
        }
    }
}

/// (id, op, payload length) of the frame at the start of `buf`, once its header is there;
/// the length is checked before the payload is waited for.
fn parse_header(buf: &[u8]) -> io::Result<Option<(u32, u8, usize)>> {
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let id = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let op = buf[4];
    let len = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    if !(op::OPEN..=op::CREDIT).contains(&op) {
        return Err(link_error(format!("channel {id:#x}: unknown op {op}")));
    }
    if len > MAX_DATA {
        return Err(link_error(format!(
            "channel {id:#x}: frame of {len} bytes (at most {MAX_DATA})"
        )));
    }
    Ok(Some((id, op, len)))
}

fn link_error(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("mux link: {why}"))
}

/// The peer closed the link (an error only because of how it was noticed).
fn link_closed(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
    )
}

/// Connects to a local Unix socket without blocking: a listener whose backlog is full refuses
/// (EAGAIN) instead of stalling every other channel.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: socket has no memory arguments.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: socket returned a fresh descriptor that nothing else owns.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un and len does not exceed its size.
    cvt(unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    })?;
    Ok(stream)
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only read and write the file status flags of fd.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

fn is_socket(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid stat buffer for fstat to fill.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable slice of buf.len() bytes.
    cvt_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable slice of buf.len() bytes.
    cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

fn poll(fds: &mut [libc::pollfd]) -> io::Result<()> {
    loop {
        // SAFETY: fds is a valid array of fds.len() pollfd structures.
        match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests;
