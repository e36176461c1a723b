//! The host side of the guest agent (docs/agent-protocol.md): waiting for it to say it is
//! ready and answering with the guest's environment (which never goes on the kernel command
//! line: contract::env), running commands through it (a [`Session`] the caller drives, or [`exec`], which
//! streams a command's output to ours), and receiving a folder's tree ([`TreeExport`]).
//!
//! It speaks to the VM's agent socket, which is the same hybrid-vsock Unix socket on both
//! backends (vsock on ours, the virtio-serial multiplexer on QEMU).

use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;
use vmm::poll::first_readable;

use contract::env::EnvVar;
use contract::frame::{self, ErrorKind, Exec, FrameError, Reply, Request};
use contract::{hybrid, AGENT_PORT, READY_PORT};
use vmm::vm::StopSignal;
use vmm_sys_util::eventfd::EventFd;

/// What to run in the guest.
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<Vec<u8>>,
    /// `NAME=VALUE` entries.
    pub env: Vec<Vec<u8>>,
    pub cwd: Option<Vec<u8>>,
    /// Forward our standard input.
    pub stdin: bool,
    pub timeout: Option<Duration>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    /// The guest killed its process group after this long.
    TimedOut(Duration),
    /// It could not be started: not found (the guest's message).
    NotFound(String),
    /// It could not be started for another reason.
    NotExecutable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening for the guest agent on {path}")]
    Listen {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the VM ended before its agent was ready")]
    EndedBeforeReady,
    #[error("the guest agent was not ready after {0:?}")]
    NotReady(Duration),
    #[error("the VM ended while the command ran")]
    EndedDuringCommand,
    #[error("the guest did not report the command's end within {0:?}; it is not responding")]
    NoReport(Duration),
    #[error("connecting to the guest agent")]
    Connect(#[source] io::Error),
    #[error("talking to the guest agent")]
    Frame(#[from] FrameError),
    #[error("the guest agent speaks protocol version {guest}, nodeos-vm {host}; rebuild the root image (nodeos-vm build --force)")]
    Version { guest: u32, host: u32 },
    #[error("the guest agent refused the request: {0}")]
    Refused(String),
    #[error("the guest agent sent {0} where it should not")]
    Unexpected(&'static str),
    #[error("catching SIGINT, SIGTERM and SIGHUP to pass them on to the command")]
    Signals(#[source] io::Error),
    #[error("the guest agent did not finish in the time allowed")]
    Deadline,
    #[error("the guest agent could not send the folder: {0}")]
    Export(String),
    #[error("starting the thread that answers the guest agent's hello")]
    Handshake(#[source] io::Error),
    #[error("the thread that answers the guest agent's hello panicked")]
    HandshakePanicked,
}

/// Listens where the agent says it is ready: `<socket>_1025`.
pub fn listen_ready(socket: &Path) -> Result<UnixListener, Error> {
    let path = hybrid::host_listener_path(socket, READY_PORT);
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).map_err(|source| Error::Listen { path, source })
}

/// Waits until the agent connects to `listener` and says hello, the VM ends, or `timeout`;
/// answers the agent with the guest's environment, `env`.
pub fn wait_ready(
    listener: &UnixListener,
    ended: &EventFd,
    timeout: Duration,
    env: &[EnvVar],
) -> Result<(), Error> {
    match first_readable(&[listener.as_raw_fd(), ended.as_raw_fd()], Some(timeout)) {
        Some(0) => {}
        Some(_) => return Err(Error::EndedBeforeReady),
        None => return Err(Error::NotReady(timeout)),
    }
    let (mut conn, _) = listener.accept().map_err(Error::Connect)?;
    match frame::read_reply(&mut conn)? {
        Some(Reply::Hello { version }) => check_version(version)?,
        Some(_) => return Err(Error::Unexpected("another message than hello when ready")),
        None => return Err(Error::Frame(FrameError::Truncated)),
    }
    frame::write_request(&mut conn, &Request::Env(env.to_vec())).map_err(FrameError::Io)?;
    Ok(())
}

/// The agent's ready handshake on a thread of its own, for a VM whose agent nothing else
/// talks to: `start`'s shell gets the guest's environment through it. The VM is stopped when
/// the agent does not say it is ready in time (its shell would wait for ever).
pub struct Handshake {
    thread: JoinHandle<Result<(), Error>>,
    vm_ended: EventFd,
}

impl Handshake {
    /// Listens on `socket`'s ready port now, before the VM boots, and answers with `env`.
    pub fn spawn(
        socket: &Path,
        env: Vec<EnvVar>,
        timeout: Duration,
        stop: StopSignal,
    ) -> Result<Handshake, Error> {
        let listener = listen_ready(socket)?;
        let vm_ended = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Handshake)?;
        let ended = vm_ended.try_clone().map_err(Error::Handshake)?;
        let thread = thread::Builder::new()
            .name("agent-ready".into())
            .spawn(move || {
                let answered = wait_ready(&listener, &ended, timeout, &env);
                if answered.is_err() {
                    stop.stop();
                }
                answered
            })
            .map_err(Error::Handshake)?;
        Ok(Handshake { thread, vm_ended })
    }

    /// Once the VM has ended: whether the agent got its answer. A VM that ended before its
    /// agent was ready is not this handshake's failure (how the VM ended says why).
    pub fn finish(self) -> Result<(), Error> {
        let _ = self.vm_ended.write(1);
        match self.thread.join() {
            Ok(Ok(()) | Err(Error::EndedBeforeReady)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::HandshakePanicked),
        }
    }
}

/// The agent's answer to our `Hello`.
fn read_hello(reader: &mut impl Read) -> Result<(), Error> {
    match frame::read_reply(reader)? {
        Some(Reply::Hello { version }) => check_version(version),
        Some(Reply::Error { message, .. }) => Err(Error::Refused(message)),
        _ => Err(Error::Unexpected("another message than hello")),
    }
}

fn check_version(guest: u32) -> Result<(), Error> {
    if guest == frame::VERSION {
        Ok(())
    } else {
        Err(Error::Version {
            guest,
            host: frame::VERSION,
        })
    }
}

/// A command running in the guest, driven by the caller: input sent with [`Session::input`],
/// output and the end received with [`Session::next`]. `exec` (our stdin and stdout) and
/// `serve` (an app's runner) are both built on it.
pub struct Session {
    writer: Arc<Mutex<UnixStream>>,
    reader: BufReader<UnixStream>,
    started: Instant,
}

/// Sends to a session's command from any thread.
#[derive(Clone)]
pub struct Input(Arc<Mutex<UnixStream>>);

/// What a session's command did next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Final: nothing follows.
    Ended(Outcome),
}

/// Why [`Session::next`] returned.
#[derive(Debug)]
pub enum Wake {
    Event(Event),
    /// One of the caller's extra descriptors (by index) became readable.
    Extra(usize),
}

impl Session {
    /// Says hello to the agent behind `socket` and starts `command`.
    pub fn start(socket: &Path, command: &Command) -> Result<Session, Error> {
        let stream = hybrid::connect(socket, AGENT_PORT).map_err(Error::Connect)?;
        let writer = Arc::new(Mutex::new(stream.try_clone().map_err(Error::Connect)?));
        let mut reader = BufReader::new(stream);
        send(
            &writer,
            &Request::Hello {
                version: frame::VERSION,
            },
        )?;
        read_hello(&mut reader)?;
        send(
            &writer,
            &Request::Exec(Exec {
                argv: command.argv.clone(),
                env: command.env.clone(),
                cwd: command.cwd.clone(),
                stdin: command.stdin,
                timeout_ms: command.timeout.map(|t| t.as_millis() as u64),
            }),
        )?;
        Ok(Session {
            writer,
            reader,
            started: Instant::now(),
        })
    }

    /// The handle that writes to the command's stdin and signals it.
    pub fn input(&self) -> Input {
        Input(self.writer.clone())
    }

    /// Waits for the command's next output or end, for the VM's end (`ended`: an error), for
    /// one of `extra` to become readable, or until `deadline` (an error: the guest is not
    /// responding).
    pub fn next(
        &mut self,
        ended: &EventFd,
        extra: &[RawFd],
        deadline: Option<Instant>,
    ) -> Result<Wake, Error> {
        loop {
            // Frames already buffered are read before waiting on the socket again.
            if self.reader.buffer().is_empty() {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                let mut fds = vec![self.reader.get_ref().as_raw_fd(), ended.as_raw_fd()];
                fds.extend_from_slice(extra);
                match first_readable(&fds, left) {
                    Some(0) => {}
                    Some(1) => return Err(Error::EndedDuringCommand),
                    Some(i) => return Ok(Wake::Extra(i - 2)),
                    None => return Err(Error::NoReport(self.started.elapsed())),
                }
            }
            let Some(reply) = frame::read_reply(&mut self.reader)? else {
                return Err(Error::EndedDuringCommand);
            };
            let event = match reply {
                Reply::Started { .. } => continue,
                Reply::Stdout(data) => Event::Stdout(data),
                Reply::Stderr(data) => Event::Stderr(data),
                Reply::Exited(code) => Event::Ended(Outcome::Exited(code)),
                Reply::Signaled(signal) => Event::Ended(Outcome::Signaled(signal)),
                Reply::TimedOut { timeout_ms } => {
                    Event::Ended(Outcome::TimedOut(Duration::from_millis(timeout_ms)))
                }
                Reply::Error { kind, message } => Event::Ended(match kind {
                    ErrorKind::NotFound => Outcome::NotFound(message),
                    ErrorKind::NotExecutable | ErrorKind::ExecFailed | ErrorKind::BadCwd => {
                        Outcome::NotExecutable(message)
                    }
                    ErrorKind::Protocol | ErrorKind::Version | ErrorKind::Export => {
                        return Err(Error::Refused(message))
                    }
                }),
                Reply::Hello { .. } => return Err(Error::Unexpected("a second hello")),
                Reply::TreeData(_) | Reply::TreeEnd => {
                    return Err(Error::Unexpected("a folder's tree to a command"))
                }
            };
            return Ok(Wake::Event(event));
        }
    }
}

impl Input {
    /// Writes `data` to the command's stdin (in chunks the protocol allows).
    pub fn write(&self, data: &[u8]) -> Result<(), Error> {
        for chunk in data.chunks(frame::MAX_CHUNK) {
            send(&self.0, &Request::Stdin(chunk.to_vec()))?;
        }
        Ok(())
    }

    /// Closes the command's stdin once what was written before has been.
    pub fn close(&self) -> Result<(), Error> {
        send(&self.0, &Request::StdinEof)
    }

    /// Sends `signal` to the command's process group.
    pub fn signal(&self, signal: i32) -> Result<(), Error> {
        send(&self.0, &Request::Signal(signal))
    }
}

/// The tree of a guest folder as the agent sends it (`Export`): the chunks of its
/// `contract::tree` stream, for `volume::Volume::copy_back`. It connects on the first call;
/// every read gives up at the deadline the caller gives, however the guest trickles its bytes.
pub struct TreeExport {
    socket: PathBuf,
    path: Vec<u8>,
    conn: Option<BufReader<Timed>>,
    done: bool,
}

impl TreeExport {
    /// The tree of the guest folder `path`, from the agent behind `socket`.
    pub fn new(socket: &Path, path: &str) -> TreeExport {
        TreeExport {
            socket: socket.to_path_buf(),
            path: path.as_bytes().to_vec(),
            conn: None,
            done: false,
        }
    }

    fn connect(&self, deadline: Instant) -> Result<BufReader<Timed>, Error> {
        let mut stream = hybrid::connect(&self.socket, AGENT_PORT).map_err(Error::Connect)?;
        let requests = [
            Request::Hello {
                version: frame::VERSION,
            },
            Request::Export {
                path: self.path.clone(),
            },
        ];
        for request in &requests {
            frame::write_request(&mut stream, request)
                .map_err(|e| Error::Frame(FrameError::Io(e)))?;
        }
        let mut reader = BufReader::new(Timed { stream, deadline });
        read_hello(&mut reader).map_err(past_deadline)?;
        Ok(reader)
    }
}

impl crate::volume::TreeSource for TreeExport {
    fn next_chunk(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            return Ok(None);
        }
        let reader = match &mut self.conn {
            Some(reader) => reader,
            None => self.conn.insert(self.connect(deadline)?),
        };
        reader.get_mut().deadline = deadline;
        match frame::read_reply(reader).map_err(|e| past_deadline(e.into()))? {
            Some(Reply::TreeData(chunk)) => Ok(Some(chunk)),
            Some(Reply::TreeEnd) => {
                self.done = true;
                Ok(None)
            }
            Some(Reply::Error {
                kind: ErrorKind::Export,
                message,
            }) => Err(Error::Export(message)),
            Some(Reply::Error { message, .. }) => Err(Error::Refused(message)),
            Some(_) => Err(Error::Unexpected("another message than a folder's tree")),
            None => Err(Error::Frame(FrameError::Truncated)),
        }
    }
}

/// A read that ran into the deadline is [`Error::Deadline`].
fn past_deadline(e: Error) -> Error {
    match &e {
        Error::Frame(FrameError::Io(io)) if io.kind() == io::ErrorKind::TimedOut => Error::Deadline,
        _ => e,
    }
}

/// A stream whose every read gives up at `deadline` (`TimedOut`).
struct Timed {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
            _ => e,
        })
    }
}

