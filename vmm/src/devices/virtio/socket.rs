//! Writing to a host socket from a device: never SIGPIPE, never block.

use std::io;
use std::os::fd::AsRawFd;

/// `send(2)` with `MSG_NOSIGNAL | MSG_DONTWAIT`: a closed peer is `EPIPE` (not a signal that
/// would end the VMM), a full socket `WouldBlock`. Returns the bytes sent.
pub fn send(sock: &impl AsRawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: send(2) reads at most data.len() bytes from data, which outlives the call.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
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
}
