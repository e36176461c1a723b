//! One vsock stream between a guest port and a Unix stream on the host: credit accounting both
//! ways (virtio 1.2 §5.10.6.3), the guest's bytes the Unix stream has not taken yet, and which
//! halves are shut.

use std::io;
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::packet::{ChainBuffers, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND};

/// Receive buffer we advertise per connection: at most this many of the guest's bytes wait for
/// the Unix stream.
pub const BUF_ALLOC: u32 = 256 << 10;
/// A credit update goes to the guest once the Unix stream has taken this many bytes since the
/// last `fwd_cnt` the guest saw.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;
/// A drained write buffer larger than this is freed rather than kept for the next burst.
const KEEP_BUFFER: usize = 64 << 10;

/// A connection as both ends name it: our (host) port and the guest's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: the guest has the REQUEST, the Unix client waits for `OK`.
    Connecting,
    Established,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the guest sent {len} bytes with {free} bytes of credit")]
    CreditExceeded { len: usize, free: usize },
    #[error("the Unix stream failed")]
    Stream(#[from] io::Error),
}

pub struct Connection {
    pub stream: UnixStream,
    /// Distinguishes this connection from an earlier one with the same ports, for packets
    /// queued before it existed.
    pub id: u64,
    pub state: State,
    /// Host to guest: bytes sent, and the guest's receive buffer as it last told us.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// The Unix stream reached its end.
    local_eof: bool,
    /// No more data goes to the guest (end of stream, or the guest shut its receive side).
    rx_closed: bool,
    /// Guest to host: bytes not yet taken by the Unix stream (from `pending_start`), bytes it
    /// took, and the count the guest last saw.
    pending: Vec<u8>,
    pending_start: usize,
    fwd_cnt: Wrapping<u32>,
    fwd_cnt_seen: Wrapping<u32>,
    /// The guest shut its send side: once `pending` drains, so is the Unix stream's.
    tx_closed: bool,
    write_shut: bool,
    /// SHUTDOWN flags already sent to the guest.
    shutdown_sent: u32,
    /// The Unix stream hung up (EPOLLHUP/EPOLLERR, which epoll reports whatever the
    /// interest): it is out of the epoll set and read until its end without readiness events.
    pub hup: bool,
    /// Interest registered in the device's epoll set; `None` when not in it.
    registered: Option<EventSet>,
    /// In the device's list of connections to read from.
    pub rx_queued: bool,
    pub credit_update_queued: bool,
    /// When the connection is reset if it has not progressed: the guest's RESPONSE, or the end
    /// of the close handshake.
    pub deadline: Option<Instant>,
}

impl Connection {
    /// `registered`: the interest `stream` already has in the device's epoll set.
    pub fn new(stream: UnixStream, id: u64, state: State, registered: Option<EventSet>) -> Self {
        Connection {
            stream,
            id,
            state,
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            local_eof: false,
            rx_closed: false,
            pending: Vec::new(),
            pending_start: 0,
            fwd_cnt: Wrapping(0),
            fwd_cnt_seen: Wrapping(0),
            tx_closed: false,
            write_shut: false,
            shutdown_sent: 0,
            hup: false,
            registered,
            rx_queued: false,
            credit_update_queued: false,
            deadline: None,
        }
    }

