//! The host side of the guest agent (docs/agent-protocol.md): activating the guest once it
//! waits at its template point (its parameters and environment, which never go on the kernel
//! command line: contract::activation), running commands through it (a [`Session`] the caller drives, or [`exec`], which
//! streams a command's output to ours), and receiving a folder's tree ([`TreeExport`]).
//!
//! It speaks to the VM's agent socket, which is the same hybrid-vsock Unix socket on both
//! backends (vsock on ours, the virtio-serial multiplexer on QEMU).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;
use vmm::poll::first_readable;

use crate::activation::{self, Identity};
use contract::frame::{self, Container, ErrorKind, Exec, FrameError, Reply, Request, WinSize};
use contract::{hybrid, AGENT_PORT};
use vmm::vm::{ConsoleIo, ConsoleReady, Start, StopSignal};
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
    /// Run it as a container's process (in that root, as that user, with `env` only).
    pub container: Option<Container>,
    /// Run it on a terminal of this size.
    pub tty: Option<WinSize>,
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
    #[error("the guest agent did not answer our hello within {0:?}")]
    Handshake(Duration),
    #[error("the guest agent could not send the folder: {0}")]
    Export(String),
    #[error("starting the thread that activates the guest")]
    HandshakeThread(#[source] io::Error),
    #[error("the thread that activates the guest panicked")]
    HandshakePanicked,
    #[error(transparent)]
    Entropy(#[from] activation::EntropyError),
    #[error("the guest could not be set up: {0}")]
    Activation(String),
}

/// How long the agent may take to answer our hello (and the hybrid vsock handshake before it)
/// when the caller gives no earlier deadline: it answers at once when it is well.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(30);

/// How often a restored VM's agent socket is looked for until its backend has made it.
const SOCKET_POLL: Duration = Duration::from_millis(2);

/// The guest's template point, as the host learns of it.
pub enum TemplatePoint {
    /// Readable once the guest has reached it (the boot timer's `T`): a cold boot.
    Ahead(EventFd),
    /// Passed already: a VM restored from a snapshot taken there.
    Passed,
}

impl TemplatePoint {
    /// Where the guest of a VM that comes up as `start` says is: ahead of a boot, whose gate
    /// `console` gets for its backend to signal; passed for a restore.
    pub fn of(start: &Start, console: &mut ConsoleIo) -> Result<TemplatePoint, Error> {
        Ok(match start {
            Start::Restore { .. } => TemplatePoint::Passed,
            Start::Boot | Start::Save { .. } => {
                let (point, gate) = TemplatePoint::ahead()?;
                console.template = gate;
                point
            }
        })
    }

    /// One for a VM that boots, and the gate its backend signals.
    pub fn ahead() -> Result<(TemplatePoint, ConsoleReady), Error> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::HandshakeThread)?;
        let signal = evt.try_clone().map_err(Error::HandshakeThread)?;
        let gate = ConsoleReady::notifying(move || {
            let _ = signal.write(1);
        });
        Ok((TemplatePoint::Ahead(evt), gate))
    }
}

/// Waits until the guest behind `socket` is at its template point, the VM ends, or `timeout`;
/// then activates it as the VM `identity` describes, by the same deadline.
pub fn activate(
    socket: &Path,
    point: &TemplatePoint,
    ended: &EventFd,
    timeout: Duration,
    identity: &Identity,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    if let TemplatePoint::Ahead(reached) = point {
        match first_readable(&[reached.as_raw_fd(), ended.as_raw_fd()], Some(timeout)) {
            Some(0) => {}
            Some(_) => return Err(Error::EndedBeforeReady),
            None => return Err(Error::NotReady(timeout)),
        }
    }
    let activation = activation::new(identity)?;
    let request = [Request::Activate(Box::new(activation))];
    let mut connected = connect(socket, &request, Some(ended), Some(deadline));
    // A restored VM's backend may not have made its socket yet.
    while let Err(Error::Connect(e)) = &connected {
        let early = matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
        );
        if !early
            || Instant::now() > deadline
            || first_readable(&[ended.as_raw_fd()], Some(SOCKET_POLL)).is_some()
        {
            break;
        }
        connected = connect(socket, &request, Some(ended), Some(deadline));
    }
    match connected {
        Ok(_) => Ok(()),
        Err(Error::Refused(why)) => Err(Error::Activation(why)),
        Err(Error::EndedDuringCommand) => Err(Error::EndedBeforeReady),
        Err(e) => Err(e),
    }
}

