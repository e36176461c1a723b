//! Pausing a running VM from the host, and letting it go on: a socket pair between the VM's
//! owner ([`PauseSwitch`]) and the backend that runs it ([`PauseLink`]). The owner writes one
//! request byte and reads one answer byte; the backend answers once the VM holds still (our
//! VMM: every vCPU and device thread parked, crate::kvm::control; QEMU: its `stop`), or once
//! it runs again. A VM that ended closes its end: the owner reads the end of the stream.
//!
//! A paused VM keeps its memory and its devices' state. The guest's clocks differ by backend:
//! on our VMM kvmclock follows the host's, so the guest sees the paused time pass at once when
//! it resumes (as on Firecracker); QEMU stops its virtual clock with the VM, so the guest's
//! falls behind by the paused time until something sets it (sandbox::booted does, through the
//! agent: `Backend::guest_clock_stops_when_paused`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

/// How long the owner waits for an answer: a pause waits for every vCPU to leave the guest,
/// which a vCPU busy writing to a console that nobody reads does only once its write returns.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

const PAUSE: u8 = b'p';
const RESUME: u8 = b'r';
const DONE: u8 = b'+';
const REFUSED: u8 = b'-';

/// What the owner asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseRequest {
    Pause,
    Resume,
}

impl PauseRequest {
    fn verb(self) -> &'static str {
        match self {
            PauseRequest::Pause => "pause",
            PauseRequest::Resume => "resume",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("cannot {0} the VM: it is not {state}", state = if *.0 == "pause" { "running" } else { "paused" })]
    Refused(&'static str),
    #[error("cannot {0} the VM: it has ended")]
    Ended(&'static str),
    #[error("cannot {0} the VM: its monitor did not answer within {ANSWER_TIMEOUT:?}")]
    TimedOut(&'static str),
    #[error("cannot {0} the VM: its pause link failed")]
    Link(&'static str, #[source] io::Error),
}

/// A new pair: the owner's switch, and the link a backend is given with the VM.
pub fn pause_link() -> io::Result<(PauseSwitch, PauseLink)> {
    let (owner, vm) = UnixStream::pair()?;
    owner.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    Ok((
        PauseSwitch(Mutex::new(owner)),
        PauseLink(File::from(OwnedFd::from(vm))),
    ))
}

/// The owner's side: pauses and resumes the VM, one request at a time.
pub struct PauseSwitch(Mutex<UnixStream>);

impl PauseSwitch {
    /// Returns once the VM holds still: from running only.
    pub fn pause(&self) -> Result<(), PauseError> {
        self.ask(PauseRequest::Pause)
    }

    /// Returns once the VM runs again: from paused only.
    pub fn resume(&self) -> Result<(), PauseError> {
        self.ask(PauseRequest::Resume)
    }

    fn ask(&self, request: PauseRequest) -> Result<(), PauseError> {
        let verb = request.verb();
        let mut stream = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let byte = match request {
            PauseRequest::Pause => PAUSE,
            PauseRequest::Resume => RESUME,
        };
        match stream.write_all(&[byte]) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(PauseError::Ended(verb)),
            Err(e) => return Err(PauseError::Link(verb, e)),
            Ok(()) => {}
        }
        let mut answer = [0];
        match stream.read(&mut answer) {
            Ok(0) => Err(PauseError::Ended(verb)),
            Ok(_) if answer[0] == DONE => Ok(()),
            Ok(_) => Err(PauseError::Refused(verb)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(PauseError::TimedOut(verb))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(PauseError::Ended(verb)),
            Err(e) => Err(PauseError::Link(verb, e)),
        }
    }
}

/// The backend's side: read with `read`/`write` alone, so that a filtered VMM thread can serve
/// it (crate::seccomp).
pub struct PauseLink(File);

impl PauseLink {
    /// The link whose descriptor a parent process handed down as `fd`.
    pub fn from_fd(fd: OwnedFd) -> Self {
        PauseLink(File::from(fd))
    }

    /// Readable when a request is waiting, or when the owner has gone.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The next request; `None` once the owner has gone (or sent what is not a request: it
    /// gets no answer and no more are read).
    pub fn next(&self) -> Option<PauseRequest> {
        let mut byte = [0];
        match (&self.0).read(&mut byte) {
            Ok(1) if byte[0] == PAUSE => Some(PauseRequest::Pause),
            Ok(1) if byte[0] == RESUME => Some(PauseRequest::Resume),
            _ => None,
        }
    }

    /// Tells the owner whether its request was carried out.
    pub fn answer(&self, done: bool) {
        // An owner that has gone asks nothing more.
        let _ = (&self.0).write_all(&[if done { DONE } else { REFUSED }]);
    }
}

impl From<PauseLink> for OwnedFd {
    fn from(link: PauseLink) -> OwnedFd {
        link.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn requests_get_their_answers_and_an_ended_vm_says_so() {
        let (switch, link) = pause_link().unwrap();
        let vm = thread::spawn(move || {
            assert_eq!(link.next(), Some(PauseRequest::Pause));
            link.answer(true);
            assert_eq!(link.next(), Some(PauseRequest::Pause));
            link.answer(false);
            assert_eq!(link.next(), Some(PauseRequest::Resume));
            link.answer(true);
        });
        switch.pause().unwrap();
        let refused = switch.pause().unwrap_err();
        assert!(matches!(refused, PauseError::Refused("pause")), "{refused}");
        assert_eq!(
            refused.to_string(),
            "cannot pause the VM: it is not running"
        );
        switch.resume().unwrap();
        vm.join().unwrap();
        let ended = switch.resume().unwrap_err();
        assert!(matches!(ended, PauseError::Ended("resume")), "{ended}");
    }

    #[test]
    fn the_link_ends_when_its_owner_goes_or_says_nonsense() {
        let (switch, link) = pause_link().unwrap();
        switch.0.lock().unwrap().write_all(b"x").unwrap();
        assert_eq!(link.next(), None);
        drop(switch);
        assert_eq!(link.next(), None);
    }
}
