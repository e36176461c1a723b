//! Firecracker's hybrid vsock, as seen from a Unix socket.
//!
//! - Host to guest: connect to the VMM's socket, write `CONNECT <port>\n`, read `OK <n>\n`
//!   (`n` is the host-side port the VMM assigned); from then on the stream is the connection.
//!   When nothing listens on the guest port the VMM closes the stream instead.
//! - Guest to host: a guest connection to CID 2 port `P` reaches the Unix socket `<path>_P`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest handshake line either side accepts, newline included.
pub const MAX_LINE: usize = 64;

/// Parses a `CONNECT <port>\n` line (without its newline); `None` when it is anything else.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// The reply to an accepted `CONNECT`.
pub fn ok_line(host_port: u32) -> String {
    format!("OK {host_port}\n")
}

/// The Unix socket a guest connection to host port `port` reaches: `<path>_<port>`.
pub fn host_listener_path(path: &Path, port: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!("_{port}"));
    PathBuf::from(name)
}

/// Connects to guest port `port` through the hybrid socket at `path`. Errors with
/// `ConnectionRefused` when nothing listens there in the guest.
pub fn connect(path: &Path, port: u32) -> io::Result<UnixStream> {
    handshake(UnixStream::connect(path)?, port)
}

/// [`connect`], giving up (`TimedOut`) when the handshake has not ended after `timeout`: the
/// other end (a VMM a guest may have taken over, or the guest itself) may never answer.
pub fn connect_timeout(path: &Path, port: u32, timeout: Duration) -> io::Result<UnixStream> {
    if timeout.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let stream = handshake(stream, port).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
        _ => e,
    })?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(stream)
}

fn handshake(mut stream: UnixStream, port: u32) -> io::Result<UnixStream> {
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let line = read_line(&mut stream)?;
    match line
        .strip_prefix(b"OK ")
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<u32>().ok())
    {
        Some(_) => Ok(stream),
        None if line.is_empty() => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("nothing listens on guest vsock port {port}"),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unexpected hybrid vsock reply {:?}",
                String::from_utf8_lossy(&line)
            ),
        )),
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes, byte by byte (nothing after
/// the newline is consumed). Returns the line without its newline; empty at end of stream.
pub fn read_line(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => {
                return if line.is_empty() {
                    Ok(line)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                }
            }
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) if line.len() + 1 >= MAX_LINE => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "hybrid vsock line too long",
                ))
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT ",
            b"CONNECT -1",
            b"CONNECT +1",
            b"CONNECT 4294967296",
            b"connect 1",
            b"CONNECT 1 2",
            b"CONNECT \xff",
        ] {
            assert_eq!(
                parse_connect(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A VMM or guest that takes the connection and never answers holds it up no longer than
    /// asked.
    #[test]
    fn a_handshake_that_is_never_answered_times_out() {
        let dir = std::env::temp_dir().join(format!("hybrid-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        let _ = std::fs::remove_file(&path);
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let started = std::time::Instant::now();
        let err = connect_timeout(&path, 1024, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = connect_timeout(&path, 1024, Duration::ZERO).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listener_paths() {
        assert_eq!(
            host_listener_path(Path::new("/run/x/v.sock"), 1025),
            PathBuf::from("/run/x/v.sock_1025")
        );
    }

    #[test]
    fn lines_are_bounded_and_stop_at_newline() {
        let mut input: &[u8] = b"OK 7\nrest";
        assert_eq!(read_line(&mut input).unwrap(), b"OK 7");
        assert_eq!(input, b"rest");
        let mut empty: &[u8] = b"";
        assert_eq!(read_line(&mut empty).unwrap(), b"");
        let mut long: &[u8] = &[b'a'; 100];
        assert!(read_line(&mut long).is_err());
        let mut cut: &[u8] = b"OK";
        assert!(read_line(&mut cut).is_err());
    }
}