/// The guest's activation on a thread of its own, for a VM whose agent nothing else talks
/// to: `start`'s shell waits for it. The VM is stopped when the guest cannot be activated in
/// time (its shell would wait for ever).
pub struct Handshake {
    thread: JoinHandle<Result<(), Error>>,
    vm_ended: EventFd,
}

impl Handshake {
    /// Activates the guest behind `socket` once `point` is reached, as the VM `identity`
    /// describes.
    pub fn spawn(
        socket: &Path,
        point: TemplatePoint,
        identity: Identity,
        timeout: Duration,
        stop: StopSignal,
    ) -> Result<Handshake, Error> {
        let vm_ended = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::HandshakeThread)?;
        let ended = vm_ended.try_clone().map_err(Error::HandshakeThread)?;
        let socket = socket.to_path_buf();
        let thread = thread::Builder::new()
            .name("agent-activate".into())
            .spawn(move || {
                let activated = activate(&socket, &point, &ended, timeout, &identity);
                if activated.is_err() {
                    stop.stop();
                }
                activated
            })
            .map_err(Error::HandshakeThread)?;
        Ok(Handshake { thread, vm_ended })
    }

    /// Once the VM has ended: whether the guest was activated. A VM that ended before its
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

/// Sets the guest's wall clock to the host's, through the agent behind `socket` (after a pause
/// on a backend whose guest clock stood still); `ended` ends the wait.
pub fn set_clock(socket: &Path, ended: &EventFd) -> Result<(), Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let request = Request::SetClock {
        secs: now.as_secs(),
        nanos: now.subsec_nanos(),
    };
    let deadline = Instant::now() + HANDSHAKE_TIME;
    let mut replies = connect(socket, &[request], Some(ended), Some(deadline))?;
    match replies.next(&[ended.as_raw_fd()], Some(deadline))? {
        Next::Reply(Reply::ClockSet) => Ok(()),
        Next::Reply(Reply::Error { message, .. }) => Err(Error::Refused(message)),
        Next::Woken(_) => Err(Error::EndedDuringCommand),
        Next::TimedOut => Err(Error::Handshake(HANDSHAKE_TIME)),
        Next::Reply(_) | Next::End => Err(Error::Unexpected("another message than ClockSet")),
    }
}

/// Connects to the agent behind `socket` and says hello, by `deadline` (and
/// [`HANDSHAKE_TIME`]); the VM's end (`ended`) ends the wait too.
fn connect(
    socket: &Path,
    requests: &[Request],
    ended: Option<&EventFd>,
    deadline: Option<Instant>,
) -> Result<Replies, Error> {
    let handshake = Instant::now() + HANDSHAKE_TIME;
    let deadline = deadline.map_or(handshake, |d| d.min(handshake));
    let left = || deadline.saturating_duration_since(Instant::now());
    let timed_out = || Error::Handshake(HANDSHAKE_TIME.min(left()));
    let stream =
        hybrid::connect_timeout(socket, AGENT_PORT, left()).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => timed_out(),
            _ => Error::Connect(e),
        })?;
    let hello = Request::Hello {
        version: frame::VERSION,
    };
    for request in std::iter::once(&hello).chain(requests) {
        let left = left();
        if left.is_zero() {
            return Err(timed_out());
        }
        stream
            .set_write_timeout(Some(left))
            .and_then(|()| frame::write_request(&mut &stream, request))
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
                _ => Error::Frame(FrameError::Io(e)),
            })?;
    }
    stream
        .set_write_timeout(None)
        .map_err(|e| Error::Frame(FrameError::Io(e)))?;
    let mut replies = Replies::new(stream);
    let wake: Vec<RawFd> = ended.iter().map(|e| e.as_raw_fd()).collect();
    match replies.next(&wake, Some(deadline))? {
        Next::Reply(Reply::Hello { version }) => check_version(version)?,
        Next::Reply(Reply::Error { message, .. }) => return Err(Error::Refused(message)),
        Next::Reply(_) | Next::End => return Err(Error::Unexpected("another message than hello")),
        Next::Woken(_) => return Err(Error::EndedDuringCommand),
        Next::TimedOut => return Err(timed_out()),
    }
    Ok(replies)
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
    replies: Replies,
    started: Instant,
    /// Told of each OOM kill the agent reports ([`Session::on_oom_kill`]).
    on_oom_kill: Option<Box<dyn FnMut(OomKill) + Send>>,
}

