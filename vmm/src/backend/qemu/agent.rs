//! The host end of the agent link on QEMU: QEMU's virtio-serial port is one end of a socket
//! pair, and the multiplexer (contract::mux) serves the hybrid-vsock socket the caller asked
//! for over the other.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;

use contract::mux::{self, Role};
use vmm_sys_util::eventfd::EventFd;

use super::QemuError;

/// The link and the socket, before QEMU starts.
pub struct AgentMux {
    link: UnixStream,
    socket: UnixListener,
    socket_path: PathBuf,
}

/// A running [`AgentMux`].
pub struct ServedMux {
    done: EventFd,
    thread: thread::JoinHandle<()>,
    socket_path: PathBuf,
}

impl AgentMux {
    /// Binds the caller's socket before QEMU starts (clients may connect as soon as the guest
    /// says it is ready); returns QEMU's end of the link too.
    pub fn listen(socket_path: &Path) -> Result<(AgentMux, OwnedFd), QemuError> {
        let err = |e| QemuError::AgentSocket(socket_path.to_path_buf(), e);
        let _ = std::fs::remove_file(socket_path);
        let socket = UnixListener::bind(socket_path).map_err(err)?;
        let (link, qemus) = UnixStream::pair().map_err(err)?;
        let mux = AgentMux {
            link,
            socket,
            socket_path: socket_path.to_path_buf(),
        };
        Ok((mux, qemus.into()))
    }

    /// Multiplexes over the link, on a thread, until QEMU closes it or [`ServedMux::finish`].
    pub fn serve(self) -> Result<ServedMux, QemuError> {
        let err = |e| QemuError::AgentSocket(self.socket_path.clone(), e);
        let done = EventFd::new(libc::EFD_NONBLOCK).map_err(err)?;
        // SAFETY: `done` is open while the borrow lasts (it ends at once, with a copy).
        let stop = unsafe { BorrowedFd::borrow_raw(done.as_raw_fd()) }
            .try_clone_to_owned()
            .map_err(|e| QemuError::AgentSocket(self.socket_path.clone(), e))?;
        let socket_path = self.socket_path.clone();
        let thread = thread::Builder::new()
            .name("agent-mux".into())
            .spawn(move || {
                if let Err(e) = mux::run(
                    self.link.into(),
                    self.socket,
                    self.socket_path,
                    Role::Host,
                    Some(stop),
                ) {
                    tracing::warn!("agent link: {e}");
                }
            })
            .map_err(|e| QemuError::AgentSocket(socket_path.clone(), e))?;
        Ok(ServedMux {
            done,
            thread,
            socket_path,
        })
    }
}

impl ServedMux {
    /// QEMU has ended: stops the multiplexer and removes its socket.
    pub fn finish(self) {
        let _ = self.done.write(1);
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}