    /// Every packet from the guest carries its receive buffer size and how much of it the
    /// guest's application has consumed.
    pub fn set_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
    }

    /// Bytes the guest can take now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        // A guest whose counters say it holds more than its buffer gets nothing.
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Our credit fields for a packet to the guest: (buf_alloc, fwd_cnt).
    pub fn advertise(&mut self) -> (u32, u32) {
        self.fwd_cnt_seen = self.fwd_cnt;
        (BUF_ALLOC, self.fwd_cnt.0)
    }

    pub fn needs_credit_update(&self) -> bool {
        (self.fwd_cnt - self.fwd_cnt_seen).0 >= CREDIT_UPDATE_THRESHOLD
    }

    pub fn wants_read(&self) -> bool {
        self.state == State::Established && !self.rx_closed && self.peer_credit() > 0
    }

    fn pending_len(&self) -> usize {
        self.pending.len() - self.pending_start
    }

    pub fn has_pending(&self) -> bool {
        self.pending_len() > 0
    }

    /// Reads what the Unix stream has for the guest, at most `max` (> 0) bytes, into `bufs`
    /// at `offset`. `Ok(0)`: the stream ended, and the connection knows.
    pub fn read_into(
        &mut self,
        bufs: &ChainBuffers<'_>,
        offset: usize,
        max: usize,
    ) -> io::Result<usize> {
        let n = bufs.read_from(offset, max, &self.stream)?;
        if n == 0 {
            self.local_eof = true;
            self.rx_closed = true;
        }
        // n <= max <= peer credit, a u32.
        self.rx_cnt += n as u32;
        Ok(n)
    }

    /// Takes `len` bytes of guest data at `offset` in `bufs`: straight into the Unix stream
    /// while it takes them, into `pending` after that.
    pub fn recv(
        &mut self,
        bufs: &ChainBuffers<'_>,
        offset: usize,
        len: usize,
    ) -> Result<(), ConnError> {
        let free = BUF_ALLOC as usize - self.pending_len();
        if len > free {
            return Err(ConnError::CreditExceeded { len, free });
        }
        let mut written = 0;
        if !self.has_pending() {
            written = bufs.write_to(offset, len, &self.stream)?;
            // written <= len <= BUF_ALLOC.
            self.fwd_cnt += written as u32;
        }
        if written < len {
            if self.pending_start > 0 {
                self.pending.drain(..self.pending_start);
                self.pending_start = 0;
            }
            bufs.append_to(offset + written, len - written, &mut self.pending);
        }
        Ok(())
    }

    /// Writes `pending` to the Unix stream until it would block; shuts the stream's write side
    /// once it is drained after the guest shut its send side.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.has_pending() {
            match contract::sock::send(&self.stream, &self.pending[self.pending_start..]) {
                Ok(n) => {
                    self.pending_start += n;
                    // n <= pending <= BUF_ALLOC.
                    self.fwd_cnt += n as u32;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !self.has_pending() {
            self.pending_start = 0;
            if self.pending.capacity() > KEEP_BUFFER {
                self.pending = Vec::new();
            } else {
                self.pending.clear();
            }
            if self.tx_closed && !self.write_shut {
                self.write_shut = true;
                shutdown(&self.stream, Shutdown::Write)?;
            }
        }
        Ok(())
    }

    /// The guest's SHUTDOWN: it receives no more (`SHUTDOWN_RCV`), sends no more
    /// (`SHUTDOWN_SEND`), or both.
    pub fn guest_shutdown(&mut self, flags: u32) -> io::Result<()> {
        if flags & SHUTDOWN_RCV != 0 && !self.rx_closed {
            self.rx_closed = true;
            shutdown(&self.stream, Shutdown::Read)?;
        }
        if flags & SHUTDOWN_SEND != 0 {
            self.tx_closed = true;
        }
        self.flush()
    }

    /// The guest shut its send side: more data from it is a protocol error.
    pub fn tx_closed(&self) -> bool {
        self.tx_closed
    }

    /// SHUTDOWN flags the guest should get now (cumulative), if they say more than those it
    /// has: SEND once the Unix stream ended, RCV once it hung up.
    pub fn shutdown_due(&mut self) -> Option<u32> {
        // A stream that hung up is read to its end first, so that the guest hears of both
        // halves at once.
        if self.hup && !self.rx_closed {
            return None;
        }
        let mut flags = self.shutdown_sent;
        if self.local_eof {
            flags |= SHUTDOWN_SEND;
        }
        if self.hup {
            flags |= SHUTDOWN_RCV;
        }
        if flags == self.shutdown_sent {
            return None;
        }
        self.shutdown_sent = flags;
        Some(flags)
    }

    /// Waiting for the close handshake: the guest was told both halves are shut, or both are.
    pub fn closing(&self) -> bool {
        self.shutdown_sent == SHUTDOWN_BOTH || (self.rx_closed && self.tx_closed)
    }

    /// Nothing is left to move either way.
    pub fn finished(&self) -> bool {
        self.rx_closed && self.tx_closed && !self.has_pending()
    }

    /// Brings the stream's epoll interest in line with the state: reads while the guest has
    /// credit, writes while guest data waits, out of the set once it hung up.
    pub fn sync_interest(&mut self, epoll: &Epoll) -> io::Result<()> {
        let want = (!self.hup).then(|| {
            let mut events = EventSet::empty();
            if self.wants_read() {
                events |= EventSet::IN;
            }
            if self.has_pending() {
                events |= EventSet::OUT;
            }
            events
        });
        if want == self.registered {
            return Ok(());
        }
        let fd = self.stream.as_raw_fd();
        let token = fd as u64;
        match (self.registered, want) {
            (None, Some(events)) => {
                epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))?
            }
            (Some(_), Some(events)) => {
                epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token))?
            }
            (Some(_), None) => epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())?,
            (None, None) => {}
        }
        self.registered = want;
        Ok(())
    }
}

/// shutdown(2), where a peer that is already gone is not an error.
fn shutdown(stream: &UnixStream, how: Shutdown) -> io::Result<()> {
    match stream.shutdown(how) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}
