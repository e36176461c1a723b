//! A VM with a guest agent, booted on a thread of its own: what `nodeos-vm run` and detached
//! VMs (`start --detach`) drive. The caller waits for the agent, runs commands through it, and
//! stops the VM.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::activation::Identity;
use crate::agent::{self, Command, Outcome, Session, TemplatePoint, TreeExport};
use crate::console::{self, ConsoleTail, TAIL_BYTES};
use vmm::backend::{self, Backend};
use vmm::vm::{pause_link, PauseError, PauseSwitch, RunReport, StopSignal, VmConfig, VmExit};

/// How long a guest may take to boot and report its agent ready.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{error}; the guest's console said:\n{console}")]
    WithConsole { error: Box<Error>, console: String },
    #[error(transparent)]
    Agent(#[from] agent::Error),
    #[error(transparent)]
    Backend(#[from] backend::Error),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error("setting up the VM: {0}")]
    Setup(#[source] std::io::Error),
    #[error("the VM thread panicked")]
    Panicked,
    #[error("the guest's kernel panicked or the guest reset")]
    Reset,
    #[error(transparent)]
    Pause(#[from] PauseError),
}

/// Where the guest's console output goes.
pub enum ConsoleLog {
    /// Kept in memory, the last part only, to explain failures.
    Tail,
    /// Appended to a file (a detached VM's log), bounded (console::capture_to_file).
    File(PathBuf),
}

enum Console {
    Tail(ConsoleTail),
    File(PathBuf),
}

impl Console {
    /// The last output, to explain a failure.
    fn text(&self) -> String {
        match self {
            Console::Tail(tail) => tail.text(),
            Console::File(path) => {
                let mut text = Vec::new();
                if let Ok(mut f) = File::open(path) {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES as u64)));
                    let _ = f.read_to_end(&mut text);
                }
                String::from_utf8_lossy(&text).into_owned()
            }
        }
    }
}

pub struct Sandbox {
    thread: thread::JoinHandle<Result<RunReport, backend::Error>>,
    stop: StopSignal,
    pause: PauseSwitch,
    /// Whether its guest's clock stands still while it is paused (set again on resume).
    clock_stops_when_paused: bool,
    /// Signalled when the VM has ended, whatever the reason.
    ended: EventFd,
    console: Console,
    /// Where the guest is: booting towards its template point, or restored past it.
    point: TemplatePoint,
    socket: PathBuf,
    /// What its configuration makes the VM, for its activation.
    identity: Identity,
}

impl Sandbox {
    /// Boots the VM `config` describes, which must have an agent socket.
    pub fn boot(backend: Backend, config: VmConfig, log: ConsoleLog) -> Result<Sandbox, Error> {
        let socket = config
            .agent_socket
            .clone()
            .expect("a sandbox VM has an agent socket");
        let identity = Identity::of(&config);
        let (console, output): (Console, OwnedFd) = match log {
            ConsoleLog::Tail => {
                let (tail, output) = ConsoleTail::capture()?;
                (Console::Tail(tail), output)
            }
            ConsoleLog::File(path) => {
                let output = console::capture_to_file(&path)?;
                (Console::File(path), output)
            }
        };
        let mut io = console::headless(output)?;
        let point = TemplatePoint::of(&config.start, &mut io)?;
        let stop = StopSignal::new().map_err(Error::Setup)?;
        let (pause, link) = pause_link().map_err(Error::Setup)?;
        let clock_stops_when_paused = backend.guest_clock_stops_when_paused();
        let ended = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Setup)?;
        let (s, e) = (stop.clone(), ended.try_clone().map_err(Error::Setup)?);
        let thread = thread::Builder::new()
            .name("vm".into())
            .spawn(move || {
                let report = backend.run(&config, io, &s, Some(link));
                let _ = e.write(1);
                report
            })
            .map_err(Error::Setup)?;
        Ok(Sandbox {
            thread,
            stop,
            pause,
            clock_stops_when_paused,
            ended,
            console,
            point,
            socket,
            identity,
        })
    }

    fn explained(&self, e: impl Into<Error>) -> Error {
        with_console(e.into(), &self.console)
    }

    /// Waits until the guest is at its template point and activates it as this VM.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        agent::activate(
            &self.socket,
            &self.point,
            &self.ended,
            timeout,
            &self.identity,
        )
        .map_err(|e| self.explained(e))
    }

    /// Runs `command` to its end, its output streamed to ours; gives up on a guest that has
    /// not reported its end after `deadline`.
    pub fn exec(&self, command: &Command, deadline: Option<Duration>) -> Result<Outcome, Error> {
        agent::exec(&self.socket, command, &self.ended, deadline).map_err(|e| self.explained(e))
    }

    /// Starts `command` as a session the caller drives (input, output as it comes).
    pub fn session(&self, command: &Command) -> Result<Session, Error> {
        Session::start(&self.socket, command, &self.ended, None).map_err(|e| self.explained(e))
    }

    /// The tree of the guest folder `path` as its agent sends it: a `:rw` volume's changes,
    /// for `Volume::copy_back`.
    pub fn export(&self, path: &str) -> TreeExport {
        TreeExport::new(&self.socket, path)
    }

    /// The host end of its agent's link, for sessions opened without borrowing the VM
    /// ([`Session::start`]).
    pub fn agent_socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Readable once the VM has ended.
    pub fn ended(&self) -> &EventFd {
        &self.ended
    }

    /// The handle that ends the VM.
    pub fn stop_signal(&self) -> &StopSignal {
        &self.stop
    }

    /// Pauses the VM (its vCPUs and devices hold still, its memory stays); commands, their
    /// streams and the agent wait until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<(), Error> {
        Ok(self.pause.pause()?)
    }

    /// Lets a paused VM go on where it was, its wall clock the host's.
    pub fn resume(&self) -> Result<(), Error> {
        self.pause.resume()?;
        if self.clock_stops_when_paused {
            agent::set_clock(&self.socket, &self.ended).map_err(|e| self.explained(e))?;
        }
        Ok(())
    }

    /// Ends the VM (if it has not ended) and reports how it went.
    pub fn stop(self) -> Result<RunReport, Error> {
        self.stop.stop();
        let Sandbox {
            thread, console, ..
        } = self;
        let explained = |e: Error| with_console(e, &console);
        let report = thread
            .join()
            .map_err(|_| Error::Panicked)?
            .map_err(|e| explained(e.into()))?;
        match report.exit {
            VmExit::Stopped | VmExit::Saved | VmExit::Guest(_) => Ok(report),
            VmExit::Reset => Err(explained(Error::Reset)),
        }
    }
}

/// `error`, with what the guest's console said last when it said anything.
fn with_console(error: Error, console: &Console) -> Error {
    let console = console.text().trim().to_string();
    if console.is_empty() {
        error
    } else {
        Error::WithConsole {
            error: Box::new(error),
            console,
        }
    }
}
