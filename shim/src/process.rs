//! One process of a container (its main process or one `exec`ed beside it): started through
//! the guest agent, its stdio moved between containerd's FIFOs and the agent's session by two
//! threads, its state (created, running, stopped) kept for the task API.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use contract::frame::WinSize;
use contract::status;
use sandbox::agent::{Command, Event, Input, Outcome, Session, Wake};
use vmm_sys_util::eventfd::EventFd;

/// The exit status containerd gets when the VM ended under a process (runc's "unknown").
const LOST: u32 = 255;
/// How long the guest has to say a process runs (a Node start under TCG takes a second).
const START_TIME: Duration = Duration::from_secs(60);

/// containerd's FIFOs for a process's stdio: paths, empty when absent.
#[derive(Debug, Clone, Default)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running { pid: u32 },
    Stopped { pid: u32, code: u32, at: SystemTime },
}

/// What the main thread needs while the process runs: its state and its input.
struct Shared {
    status: Status,
    /// A start has been asked for (a second is refused).
    claimed: bool,
    input: Option<Input>,
    /// Why it could not be started, when it could not.
    failure: Option<String>,
}

pub struct Process {
    pub command: Command,
    pub stdio: Stdio,
    shared: Mutex<Shared>,
    changed: Condvar,
}

impl Process {
    pub fn new(mut command: Command, stdio: Stdio) -> Arc<Process> {
        command.stdin = !stdio.stdin.is_empty();
        Arc::new(Process {
            command,
            stdio,
            shared: Mutex::new(Shared {
                status: Status::Created,
                claimed: false,
                input: None,
                failure: None,
            }),
            changed: Condvar::new(),
        })
    }

    pub fn status(&self) -> Status {
        self.shared.lock().unwrap().status
    }

    /// Takes the right to start it: false when it was taken already or it has stopped.
    pub fn claim(&self) -> bool {
        let mut shared = self.shared.lock().unwrap();
        let free = shared.status == Status::Created && !shared.claimed;
        shared.claimed = true;
        free
    }

