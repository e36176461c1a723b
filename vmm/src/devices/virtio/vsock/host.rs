//! The host side of the hybrid vsock, kept out of the device: the Unix socket host clients
//! connect to (bound here, its file removed here), and the connector, which makes the device's
//! connections to the host's `<uds>_<port>` listeners and hands them over as descriptors.
//!
//! So the device needs no socket path at all: it accepts on a listener it was given and asks
//! the connector, over a socket pair, for the connections the guest requests. A VMM in a
//! process of its own (crate::backend::process) gets both descriptors from its parent, which
//! runs the connector: it can neither create a socket nor connect one to anything, nor remove a
//! file (crate::seccomp), and whatever it asks for, the connector connects only to
//! `<uds>_<port>`.
//!
//! The connector's protocol, on a stream socket pair: the device writes a port (`u32`,
//! little-endian); the connector answers with an `i32` (little-endian): 0 with the connected
//! stream attached (`SCM_RIGHTS`), or the errno of the failed connection.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use contract::hybrid::host_listener_path;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};

use super::unix::connect_nonblocking;
use super::Error;

/// How long the device waits for the connector's answer before it gives up on the connector
/// for good (guest connections to the host are refused from then on).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The host's part: the socket file and the connector's thread, which is ended and joined
/// when this is dropped, before the file is removed.
pub struct HostSide {
    /// The connector's end of the socket pair: shut down to end the connector.
    end: UnixStream,
    connector: Option<JoinHandle<()>>,
    _file: SocketFile,
}

/// A socket file, removed when dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The device's part: the listener host clients connect to, and its end of the connector.
pub struct DeviceSide {
    pub listener: UnixListener,
    pub connector: UnixStream,
}

/// Listens on `uds_path` (a stale socket there is replaced; anything else is an error) and
/// starts the connector for `<uds_path>_<port>`.
pub fn open(uds_path: &Path) -> Result<(HostSide, DeviceSide), Error> {
    let listen_err = |source| Error::Listen {
        path: uds_path.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(uds_path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(uds_path).map_err(listen_err)?;
    }
    let listener = UnixListener::bind(uds_path).map_err(listen_err)?;
    // Removed again if anything below fails.
    let file = SocketFile(uds_path.to_path_buf());
    listener.set_nonblocking(true).map_err(listen_err)?;
    let connector_err = |source| Error::Connector {
        path: uds_path.to_path_buf(),
        source,
    };
    let (device_end, host_end) = UnixStream::pair().map_err(connector_err)?;
    device_end
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(connector_err)?;
    let end = host_end.try_clone().map_err(connector_err)?;
    let uds = uds_path.to_path_buf();
    let connector = thread::Builder::new()
        .name("vsock-connector".into())
        .spawn(move || serve(host_end, &uds))
        .map_err(connector_err)?;
    Ok((
        HostSide {
            end,
            connector: Some(connector),
            _file: file,
        },
        DeviceSide {
            listener,
            connector: device_end,
        },
    ))
}

impl Drop for HostSide {
    fn drop(&mut self) {
        let _ = self.end.shutdown(std::net::Shutdown::Both);
        if let Some(connector) = self.connector.take() {
            let _ = connector.join();
        }
    }
}

impl DeviceSide {
    /// The device's part from descriptors a parent process handed over.
    ///
    /// # Safety
    /// `listener` and `connector` must be open descriptors that nothing else owns: a listening
    /// Unix stream socket and the device's end of a connector's socket pair.
    pub unsafe fn from_fds(listener: RawFd, connector: RawFd) -> DeviceSide {
        // SAFETY: the caller guarantees both are open and owned by nothing else.
        unsafe {
            DeviceSide {
                listener: UnixListener::from_raw_fd(listener),
                connector: UnixStream::from_raw_fd(connector),
            }
        }
    }
}

/// The connector: answers each port the device asks for until the device's end closes.
fn serve(mut stream: UnixStream, uds: &Path) {
    let mut port = [0u8; 4];
    while stream.read_exact(&mut port).is_ok() {
        let path = host_listener_path(uds, u32::from_le_bytes(port));
        let sent = match connect_nonblocking(&path) {
            Ok(conn) => answer(&stream, 0, Some(conn.as_raw_fd())),
            Err(e) => answer(&stream, e.raw_os_error().unwrap_or(libc::EIO), None),
        };
        if sent.is_err() {
            return;
        }
    }
}

fn answer(stream: &UnixStream, errno: i32, fd: Option<RawFd>) -> io::Result<()> {
    let bytes = errno.to_le_bytes();
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// The device's end of the connector. Once an answer failed to come, it refuses everything:
/// a late answer would otherwise be taken for the next one's.
pub struct Connector {
    stream: UnixStream,
    broken: bool,
}

impl Connector {
    pub fn new(stream: UnixStream) -> Connector {
        Connector {
            stream,
            broken: false,
        }
    }

    /// A connection to the host's listener for `port`, non-blocking, or why there is none.
    pub fn connect(&mut self, port: u32) -> io::Result<UnixStream> {
        if self.broken {
            return Err(io::Error::other("the vsock connector stopped answering"));
        }
        self.ask(port).unwrap_or_else(|e| {
            tracing::warn!(
                "virtio-vsock: the connector failed ({e}); no more guest connections to the host"
            );
            self.broken = true;
            Err(e)
        })
    }

    /// The connector's answer (a connection, or the errno of the one it could not make), or
    /// the error of the exchange itself.
    fn ask(&mut self, port: u32) -> io::Result<io::Result<UnixStream>> {
        self.stream.write_all(&port.to_le_bytes())?;
        let mut errno = [0u8; 4];
        let mut space = nix::cmsg_space!(RawFd);
        let mut iov = [IoSliceMut::new(&mut errno)];
        let msg = socket::recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut received = None;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS just installed this descriptor in this process, and
                    // nothing else owns it; extra ones are closed here.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    received.get_or_insert(fd);
                }
            }
        }
        let bytes = msg.bytes;
        if bytes != 4 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the vsock connector answered {bytes} bytes"),
            ));
        }
        Ok(match (i32::from_le_bytes(errno), received) {
            (0, Some(fd)) => Ok(UnixStream::from(fd)),
            (0, None) => {
                return Err(io::Error::other(
                    "the vsock connector answered without a connection",
                ))
            }
            (errno, _) => Err(io::Error::from_raw_os_error(errno)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_to_listeners_by_port_and_removes_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let (host, device) = open(&uds).unwrap();
        assert!(uds.exists());
        let listener = UnixListener::bind(host_listener_path(&uds, 1025)).unwrap();
        let mut connector = Connector::new(device.connector);
        let mut conn = connector.connect(1025).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        conn.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        // Nothing listens on 1026: the errno comes back, and the connector still serves.
        let err = connector.connect(1026).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        connector.connect(1025).unwrap();
        // The host side goes: the socket file with it, and the connector stops answering.
        drop(host);
        assert!(!uds.exists());
        assert!(connector.connect(1025).is_err());
        assert!(connector.broken);
    }
}
