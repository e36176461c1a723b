//! Pausing QEMU on its owner's requests (vm::PauseLink): QMP's `stop` and `cont`, on a monitor
//! of its own (QEMU takes several; a snapshot's save or restore keeps the other).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

use serde_json::json;
use vmm_sys_util::eventfd::EventFd;

use super::args::Handed;
use super::qmp::{Qmp, QmpError};
use super::QemuError;
use crate::vm::{PauseLink, PauseRequest};

/// The pause side of one QEMU run, before QEMU starts.
pub struct Pauser {
    /// QEMU's number for its end of the monitor's socket pair.
    pub monitor_fd: RawFd,
    monitor: UnixStream,
    link: PauseLink,
}

/// The thread that serves the owner's requests while QEMU runs.
pub struct Serving {
    /// Signalled once QEMU has ended: the thread ends and drops the link, so the owner hears
    /// that the VM has ended.
    ended: EventFd,
    thread: JoinHandle<()>,
}

impl Pauser {
    /// Hands QEMU its end of a new monitor.
    pub fn prepare(link: PauseLink, handed: &mut Handed) -> Result<Pauser, QemuError> {
        let (monitor, qemus) = UnixStream::pair().map_err(QemuError::Spawn)?;
        Ok(Pauser {
            monitor_fd: handed.push(qemus.into()),
            monitor,
            link,
        })
    }

    /// Serves the link on a thread of its own until QEMU ends ([`Serving::finish`]).
    pub fn serve(self) -> Result<Serving, QemuError> {
        let ended = EventFd::new(libc::EFD_NONBLOCK).map_err(QemuError::Spawn)?;
        let watched = ended.try_clone().map_err(QemuError::Spawn)?;
        let thread = thread::Builder::new()
            .name("qemu-pause".into())
            .spawn(move || {
                if let Err(e) = serve(self.link, self.monitor, &watched) {
                    tracing::warn!("pausing QEMU: {e}");
                }
            })
            .map_err(QemuError::Spawn)?;
        Ok(Serving { ended, thread })
    }
}

impl Serving {
    /// QEMU has ended: so does the thread.
    pub fn finish(self) {
        let _ = self.ended.write(1);
        let _ = self.thread.join();
    }
}

/// Answers each request with what QEMU did: a pause only from `running`, a resume only from
/// `paused` (QEMU's states: a VM still restoring, or saving, is neither). The monitor is opened
/// at the first request (QEMU's greeting waits in the socket until then).
fn serve(link: PauseLink, monitor: UnixStream, ended: &EventFd) -> Result<(), QmpError> {
    let mut monitor = Some(monitor);
    let mut qmp: Option<Qmp> = None;
    loop {
        if crate::poll::first_readable(&[ended.as_raw_fd(), link.fd()], None) != Some(1) {
            return Ok(());
        }
        // An owner that has gone asks nothing more.
        let Some(request) = link.next() else {
            return Ok(());
        };
        let qmp = match (&mut qmp, monitor.take()) {
            (Some(qmp), _) => qmp,
            (None, Some(stream)) => qmp.insert(Qmp::open(stream)?),
            (None, None) => unreachable!("the monitor is opened once"),
        };
        let status = qmp.execute("query-status", json!({}))?;
        let (from, command) = match request {
            PauseRequest::Pause => ("running", "stop"),
            PauseRequest::Resume => ("paused", "cont"),
        };
        let allowed = status.get("status").and_then(|s| s.as_str()) == Some(from);
        if allowed {
            qmp.execute(command, json!({}))?;
        }
        link.answer(allowed);
    }
}
