//! Frames over a stream socket, each preceded by its length (4 bytes, big-endian): QEMU's
//! `-netdev stream` protocol, which passt speaks on its `--fd` socket.
//!
//! The socket is non-blocking and both directions go through fixed buffers: a read takes what
//! the buffer holds and frames are cut from it, however the stream split them; written frames
//! wait in the other buffer while the peer cannot take them.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::passt::Process;
use super::{Link, ETH_HLEN, MAX_FRAME};

const LEN_PREFIX: usize = 4;
/// Receive buffer: a whole frame of the largest size, and more frames per read.
const RX_BUF: usize = 256 << 10;
/// Frames queued for the peer, at most.
const TX_BUF: usize = 256 << 10;

pub struct Stream {
    sock: UnixStream,
    rx: Box<[u8]>,
    /// Received bytes not yet taken: `rx[rx_start..rx_end]`.
    rx_start: usize,
    rx_end: usize,
    /// Length of the frame `recv` returned, until it is consumed.
    frame: Option<usize>,
    /// Bytes still to discard of a frame too large to deliver.
    skip: usize,
    /// Length-prefixed frames not yet written.
    tx: Vec<u8>,
    /// The process at the other end, stopped when the stream is dropped.
    peer: Option<Process>,
}

impl Stream {
    /// A link over `sock`, which is made non-blocking.
    pub fn new(sock: UnixStream, peer: Option<Process>) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(Stream {
            sock,
            rx: vec![0; RX_BUF].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            frame: None,
            skip: 0,
            tx: Vec::with_capacity(TX_BUF),
            peer,
        })
    }

    /// Reads more of the stream: `Ok(false)` when nothing is there yet.
    fn fill(&mut self) -> io::Result<bool> {
        if self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        loop {
            return match self.sock.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => Err(self.closed()),
                Ok(n) => {
                    self.rx_end += n;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    fn closed(&mut self) -> io::Error {
        let why = match &mut self.peer {
            Some(peer) => peer.exit_report(),
            None => "the peer closed the socket".into(),
        };
        io::Error::new(io::ErrorKind::UnexpectedEof, why)
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Link for Stream {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn recv(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let have = self.rx_end - self.rx_start;
            if self.skip > 0 {
                let n = self.skip.min(have);
                self.rx_start += n;
                self.skip -= n;
                if self.skip == 0 {
                    continue;
                }
            } else if have >= LEN_PREFIX {
                let at = self.rx_start;
                let prefix = self.rx[at..at + LEN_PREFIX].try_into().expect("4 bytes");
                let len = u32::from_be_bytes(prefix) as usize;
                if !(ETH_HLEN..=MAX_FRAME).contains(&len) {
                    tracing::debug!("virtio-net: dropped a received frame of {len} bytes");
                    self.rx_start += LEN_PREFIX;
                    self.skip = len;
                    continue;
                }
                if have >= LEN_PREFIX + len {
                    self.frame = Some(len);
                    let start = at + LEN_PREFIX;
                    return Ok(Some(&self.rx[start..start + len]));
                }
            }
            // The buffer holds at most one partial frame, which fits in it.
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn consume(&mut self) {
        if let Some(len) = self.frame.take() {
            self.rx_start += LEN_PREFIX + len;
        }
    }

    fn can_queue(&self) -> bool {
        self.tx.len() + LEN_PREFIX + MAX_FRAME <= TX_BUF
    }

    fn queue(&mut self, frame: &[u8]) {
        if self.tx.len() + LEN_PREFIX + frame.len() > TX_BUF {
            tracing::debug!("virtio-net: transmit buffer full, frame dropped");
            return;
        }
        // At most MAX_FRAME bytes, checked by the device.
        self.tx
            .extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.tx.extend_from_slice(frame);
    }

    fn flush(&mut self) -> io::Result<bool> {
        while !self.tx.is_empty() {
            let n = match contract::sock::send(&self.sock, &self.tx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.tx.drain(..n);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    fn pair() -> (Stream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Stream::new(a, None).unwrap(), b)
    }

    #[test]
    fn frames_split_across_reads() {
        let (mut s, mut peer) = pair();
        let f1 = [1u8; 60];
        let f2 = [2u8; 100];
        let mut bytes = framed(&f1);
        bytes.extend(framed(&f2));
        assert_eq!(s.recv().unwrap(), None);
        // The length prefix itself arrives in two pieces, then the rest byte by byte.
        peer.write_all(&bytes[..2]).unwrap();
        assert_eq!(s.recv().unwrap(), None);
        for b in &bytes[2..63] {
            peer.write_all(&[*b]).unwrap();
            assert_eq!(s.recv().unwrap(), None);
        }
        peer.write_all(&bytes[63..70]).unwrap();
        assert_eq!(s.recv().unwrap(), Some(&f1[..]));
        // Not consumed: the same frame again.
        assert_eq!(s.recv().unwrap(), Some(&f1[..]));
        s.consume();
        assert_eq!(s.recv().unwrap(), None);
        peer.write_all(&bytes[70..]).unwrap();
        assert_eq!(s.recv().unwrap(), Some(&f2[..]));
        s.consume();
        assert_eq!(s.recv().unwrap(), None);
    }

    #[test]
    fn oversized_and_runt_frames_are_skipped() {
        let (mut s, mut peer) = pair();
        let big = vec![7u8; MAX_FRAME + 1];
        let good = [3u8; 64];
        let writer = std::thread::spawn(move || {
            peer.write_all(&framed(&big)).unwrap();
            peer.write_all(&framed(&[9u8; 10])).unwrap();
            peer.write_all(&framed(&[])).unwrap();
            peer.write_all(&framed(&good)).unwrap();
            peer
        });
        let got = loop {
            if let Some(f) = s.recv().unwrap() {
                break f.to_vec();
            }
        };
        assert_eq!(got, good);
        s.consume();
        let _peer = writer.join().unwrap();
        assert_eq!(s.recv().unwrap(), None);
    }

    #[test]
    fn a_closed_peer_is_an_error() {
        let (mut s, peer) = pair();
        drop(peer);
        // A test forking meanwhile holds the peer's descriptor until its child execs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let e = loop {
            match s.recv() {
                Err(e) => break e,
                Ok(_) => assert!(std::time::Instant::now() < deadline, "no end of stream"),
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        s.queue(&[0u8; 60]);
        assert!(s.flush().is_err());
    }

    #[test]
    fn queued_frames_wait_for_a_slow_peer() {
        let (mut s, mut peer) = pair();
        let frame = vec![5u8; MAX_FRAME];
        let mut queued = 0;
        // Until the socket and then the buffer are full.
        while s.can_queue() {
            s.queue(&frame);
            queued += 1;
            s.flush().unwrap();
            assert!(queued < 100, "the socket never filled");
        }
        assert!(!s.flush().unwrap());
        let reader = std::thread::spawn(move || {
            let mut all = vec![0u8; queued * (LEN_PREFIX + MAX_FRAME)];
            peer.read_exact(&mut all).unwrap();
            all
        });
        while !s.flush().unwrap() {
            std::thread::yield_now();
        }
        let all = reader.join().unwrap();
        for chunk in all.chunks(LEN_PREFIX + MAX_FRAME) {
            assert_eq!(chunk[..LEN_PREFIX], (MAX_FRAME as u32).to_be_bytes());
            assert!(chunk[LEN_PREFIX..].iter().all(|b| *b == 5));
        }
    }
}