    /// Starts the process on `session` (the agent's, just opened for its command); `vm_ended`
    /// is readable once the VM has ended; `settle` runs once it has ended, before it reads as
    /// stopped (and a `wait` returns), and `on_exit` once it has stopped. Returns its pid in
    /// the guest once it runs, or why it could not be started.
    pub fn start(
        self: &Arc<Self>,
        session: Session,
        vm_ended: EventFd,
        settle: impl FnOnce() + Send + 'static,
        on_exit: impl FnOnce(&Process) + Send + 'static,
    ) -> Result<u32, String> {
        let input = session.input();
        self.shared.lock().unwrap().input = Some(input.clone());
        if !self.stdio.stdin.is_empty() {
            let path = PathBuf::from(&self.stdio.stdin);
            thread::spawn(move || feed_stdin(&path, &input));
        }
        let process = self.clone();
        thread::spawn(move || {
            process.pump(session, &vm_ended, settle);
            on_exit(&process);
        });
        // A guest that never says the process runs must not hold the task API up.
        let deadline = Instant::now() + START_TIME;
        let mut shared = self.shared.lock().unwrap();
        loop {
            match shared.status {
                Status::Created => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(format!(
                            "the guest did not start it within {}s",
                            START_TIME.as_secs()
                        ));
                    }
                    shared = self.changed.wait_timeout(shared, left).unwrap().0;
                }
                Status::Running { pid } => return Ok(pid),
                Status::Stopped { .. } => {
                    return Err(shared
                        .failure
                        .clone()
                        .unwrap_or_else(|| "it ended before it started".into()))
                }
            }
        }
    }

    /// Moves the command's output to containerd's FIFOs until it ends; then runs `settle` and
    /// records how it ended.
    fn pump(&self, mut session: Session, vm_ended: &EventFd, settle: impl FnOnce()) {
        let mut stdout = open_output(&self.stdio.stdout);
        let mut stderr = open_output(&self.stdio.stderr);
        let mut pid = 0;
        let (code, failure) = loop {
            match session.next(vm_ended, &[], None) {
                Ok(Wake::Event(Event::Started(started))) => {
                    pid = started as u32;
                    self.set(Status::Running { pid }, None);
                }
                // A reader gone away must not stop the process: drop its output.
                Ok(Wake::Event(Event::Stdout(data))) => write(&mut stdout, &data),
                Ok(Wake::Event(Event::Stderr(data))) => write(&mut stderr, &data),
                Ok(Wake::Event(Event::Ended(outcome))) => break exit_code(&outcome),
                Ok(Wake::Extra(_)) => {}
                Err(e) => break (LOST, Some(format!("the microVM: {e}"))),
            }
        };
        if let Some(why) = &failure {
            log::warn!("{}: {why}", self.name());
        }
        let at = SystemTime::now();
        settle();
        self.set(Status::Stopped { pid, code, at }, failure);
    }

    fn set(&self, status: Status, failure: Option<String>) {
        let mut shared = self.shared.lock().unwrap();
        shared.status = status;
        if failure.is_some() {
            shared.failure = failure;
        }
        if matches!(status, Status::Stopped { .. }) {
            shared.input = None;
        }
        self.changed.notify_all();
    }

    /// Waits until it has stopped: its exit status and when.
    pub fn wait(&self) -> (u32, SystemTime) {
        let mut shared = self.shared.lock().unwrap();
        loop {
            if let Status::Stopped { code, at, .. } = shared.status {
                return (code, at);
            }
            shared = self.changed.wait(shared).unwrap();
        }
    }

    /// Sends it `signal`; one never started is stopped as if the signal had killed it.
    pub fn signal(&self, signal: u32) -> Result<(), String> {
        let mut shared = self.shared.lock().unwrap();
        match (&shared.status, &shared.input) {
            (Status::Running { .. }, Some(input)) => {
                input.signal(signal as i32).map_err(|e| e.to_string())
            }
            (Status::Created, _) => {
                shared.status = Status::Stopped {
                    pid: 0,
                    code: u32::from(status::SIGNALED_BASE) + signal,
                    at: SystemTime::now(),
                };
                self.changed.notify_all();
                Ok(())
            }
            _ => Err("the process is not running".into()),
        }
    }

    pub fn resize(&self, size: WinSize) -> Result<(), String> {
        match &self.shared.lock().unwrap().input {
            Some(input) => input.resize(size).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    pub fn close_stdin(&self) -> Result<(), String> {
        match &self.shared.lock().unwrap().input {
            Some(input) => input.close().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(self.command.argv.first().map_or(&b""[..], |a| a)).into_owned()
    }
}

/// The exit status containerd gets for `outcome`, and why it did not run when it did not.
fn exit_code(outcome: &Outcome) -> (u32, Option<String>) {
    match outcome {
        Outcome::Exited(code) => ((*code & 0xff) as u32, None),
        Outcome::Signaled(signal) => (u32::from(status::SIGNALED_BASE) + *signal as u32, None),
        Outcome::TimedOut(_) => (u32::from(status::TIMED_OUT), None),
        Outcome::NotFound(why) => (u32::from(status::NOT_FOUND), Some(why.clone())),
        Outcome::NotExecutable(why) => (u32::from(status::CANNOT_RUN), Some(why.clone())),
    }
}

/// A FIFO containerd reads, opened read-write so that opening never blocks (the writing end
/// is then ours alone, and closing it ends containerd's reading).
fn open_output(path: &str) -> Option<File> {
    if path.is_empty() {
        return None;
    }
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => Some(file),
        Err(e) => {
            log::warn!("opening {path}: {e}");
            None
        }
    }
}

fn write(output: &mut Option<File>, data: &[u8]) {
    if let Some(file) = output {
        if file.write_all(data).is_err() {
            *output = None;
        }
    }
}

/// Moves what containerd writes into the stdin FIFO to the process, and its end too.
fn feed_stdin(path: &PathBuf, input: &Input) {
    let mut fifo = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(fifo) => fifo,
        Err(e) => {
            log::warn!("opening {}: {e}", path.display());
            return;
        }
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match fifo.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if input.write(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = input.close();
}