/// Runs `command` through the agent behind `socket`, writing its output to our stdout and
/// stderr as it comes. Our SIGINT, SIGTERM and SIGHUP are passed on to it. `ended` is the VM's
/// end; `deadline` how long to wait at most before giving up on the guest.
pub fn exec(
    socket: &Path,
    command: &Command,
    ended: &EventFd,
    deadline: Option<Duration>,
) -> Result<Outcome, Error> {
    let mut session = Session::start(socket, command)?;
    let input = session.input();
    if command.stdin {
        forward_stdin(input.clone());
    }
    let mut signals = SignalForwarder::install()?;
    let deadline = deadline.map(|d| Instant::now() + d);
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    loop {
        match session.next(ended, &[signals.fd()], deadline)? {
            Wake::Extra(_) => {
                for signal in signals.take() {
                    input.signal(signal)?;
                }
            }
            // A host stdout or stderr that went away must not stop the command: drop output.
            Wake::Event(Event::Stdout(data)) => {
                let _ = stdout.write_all(&data).and_then(|()| stdout.flush());
            }
            Wake::Event(Event::Stderr(data)) => {
                let _ = stderr.write_all(&data).and_then(|()| stderr.flush());
            }
            Wake::Event(Event::Ended(outcome)) => return Ok(outcome),
        }
    }
}