/// A process the guest's kernel killed for lack of memory while a command ran (the agent
/// follows the guest kernel's log: docs/agent-protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomKill {
    /// Its pid in the guest.
    pub pid: i32,
    /// The number of the guest kernel log's record of it: every session that sees the same
    /// kill has the same number, and a later kill a larger one.
    pub seq: u64,
}

/// Sends to a session's command from any thread.
#[derive(Clone)]
pub struct Input(Arc<Mutex<UnixStream>>);

/// What a session's command did next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The command runs, as this process of the guest.
    Started(i32),
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
    /// Says hello to the agent behind `socket` and starts `command`; gives up at `deadline`
    /// (or after [`HANDSHAKE_TIME`]) when the agent does not answer, and when the VM ends.
    pub fn start(
        socket: &Path,
        command: &Command,
        ended: &EventFd,
        deadline: Option<Instant>,
    ) -> Result<Session, Error> {
        let exec = Request::Exec(Exec {
            argv: command.argv.clone(),
            env: command.env.clone(),
            cwd: command.cwd.clone(),
            stdin: command.stdin,
            timeout_ms: command.timeout.map(|t| t.as_millis() as u64),
            container: command.container.clone().map(Box::new),
            tty: command.tty,
        });
        let replies = connect(socket, &[exec], Some(ended), deadline)?;
        let writer = Arc::new(Mutex::new(
            replies.stream.try_clone().map_err(Error::Connect)?,
        ));
        Ok(Session {
            writer,
            replies,
            started: Instant::now(),
            on_oom_kill: None,
        })
    }

    /// Calls `hook` (on the thread that calls [`Session::next`]) for each process the guest's
    /// kernel kills for lack of memory while the command runs, before [`Session::next`] goes
    /// on to the next event; without a hook they are passed over.
    pub fn on_oom_kill(&mut self, hook: impl FnMut(OomKill) + Send + 'static) {
        self.on_oom_kill = Some(Box::new(hook));
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
        let mut wake = vec![ended.as_raw_fd()];
        wake.extend_from_slice(extra);
        let event = loop {
            let reply = match self.replies.next(&wake, deadline)? {
                Next::Reply(reply) => reply,
                Next::Woken(0) | Next::End => return Err(Error::EndedDuringCommand),
                Next::Woken(i) => return Ok(Wake::Extra(i - 1)),
                Next::TimedOut => return Err(Error::NoReport(self.started.elapsed())),
            };
            break match reply {
                Reply::OomKilled { seq, pid } => {
                    if let Some(hook) = &mut self.on_oom_kill {
                        hook(OomKill { pid, seq });
                    }
                    continue;
                }
                Reply::Started { pid } => Event::Started(pid),
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
                    ErrorKind::Protocol
                    | ErrorKind::Version
                    | ErrorKind::Export
                    | ErrorKind::Activate => return Err(Error::Refused(message)),
                }),
                Reply::Hello { .. } => return Err(Error::Unexpected("a second hello")),
                Reply::TreeData(_) | Reply::TreeEnd => {
                    return Err(Error::Unexpected("a folder's tree to a command"))
                }
                Reply::ClockSet => return Err(Error::Unexpected("ClockSet to a command")),
            };
        };
        Ok(Wake::Event(event))
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

    /// Gives the command's terminal this size.
    pub fn resize(&self, size: WinSize) -> Result<(), Error> {
        send(&self.0, &Request::Resize(size))
    }
}

/// The tree of a guest folder as the agent sends it (`Export`): the chunks of its
/// `contract::tree` stream, for `volume::Volume::copy_back`. It connects on the first call;
/// every wait gives up at the deadline the caller gives, however the guest trickles its bytes.
pub struct TreeExport {
    socket: PathBuf,
    path: Vec<u8>,
    conn: Option<Replies>,
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
}

impl crate::volume::TreeSource for TreeExport {
    fn next_chunk(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            return Ok(None);
        }
        let replies = match &mut self.conn {
            Some(replies) => replies,
            None => {
                let export = Request::Export {
                    path: self.path.clone(),
                };
                let connected = connect(&self.socket, &[export], None, Some(deadline));
                self.conn.insert(connected.map_err(|e| match e {
                    Error::Handshake(_) => Error::Deadline,
                    e => e,
                })?)
            }
        };
        match replies.next(&[], Some(deadline))? {
            Next::Reply(Reply::TreeData(chunk)) => Ok(Some(chunk)),
            Next::Reply(Reply::TreeEnd) => {
                self.done = true;
                Ok(None)
            }
            Next::Reply(Reply::Error {
                kind: ErrorKind::Export,
                message,
            }) => Err(Error::Export(message)),
            Next::Reply(Reply::Error { message, .. }) => Err(Error::Refused(message)),
            Next::Reply(_) | Next::Woken(_) => {
                Err(Error::Unexpected("another message than a folder's tree"))
            }
            Next::TimedOut => Err(Error::Deadline),
            Next::End => Err(Error::Frame(FrameError::Truncated)),
        }
    }
}

