//! The vsock packet header (virtio 1.2 §5.10.6) and a descriptor chain's buffers as guest
//! memory slices, so payloads move between guest memory and sockets without a copy in between.

use std::io;
use std::os::unix::net::UnixStream;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::VolatileMemoryError;
use vm_memory::{GuestMemoryBackend, ReadVolatile, VolatileSlice, WriteVolatile};

use crate::memory::GuestMemory;

/// `struct virtio_vsock_hdr`: 44 bytes, packed, little endian.
pub const HEADER_SIZE: usize = 44;
/// The only socket type offered: `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;
/// Largest payload of one packet, either way (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD: usize = 64 << 10;
/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// `VIRTIO_VSOCK_OP_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
}

impl Op {
    pub fn from_raw(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Header {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap());
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// The device-readable or the device-writable buffers of one descriptor chain, in order, each
/// checked to lie inside guest memory.
pub struct ChainBuffers<'m> {
    slices: Vec<VolatileSlice<'m>>,
    len: usize,
}

impl<'m> ChainBuffers<'m> {
    /// The chain's device-readable buffers; `None` if one is outside guest memory.
    pub fn readable(mem: &'m GuestMemory, chain: &DescriptorChain<&GuestMemory>) -> Option<Self> {
        Self::collect(mem, chain.clone().readable())
    }

    /// The chain's device-writable buffers; `None` if one is outside guest memory.
    pub fn writable(mem: &'m GuestMemory, chain: &DescriptorChain<&GuestMemory>) -> Option<Self> {
        Self::collect(mem, chain.clone().writable())
    }

    fn collect(mem: &'m GuestMemory, descs: impl Iterator<Item = Descriptor>) -> Option<Self> {
        let mut slices = Vec::new();
        let mut len = 0usize;
        for desc in descs {
            let n = desc.len() as usize;
            len = len.checked_add(n)?;
            for slice in GuestMemoryBackend::get_slices(mem, desc.addr(), n) {
                slices.push(slice.ok()?);
            }
        }
        Some(ChainBuffers { slices, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes from `offset`, at most `max` of them, as slices of guest memory.
    fn range(&self, offset: usize, max: usize) -> impl Iterator<Item = VolatileSlice<'m>> + '_ {
        self.slices
            .iter()
            .scan((offset, max), |(skip, left), s| {
                if *left == 0 {
                    return None;
                }
                if *skip >= s.len() {
                    *skip -= s.len();
                    return Some(None);
                }
                let n = (s.len() - *skip).min(*left);
                let piece = s.subslice(*skip, n).ok();
                *skip = 0;
                *left -= n;
                Some(piece)
            })
            .flatten()
    }

    /// Copies bytes from `offset` into `buf`; returns how many there were.
    pub fn copy_out(&self, offset: usize, buf: &mut [u8]) -> usize {
        let mut done = 0;
        for piece in self.range(offset, buf.len()) {
            done += piece.copy_to(&mut buf[done..]);
        }
        done
    }

    /// Copies `buf` to `offset`; returns how many bytes fitted.
    pub fn copy_in(&self, offset: usize, buf: &[u8]) -> usize {
        let mut done = 0;
        for piece in self.range(offset, buf.len()) {
            piece.copy_from(&buf[done..done + piece.len()]);
            done += piece.len();
        }
        done
    }

    /// Appends `len` bytes from `offset` to `out`.
    pub fn append_to(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        for piece in self.range(offset, len) {
            let old = out.len();
            out.resize(old + piece.len(), 0);
            piece.copy_to(&mut out[old..]);
        }
    }

    /// Reads at most `max` (> 0) bytes from `stream` into the buffers at `offset`. `Ok(0)` is
    /// the end of the stream; `WouldBlock` means nothing was there.
    pub fn read_from(&self, offset: usize, max: usize, stream: &UnixStream) -> io::Result<usize> {
        let mut total = 0;
        for mut piece in self.range(offset, max) {
            let want = piece.len();
            let n = loop {
                match (&*stream).read_volatile(&mut piece) {
                    Ok(n) => break n,
                    Err(e) => match io_error(e) {
                        e if e.kind() == io::ErrorKind::Interrupted => {}
                        e if e.kind() == io::ErrorKind::WouldBlock && total > 0 => {
                            return Ok(total)
                        }
                        e => return Err(e),
                    },
                }
            };
            total += n;
            // A short read: the socket is drained (or at its end) for now.
            if n < want {
                break;
            }
        }
        Ok(total)
    }

    /// Writes at most `max` bytes at `offset` to `stream`, until it would block; returns how
    /// many it took.
    pub fn write_to(&self, offset: usize, max: usize, stream: &UnixStream) -> io::Result<usize> {
        let mut total = 0;
        for piece in self.range(offset, max) {
            let mut done = 0;
            while done < piece.len() {
                let rest = piece.offset(done).map_err(io::Error::other)?;
                match (&*stream).write_volatile(&rest) {
                    Ok(n) => done += n,
                    Err(e) => match io_error(e) {
                        e if e.kind() == io::ErrorKind::Interrupted => {}
                        e if e.kind() == io::ErrorKind::WouldBlock => return Ok(total + done),
                        e => return Err(e),
                    },
                }
            }
            total += done;
        }
        Ok(total)
    }
}

fn io_error(e: VolatileMemoryError) -> io::Error {
    match e {
        VolatileMemoryError::IOError(e) => e,
        e => io::Error::other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_packed_little_endian() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x0102_0304,
            dst_port: 1024,
            len: 7,
            kind: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: SHUTDOWN_SEND,
            buf_alloc: 256 << 10,
            fwd_cnt: 9,
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 3);
        assert_eq!(&b[16..20], &[4, 3, 2, 1]);
        assert_eq!(b[30], 5);
        assert_eq!(Header::parse(&b), h);
        assert_eq!(Op::from_raw(8), None);
        assert_eq!(Op::from_raw(0), None);
    }
}