fn send(writer: &Mutex<UnixStream>, request: &Request) -> Result<(), Error> {
    let mut w = writer.lock().unwrap();
    frame::write_request(&mut *w, request).map_err(|e| Error::Frame(FrameError::Io(e)))
}

/// Copies our stdin to the command, then says end of input. A thread of its own: reading
/// stdin blocks.
fn forward_stdin(input: Input) {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0u8; frame::MAX_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if input.write(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = input.close();
        })
        .expect("spawning the stdin thread");
}

/// Our SIGINT/SIGTERM/SIGHUP, caught and queued for the command instead of ending us. Once
/// the last forwarder is dropped, they end us again, as by default.
struct SignalForwarder(SignalDelivery<UnixStream, SignalOnly>);

const FORWARDED: [libc::c_int; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Whether the forwarded signals take their default action: true while no forwarder is alive.
static DEFAULT_ACTION: AtomicBool = AtomicBool::new(true);
/// How many forwarders are alive; `None` until the default actions are registered.
static FORWARDERS: Mutex<Option<usize>> = Mutex::new(None);

impl SignalForwarder {
    fn install() -> Result<SignalForwarder, Error> {
        let mut alive = FORWARDERS.lock().unwrap();
        if alive.is_none() {
            // signal-hook never gives a signal's default action back once it is caught: this
            // action, registered once, takes it whenever no forwarder is alive.
            for signal in FORWARDED {
                flag::register_conditional_default(signal, &DEFAULT_ACTION)
                    .map_err(Error::Signals)?;
            }
        }
        let (read, write) = UnixStream::pair().map_err(Error::Signals)?;
        let delivery = SignalDelivery::with_pipe(read, write, SignalOnly, FORWARDED)
            .map_err(Error::Signals)?;
        *alive = Some(alive.unwrap_or(0) + 1);
        DEFAULT_ACTION.store(false, Ordering::SeqCst);
        Ok(SignalForwarder(delivery))
    }

    fn fd(&self) -> RawFd {
        self.0.get_read().as_raw_fd()
    }

    /// The signals caught since the last call.
    fn take(&mut self) -> Vec<i32> {
        self.0.pending().collect()
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        let mut alive = FORWARDERS.lock().unwrap();
        let left = alive.map_or(0, |n| n - 1);
        *alive = Some(left);
        if left == 0 {
            DEFAULT_ACTION.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_child;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn caught_signals_are_queued_for_the_command() {
        let mut signals = SignalForwarder::install().unwrap();
        signal_hook::low_level::raise(SIGHUP).unwrap();
        assert_eq!(
            first_readable(&[signals.fd()], Some(Duration::from_secs(5))),
            Some(0)
        );
        assert_eq!(signals.take(), vec![SIGHUP]);
        assert_eq!(signals.take(), Vec::<i32>::new());
    }

    /// Run alone in a child: forwarding starts and ends, then SIGTERM.
    #[test]
    fn child_forwarded_then_terminated() {
        if !test_child::is_child() {
            return;
        }
        drop(SignalForwarder::install().unwrap());
        signal_hook::low_level::raise(SIGTERM).unwrap();
        std::thread::sleep(Duration::from_secs(10));
    }

    #[test]
    fn signals_end_us_again_once_forwarding_ends() {
        let out = test_child::command("agent::tests::child_forwarded_then_terminated")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(SIGTERM), "{stderr}");
    }
}
