//! A command in a sandbox: started through the guest agent, registered with its sandbox (to be
//! fed and signalled by ID), its output and end passed, as they come, to whoever asked for it.
//! When that one goes (its channel is dropped: the HTTP client disconnected), the command is
//! killed; the sandbox lives on.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vmm_sys_util::eventfd::EventFd;

use super::sandboxes::{Busy, Sandbox};
use sandbox::agent::{Command, Event, Input, Session, Wake};

/// Output chunks queued for a slow reader before the command waits for it.
const QUEUED_EVENTS: usize = 64;
/// How long a guest may take to report the end of a command after its own timeout killed it,
/// or after we killed it for a reader that went.
const END_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the sandbox runs {} commands already; wait for one to end",
        super::sandboxes::MAX_RUNNING_EXECS
    )]
    TooMany,
    #[error("starting the command in the sandbox")]
    Start(#[from] sandbox::booted::Error),
    #[error("the command's thread could not start")]
    Thread(#[source] std::io::Error),
    #[error("the starting task failed: {0}")]
    Task(String),
}

/// A command that runs: its ID in its sandbox, its events, the handle that feeds it.
pub struct Running {
    pub id: String,
    pub events: Events,
    pub input: Input,
}

/// A command's events as they come; dropping them kills the command.
pub struct Events {
    rx: mpsc::Receiver<Event>,
    /// Tells the command's thread, which may be waiting for the guest, that we went.
    gone: EventFd,
}

impl Events {
    /// The next event; none once the command has ended (or its VM has).
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.gone.write(1);
    }
}

/// Starts `command` in `sandbox`, listed in it as `shown`, and a thread that passes on its
/// events until it ends.
pub async fn start(
    sandbox: &Arc<Sandbox>,
    command: Command,
    shown: Vec<String>,
) -> Result<Running, Error> {
    let sandbox = sandbox.clone();
    tokio::task::spawn_blocking(move || start_blocking(sandbox, command, shown))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

fn start_blocking(
    sandbox: Arc<Sandbox>,
    command: Command,
    shown: Vec<String>,
) -> Result<Running, Error> {
    let busy = sandbox.busy();
    let gone = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Thread)?;
    let reader_gone = gone.try_clone().map_err(Error::Thread)?;
    let id = sandbox.exec_reserved(shown).ok_or(Error::TooMany)?;
    let session = sandbox.vm().session(&command).inspect_err(|_| {
        sandbox.exec_ended(&id, None);
    })?;
    let input = session.input();
    sandbox.exec_attached(&id, input.clone());
    let (tx, rx) = mpsc::channel(QUEUED_EVENTS);
    let pump = Pump {
        id: id.clone(),
        session,
        input: input.clone(),
        tx,
        reader_gone,
        timeout: command.timeout,
        _busy: busy,
    };
    let owner = sandbox.clone();
    std::thread::Builder::new()
        .name(format!("exec-{id}"))
        .spawn(move || pump.run(&owner))
        .map_err(|e| {
            // The session is dropped with the pump: the agent kills the command.
            sandbox.exec_ended(&id, None);
            Error::Thread(e)
        })?;
    Ok(Running {
        id,
        events: Events { rx, gone },
        input,
    })
}

/// The thread's part: reads the command's events and passes them on.
struct Pump {
    id: String,
    session: Session,
    input: Input,
    tx: mpsc::Sender<Event>,
    /// Readable once the reader has dropped its [`Events`].
    reader_gone: EventFd,
    timeout: Option<Duration>,
    _busy: Busy,
}

impl Pump {
    fn run(mut self, sandbox: &Sandbox) {
        let ended = sandbox.vm().ended();
        // A guest that does not report the end after its own timeout is not waited for.
        let mut deadline = self.timeout.map(|t| Instant::now() + t + END_GRACE);
        let mut reader_gone = false;
        let outcome = loop {
            let watched = [self.reader_gone.as_raw_fd()];
            let extra: &[RawFd] = if reader_gone { &[] } else { &watched };
            let event = match self.session.next(ended, extra, deadline) {
                Ok(Wake::Event(event)) => event,
                Ok(Wake::Extra(_)) => {
                    reader_gone = true;
                    self.kill(&mut deadline);
                    continue;
                }
                Err(e) => {
                    tracing::debug!("exec {}: {e}", self.id);
                    break None;
                }
            };
            let end = match &event {
                Event::Ended(outcome) => Some(outcome.clone()),
                _ => None,
            };
            if !reader_gone && self.tx.blocking_send(event).is_err() {
                reader_gone = true;
                self.kill(&mut deadline);
            }
            if let Some(outcome) = end {
                break Some(outcome);
            }
        };
        sandbox.exec_ended(&self.id, outcome.as_ref());
    }

    /// Whoever asked went away: the command goes too, and its end is waited for a while.
    fn kill(&self, deadline: &mut Option<Instant>) {
        let _ = self.input.signal(libc::SIGKILL);
        *deadline = Some(Instant::now() + END_GRACE);
    }
}