/// The most bytes one read of the agent's connection takes.
const READ_CHUNK: usize = 64 << 10;

/// The agent's replies on one connection, read only when `poll` says there is something to
/// read and decoded once a frame is whole: a guest that sends part of a frame and stalls holds
/// up no wait beyond its deadline, nor the other descriptors the caller waits on.
struct Replies {
    stream: UnixStream,
    /// Bytes read and not yet decoded: at most one frame (its length is checked as soon as
    /// it has arrived) and one read.
    buf: Vec<u8>,
    /// Where each read lands before its bytes join `buf` (allocated and zeroed once).
    chunk: Box<[u8]>,
    eof: bool,
}

/// What [`Replies::next`] found first.
enum Next {
    Reply(Reply),
    /// One of the caller's descriptors (by index) became readable.
    Woken(usize),
    /// The deadline passed.
    TimedOut,
    /// The connection ended between two frames.
    End,
}

impl Replies {
    fn new(stream: UnixStream) -> Replies {
        Replies {
            stream,
            buf: Vec::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            eof: false,
        }
    }

    /// The next whole reply, unless one of `wake` becomes readable or `deadline` passes first.
    fn next(&mut self, wake: &[RawFd], deadline: Option<Instant>) -> Result<Next, Error> {
        let mut fds = vec![self.stream.as_raw_fd()];
        fds.extend_from_slice(wake);
        loop {
            if let Some((reply, used)) = Reply::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Next::Reply(reply));
            }
            if self.eof {
                return if self.buf.is_empty() {
                    Ok(Next::End)
                } else {
                    Err(Error::Frame(FrameError::Truncated))
                };
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match first_readable(&fds, left) {
                Some(0) => {}
                Some(i) => return Ok(Next::Woken(i - 1)),
                None => return Ok(Next::TimedOut),
            }
            match (&self.stream).read(&mut self.chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Frame(FrameError::Io(e))),
            }
        }
    }
}

