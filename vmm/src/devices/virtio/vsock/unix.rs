//! The Unix side of the hybrid vsock: the `CONNECT <port>` line of a host client, read without
//! blocking, and connections to the host's `<uds>_<port>` listeners that cannot block either.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use contract::hybrid::{parse_connect, MAX_LINE};

/// A host client that connected and has not finished its `CONNECT <port>\n` line.
pub struct Handshake {
    pub stream: UnixStream,
    line: Vec<u8>,
    /// It is dropped if the line is not complete by then.
    pub deadline: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the client closed before its CONNECT line was complete")]
    Closed,
    #[error("not a CONNECT line: {0:?}")]
    Garbage(String),
    #[error("reading the CONNECT line failed")]
    Read(#[from] io::Error),
}

impl Handshake {
    pub fn new(stream: UnixStream, deadline: Instant) -> Self {
        Handshake {
            stream,
            line: Vec::with_capacity(MAX_LINE),
            deadline,
        }
    }

    /// Reads what has arrived of the line, byte by byte so that nothing after the newline is
    /// consumed. `Ok(Some(port))` once the line is complete and valid; `Ok(None)` while it is
    /// not complete.
    pub fn advance(&mut self) -> Result<Option<u32>, HandshakeError> {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) if byte[0] == b'\n' => {
                    return parse_connect(&self.line).map(Some).ok_or_else(|| {
                        HandshakeError::Garbage(String::from_utf8_lossy(&self.line).into())
                    })
                }
                Ok(_) if self.line.len() + 1 >= MAX_LINE => {
                    return Err(HandshakeError::Garbage(
                        String::from_utf8_lossy(&self.line).into(),
                    ))
                }
                Ok(_) => self.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Connects a non-blocking stream socket to the Unix socket at `path`. Never waits: a listener
/// whose backlog is full refuses (`WouldBlock`) like one that is not there.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    // The path and its terminating NUL must fit.
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket() takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket() just returned this descriptor, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un and len does not exceed its size.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    #[test]
    fn connects_without_blocking_and_refuses_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        assert_eq!(
            connect_nonblocking(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let listener = UnixListener::bind(&path).unwrap();
        let mut s = connect_nonblocking(&path).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        let long = dir.path().join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn connect_lines_arrive_in_pieces() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut h = Handshake::new(a, Instant::now());
        assert!(matches!(h.advance(), Ok(None)));
        b.write_all(b"CONNECT 10").unwrap();
        assert!(matches!(h.advance(), Ok(None)));
        b.write_all(b"24\nafter").unwrap();
        assert_eq!(h.advance().unwrap(), Some(1024));
        // What follows the line stays in the stream.
        let mut rest = [0u8; 5];
        h.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"after");
    }
}
