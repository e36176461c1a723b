//! Writing to a socket whose peer may be gone or slow: never SIGPIPE, never block.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `send(2)` with `MSG_NOSIGNAL | MSG_DONTWAIT`, retried on `EINTR`: a closed peer is
/// `BrokenPipe` (not a signal that ends the process), a full socket `WouldBlock`. Returns the
/// bytes sent.
pub fn send(sock: impl AsFd, data: &[u8]) -> io::Result<usize> {
    let fd = sock.as_fd().as_raw_fd();
    loop {
        // SAFETY: send(2) reads at most data.len() bytes from data, which outlives the call.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!(send(&a, b"hi").unwrap(), 2);
        drop(b);
        assert_eq!(
            send(&a, b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn a_full_socket_would_block() {
        let (a, _b) = UnixStream::pair().unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let err = loop {
            if let Err(e) = send(&a, &chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