/// Runs `command` through the agent behind `socket`, writing its output to our stdout and
/// stderr as it comes, and what the guest's OOM killer ends meanwhile to our stderr. Our
/// SIGINT, SIGTERM and SIGHUP are passed on to it. `ended` is the VM's end; `deadline` how long
/// to wait at most before giving up on the guest.
pub fn exec(
    socket: &Path,
    command: &Command,
    ended: &EventFd,
    deadline: Option<Duration>,
) -> Result<Outcome, Error> {
    let deadline = deadline.map(|d| Instant::now() + d);
    let mut session = Session::start(socket, command, ended, deadline)?;
    // Said as it happens: a command that dies of it gets a status of 137 and nothing else.
    session.on_oom_kill(|kill| {
        eprintln!(
            "nodeos-vm: the guest ran out of memory: its kernel killed process {}; give the VM \
             more with --memory",
            kill.pid
        );
    });
    let input = session.input();
    if command.stdin {
        forward_stdin(input.clone());
    }
    let mut signals = SignalForwarder::install()?;
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    loop {
        match session.next(ended, &[signals.fd()], deadline)? {
            Wake::Extra(_) => {
                for signal in signals.take() {
                    input.signal(signal)?;
                }
            }
            Wake::Event(Event::Started(_)) => {}
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

    /// A whole stdout frame, then the first half of another: its length promises more.
    fn a_frame_and_a_half() -> Vec<u8> {
        let frame = Reply::Stdout(b"whole".to_vec()).encode().unwrap();
        let cut = Reply::Stdout(vec![b'x'; 1000]).encode().unwrap();
        [frame, cut[..cut.len() / 2].to_vec()].concat()
    }

    /// `f`'s result, on a thread of its own; fails when it has not returned within 10 s: the
    /// host must not block on a guest that stalls.
    fn without_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the host blocked on a guest that sent part of a frame and stalled")
    }

    /// A session whose agent is `guest`, the other end of a socket pair.
    fn session() -> (Session, UnixStream) {
        let (host, guest) = UnixStream::pair().unwrap();
        let session = Session {
            writer: Arc::new(Mutex::new(host.try_clone().unwrap())),
            replies: Replies::new(host),
            started: Instant::now(),
            on_oom_kill: None,
        };
        (session, guest)
    }

    #[test]
    fn oom_kills_go_to_the_hook_between_the_events() {
        let ended = eventfd();
        let replies = [
            Reply::OomKilled { seq: 5, pid: 9 },
            Reply::Stdout(b"x".to_vec()),
            Reply::OomKilled { seq: 6, pid: 10 },
            Reply::Signaled(9),
        ];
        let (mut hooked, mut guest) = session();
        let kills = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&kills);
        hooked.on_oom_kill(move |kill| seen.lock().unwrap().push(kill));
        for reply in &replies {
            frame::write_reply(&mut guest, reply).unwrap();
        }
        let next = hooked.next(&ended, &[], None).unwrap();
        assert!(matches!(next, Wake::Event(Event::Stdout(d)) if d == b"x"));
        assert_eq!(*kills.lock().unwrap(), [OomKill { pid: 9, seq: 5 }]);
        let next = hooked.next(&ended, &[], None).unwrap();
        assert!(matches!(
            next,
            Wake::Event(Event::Ended(Outcome::Signaled(9)))
        ));
        assert_eq!(kills.lock().unwrap().len(), 2);
        // Without a hook they are passed over.
        let (mut hookless, mut guest) = session();
        for reply in &replies {
            frame::write_reply(&mut guest, reply).unwrap();
        }
        let next = hookless.next(&ended, &[], None).unwrap();
        assert!(matches!(next, Wake::Event(Event::Stdout(_))));
    }

    fn eventfd() -> EventFd {
        EventFd::new(libc::EFD_NONBLOCK).unwrap()
    }

    /// Finding: `run --timeout` did not hold when the guest sent part of a frame and stalled:
    /// the host read the rest of the frame with no deadline.
    #[test]
    fn a_frame_cut_short_holds_a_session_no_longer_than_its_deadline() {
        let (mut session, mut guest) = session();
        guest.write_all(&a_frame_and_a_half()).unwrap();
        let (events, took) = without_blocking(move || {
            let ended = eventfd();
            let deadline = Some(Instant::now() + Duration::from_millis(300));
            let first = session.next(&ended, &[], deadline);
            let started = Instant::now();
            let second = session.next(&ended, &[], deadline);
            ((first, second), started.elapsed())
        });
        assert!(matches!(events.0, Ok(Wake::Event(Event::Stdout(d))) if d == b"whole"));
        assert!(
            matches!(events.1, Err(Error::NoReport(_))),
            "{:?}",
            events.1
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        drop(guest);
    }

    /// Without a deadline (serve's runners), a frame cut short still lets the VM's end and the
    /// caller's own descriptors (forwarded signals) through.
    #[test]
    fn a_frame_cut_short_lets_the_vms_end_and_signals_through() {
        let (mut session, mut guest) = session();
        guest.write_all(&a_frame_and_a_half()).unwrap();
        let (signal_read, signal_write) = UnixStream::pair().unwrap();
        let (woken, ended) = without_blocking(move || {
            let ended = eventfd();
            let extra = [signal_read.as_raw_fd()];
            let first = session.next(&ended, &extra, None);
            (&signal_write).write_all(b"s").unwrap();
            let woken = session.next(&ended, &extra, None);
            (&signal_read).read_exact(&mut [0]).unwrap();
            ended.write(1).unwrap();
            let after = session.next(&ended, &extra, None);
            assert!(matches!(first, Ok(Wake::Event(Event::Stdout(_)))));
            (woken, after)
        });
        assert!(matches!(woken, Ok(Wake::Extra(0))), "{woken:?}");
        assert!(matches!(ended, Err(Error::EndedDuringCommand)), "{ended:?}");
        drop(guest);
    }

    /// The rest of the frame, when it comes, is decoded as if it had come at once.
    #[test]
    fn a_frame_in_pieces_is_one_reply() {
        let (mut session, mut guest) = session();
        let frame = Reply::Exited(3).encode().unwrap();
        let writer = std::thread::spawn(move || {
            for byte in frame {
                guest.write_all(&[byte]).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            guest
        });
        let ended = eventfd();
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        let event = session.next(&ended, &[], deadline).unwrap();
        assert!(matches!(
            event,
            Wake::Event(Event::Ended(Outcome::Exited(3)))
        ));
        drop(writer.join().unwrap());
        assert!(matches!(
            session.next(&ended, &[], deadline),
            Err(Error::EndedDuringCommand)
        ));
    }

    /// A guest that never reaches its template point holds the activation no longer than its
    /// timeout; a VM that ends ends the wait.
    #[test]
    fn the_template_point_is_awaited_no_longer_than_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let (point, _gate) = TemplatePoint::ahead().unwrap();
        let s = socket.clone();
        let result = without_blocking(move || {
            activate(
                &s,
                &point,
                &eventfd(),
                Duration::from_millis(300),
                &Identity::default(),
            )
        });
        assert!(matches!(result, Err(Error::NotReady(_))), "{result:?}");
        let (point, _gate) = TemplatePoint::ahead().unwrap();
        let ended = eventfd();
        ended.write(1).unwrap();
        let result = activate(
            &socket,
            &point,
            &ended,
            Duration::from_secs(60),
            &Identity::default(),
        );
        assert!(matches!(result, Err(Error::EndedBeforeReady)), "{result:?}");
    }

    /// Activates a restored guest behind `socket`, allowing 300 ms.
    fn activate_restored(socket: std::path::PathBuf) -> Result<(), Error> {
        without_blocking(move || {
            let point = TemplatePoint::Passed;
            activate(
                &socket,
                &point,
                &eventfd(),
                Duration::from_millis(300),
                &Identity::default(),
            )
        })
    }

    /// The guest's answers to an activation: half a hello holds no longer than the timeout;
    /// an error is the reason the guest could not be set up.
    #[test]
    fn activation_answers() {
        let dir = tempfile::tempdir().unwrap();
        let hello = Reply::Hello {
            version: frame::VERSION,
        }
        .encode()
        .unwrap();
        let socket = dir.path().join("a.sock");
        let agent = stalling_agent(&socket, hello[..hello.len() - 1].to_vec());
        let result = activate_restored(socket);
        assert!(matches!(result, Err(Error::Handshake(_))), "{result:?}");
        agent.join().unwrap();

        let socket = dir.path().join("b.sock");
        let refusal = Reply::Error {
            kind: ErrorKind::Activate,
            message: "mount /dev/vdc on /app: Invalid argument".into(),
        };
        let agent = stalling_agent(&socket, refusal.encode().unwrap());
        let result = activate_restored(socket);
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the guest could not be set up: mount /dev/vdc on /app: Invalid argument"
        );
        agent.join().unwrap();
    }

    /// A fake agent behind the hybrid socket `path`: takes one connection, answers its
    /// `CONNECT`, sends `answer` and stalls until the host hangs up.
    fn stalling_agent(path: &Path, answer: Vec<u8>) -> std::thread::JoinHandle<()> {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            assert_eq!(hybrid::read_line(&mut conn).unwrap(), b"CONNECT 1024");
            conn.write_all(hybrid::ok_line(1).as_bytes()).unwrap();
            conn.write_all(&answer).unwrap();
            let _ = io::copy(&mut conn, &mut io::sink());
        })
    }

    /// Saying hello to an agent that answers half a hello: the handshake's deadline holds
    /// (`run`, `exec`, serve's runners), and so does a copy-back's.
    #[test]
    fn a_hello_cut_short_ends_the_handshake_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let hello = Reply::Hello {
            version: frame::VERSION,
        }
        .encode()
        .unwrap();
        let half = hello[..hello.len() / 2].to_vec();
        let socket = dir.path().join("a.sock");
        let agent = stalling_agent(&socket, half.clone());
        let command = Command {
            argv: vec![b"true".to_vec()],
            env: Vec::new(),
            cwd: None,
            stdin: false,
            timeout: None,
            container: None,
            tty: None,
        };
        let (result, took) = without_blocking(move || {
            let started = Instant::now();
            let deadline = Some(started + Duration::from_millis(300));
            let result = Session::start(&socket, &command, &eventfd(), deadline).map(drop);
            (result, started.elapsed())
        });
        assert!(matches!(result, Err(Error::Handshake(_))), "{result:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        agent.join().unwrap();

        let socket = dir.path().join("b.sock");
        let agent = stalling_agent(&socket, [hello, half].concat());
        let result = without_blocking(move || {
            let mut export = TreeExport::new(&socket, "/app");
            let deadline = Instant::now() + Duration::from_millis(300);
            crate::volume::TreeSource::next_chunk(&mut export, deadline)
        });
        assert!(matches!(result, Err(Error::Deadline)), "{result:?}");
        agent.join().unwrap();
    }

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
