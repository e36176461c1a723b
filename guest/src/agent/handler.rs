//! One agent connection: `Hello`, then one `Exec` (or `Poweroff`, `Export` or `SetClock`),
//! served in its own process.
//!
//! While the command runs, one poll loop moves everything at once, so no direction can block
//! another: request frames (stdin, signals) in, stdin to the command, its stdout and stderr
//! out as `Stdout`/`Stderr` frames (each stream in order, chunks of at most 64 KiB). Every
//! buffer is bounded; when one is full the loop stops reading what would fill it (backpressure
//! reaches the host through the connection). The host dropping the connection, or a
//! malformed frame, ends the command's whole process group.
//!
//! `Export` sends a folder's tree (export.rs) as `TreeData` chunks, each written before the
//! next is read from the disk, then `TreeEnd`.
//!
//! While the command runs, the kernel's log is followed too, and each OOM kill it
//! tells of is sent as `OomKilled` (oom.rs), the last ones just before the final reply.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use contract::env::EnvVar;
use contract::frame::{self, ErrorKind, Exec, FrameError, Reply, Request};

use super::command::{self, Child};
use super::export::{self, Failure};
use super::oom::{self, OomWatch};
use super::tty::Terminal;
use crate::init::user::User;
use crate::sys::{self, cvt, cvt_size, ExitStatus};

/// After the command's main process exits, its output is read on until the pipes close, but
/// no longer than this (a daemonised child may hold them open for ever).
const DRAIN_LIMIT: Duration = Duration::from_millis(300);
/// Reply bytes waiting to be sent above which the command's pipes are not read.
const OUTPUT_HIGH: usize = 256 << 10;
/// Stdin bytes waiting for the command above which no more request frames are handled.
const STDIN_HIGH: usize = 256 << 10;
/// Received bytes not yet decoded: one largest frame.
const INPUT_MAX: usize = 4 + 1 + frame::MAX_PAYLOAD;
/// Longest error message sent (bounded so that a reply always encodes).
const MAX_MESSAGE: usize = 4096;
/// Without a pidfd (kernel < 5.3), how often the command is checked for its end.
const EXIT_CHECK: Duration = Duration::from_millis(50);
/// How long a finished exchange waits for the host to close its side (`Conn::linger`).
const LINGER: Duration = Duration::from_secs(2);

/// Who commands run as, and what they start with.
#[derive(Debug, Clone)]
pub struct Config {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The default working directory.
    pub home: PathBuf,
    /// `NAME=VALUE` entries; the request's entries are added to them.
    pub base_env: Vec<Vec<u8>>,
    /// The kernel's log, where a container's OOM kills are read (oom.rs).
    pub kernel_log: PathBuf,
}

impl Config {
    /// Commands run as `user`, with a login-like environment and `extra_env` (the guest's
    /// environment, from the host) on top.
    pub fn for_user(user: &User, groups: Vec<u32>, extra_env: &[EnvVar]) -> Self {
        let mut base_env = user.login_env(extra_env);
        base_env.push(b"TERM=dumb".to_vec());
        Config {
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.home.clone(),
            base_env,
            kernel_log: PathBuf::from(oom::KERNEL_LOG),
        }
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served (or given up on); the handler just ends.
    Done,
    /// The host asked to power the VM off.
    Poweroff,
}

/// Serves one connection. Errors are the connection's own (the host went away while the
/// agent was writing); everything else is answered on the connection, which is then closed
/// without losing the last reply ([`Conn::linger`]).
pub fn serve(conn: OwnedFd, cfg: &Config) -> io::Result<Outcome> {
    let mut conn = Conn::new(conn)?;
    let outcome = exchange(&mut conn, cfg)?;
    if outcome == Outcome::Done {
        conn.linger();
    }
    Ok(outcome)
}

fn exchange(conn: &mut Conn, cfg: &Config) -> io::Result<Outcome> {
    match conn.wait_request() {
        Ok(Some(Request::Hello {
            version: frame::VERSION,
        })) => conn.queue(&Reply::Hello {
            version: frame::VERSION,
        }),
        Ok(Some(Request::Hello { version })) => {
            let message = format!(
                "the agent speaks protocol version {}, not {version}",
                frame::VERSION
            );
            return conn.fail(ErrorKind::Version, message);
        }
        Ok(Some(other)) => {
            return conn.fail(
                ErrorKind::Protocol,
                format!("expected Hello, got {}", name(&other)),
            )
        }
        Ok(None) => return Ok(Outcome::Done),
        Err(e) => return conn.fail(ErrorKind::Protocol, e.to_string()),
    }
    conn.flush_all()?;
    let exec = match conn.wait_request() {
        Ok(Some(Request::Exec(exec))) => exec,
        Ok(Some(Request::Poweroff)) => return Ok(Outcome::Poweroff),
        Ok(Some(Request::Export { path })) => return export_tree(conn, &path),
        Ok(Some(Request::SetClock { secs, nanos })) => {
            return match super::activate::set_clock((secs, nanos)) {
                Ok(()) => {
                    conn.queue(&Reply::ClockSet);
                    conn.flush_all().map(|()| Outcome::Done)
                }
                Err(e) => conn.fail(ErrorKind::ExecFailed, e.to_string()),
            }
        }
        Ok(Some(other)) => {
            return conn.fail(
                ErrorKind::Protocol,
                format!(
                    "expected Exec, Poweroff, Export or SetClock, got {}",
                    name(&other)
                ),
            )
        }
        Ok(None) => return Ok(Outcome::Done),
        Err(e) => return conn.fail(ErrorKind::Protocol, e.to_string()),
    };
    // OOM kills count from before the command starts.
    let oom = OomWatch::open(&cfg.kernel_log);
    let child = match command::spawn(&exec, cfg) {
        Ok(child) => child,
        Err(failure) => return conn.fail(failure.kind, failure.message),
    };
    conn.queue(&Reply::Started { pid: child.pid });
    Running::new(child, &exec, oom).run(conn)
}

/// A request's name, for error messages.
pub(super) fn name(request: &Request) -> &'static str {
    match request {
        Request::Hello { .. } => "Hello",
        Request::Exec(_) => "Exec",
        Request::Stdin(_) => "Stdin",
        Request::StdinEof => "StdinEof",
        Request::Signal(_) => "Signal",
        Request::Poweroff => "Poweroff",
        Request::Export { .. } => "Export",
        Request::Activate(_) => "Activate",
        Request::Resize(_) => "Resize",
        Request::SetClock { .. } => "SetClock",
    }
}

/// Sends the tree of the folder `path` as `TreeData` chunks, then `TreeEnd`; a folder that
/// cannot be read gets `Error { Export }`.
fn export_tree(conn: &mut Conn, path: &[u8]) -> io::Result<Outcome> {
    let path = Path::new(OsStr::from_bytes(path));
    let mut send = |chunk| {
        conn.queue(&Reply::TreeData(chunk));
        conn.flush_all()
    };
    match export::export(path, &mut send) {
        Ok(()) => {
            conn.queue(&Reply::TreeEnd);
            conn.flush_all()?;
            Ok(Outcome::Done)
        }
        Err(Failure::Read(e)) => conn.fail(ErrorKind::Export, e.to_string()),
        Err(Failure::Send(e)) => Err(e),
    }
}

/// The connection to the host, non-blocking, with its decode and send buffers.
struct Conn {
    fd: OwnedFd,
    input: Vec<u8>,
    output: VecDeque<u8>,
}

impl Conn {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(fd.as_fd())?;
        Ok(Conn {
            fd,
            input: Vec::new(),
            output: VecDeque::new(),
        })
    }

    /// Reads what is there. `Ok(false)` at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        let mut buf = vec![0u8; frame::MAX_CHUNK + frame::HEADER_LEN];
        let room = INPUT_MAX.saturating_sub(self.input.len()).min(buf.len());
        match sys::read(self.fd.as_fd(), &mut buf[..room]) {
            Ok(0) if room > 0 => Ok(false),
            Ok(n) => {
                self.input.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The next whole request already received.
    fn next_request(&mut self) -> Result<Option<Request>, FrameError> {
        match Request::decode(&self.input)? {
            Some((request, used)) => {
                self.input.drain(..used);
                Ok(Some(request))
            }
            None => Ok(None),
        }
    }

    /// Waits for the next request; `Ok(None)` when the host closes the connection first.
    fn wait_request(&mut self) -> Result<Option<Request>, FrameError> {
        loop {
            if let Some(request) = self.next_request()? {
                return Ok(Some(request));
            }
            poll(&mut [pollfd(self.fd.as_fd(), libc::POLLIN)], None)?;
            if !self.fill()? {
                return if self.input.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    fn queue(&mut self, reply: &Reply) {
        // Chunks are at most MAX_CHUNK and messages at most MAX_MESSAGE: every reply encodes.
        let frame = reply
            .encode()
            .expect("agent replies are within the frame bounds");
        self.output.extend(frame);
    }

    /// Sends what the connection takes now.
    fn flush(&mut self) -> io::Result<()> {
        while !self.output.is_empty() {
            let (chunk, _) = self.output.as_slices();
            match contract::sock::send(self.fd.as_fd(), chunk) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends everything queued, waiting for the host to take it.
    fn flush_all(&mut self) -> io::Result<()> {
        loop {
            self.flush()?;
            if self.output.is_empty() {
                return Ok(());
            }
            poll(&mut [pollfd(self.fd.as_fd(), libc::POLLOUT)], None)?;
        }
    }

    /// Ends the exchange without losing its last reply: a socket closed with bytes it has not
    /// read is reset, and the reset may discard the reply before the host reads it (a command
    /// that exits while the host still sends its stdin). So the agent's side is shut for
    /// writing (the host reads the reply, then the end), and what the host still sends is read
    /// and dropped until it closes, for at most [`LINGER`].
    fn linger(&mut self) {
        // SAFETY: shutdown only changes the state of this socket.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) } != 0 {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut buf = vec![0u8; frame::MAX_CHUNK];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || poll(&mut [pollfd(self.fd.as_fd(), libc::POLLIN)], Some(left)).is_err()
            {
                return;
            }
            match sys::read(self.fd.as_fd(), &mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }

    /// Sends a final `Error` reply and ends the exchange.
    fn fail(&mut self, kind: ErrorKind, mut message: String) -> io::Result<Outcome> {
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.queue(&Reply::Error { kind, message });
        self.flush_all()?;
        Ok(Outcome::Done)
    }
}

/// A command that runs, and the state of its streams.
struct Running {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    /// Bytes from `Stdin` frames the command has not read yet.
    stdin_buf: VecDeque<u8>,
    /// `StdinEof` came: close stdin once `stdin_buf` is written.
    stdin_eof: bool,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    terminal: Option<Terminal>,
    timeout: Option<(u64, Instant)>,
    timed_out: bool,
    /// The main process's end, and until when its output is still read.
    exited: Option<(ExitStatus, Instant)>,
    /// The kernel's log, followed for OOM kills (a container's process only).
    oom: Option<OomWatch>,
}

/// What one pass over the received requests decided.
enum Verdict {
    Continue,
    Poweroff,
    Protocol(String),
}

impl Running {
    fn new(child: Child, exec: &Exec, oom: Option<OomWatch>) -> Self {
        for fd in [
            Some(&child.stdout),
            child.stderr.as_ref(),
            child.stdin.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            // A pipe we created; failing here would be a kernel bug, and the loop still works
            // (only less concurrently) with a blocking pipe.
            let _ = set_nonblocking(fd.as_fd());
        }
        Running {
            pid: child.pid,
            pidfd: sys::pidfd_open(child.pid),
            stdin: child.stdin,
            stdin_buf: VecDeque::new(),
            stdin_eof: false,
            stdout: Some(child.stdout),
            stderr: child.stderr,
            terminal: child.terminal,
            timeout: exec.timeout_ms.map(|ms| {
                let deadline = Instant::now()
                    .checked_add(Duration::from_millis(ms))
                    .unwrap_or_else(far_future);
                (ms, deadline)
            }),
            timed_out: false,
            exited: None,
            oom,
        }
    }

    fn run(mut self, conn: &mut Conn) -> io::Result<Outcome> {
        loop {
            match self.handle_requests(conn) {
                Verdict::Continue => {}
                Verdict::Poweroff => {
                    command::kill_group(self.pid, libc::SIGKILL);
                    return Ok(Outcome::Poweroff);
                }
                Verdict::Protocol(message) => {
                    self.abandon();
                    return conn.fail(ErrorKind::Protocol, message);
                }
            }
            self.write_stdin();
            self.check_exit();
            let now = Instant::now();
            if let Some((_, deadline)) = self.timeout {
                if now >= deadline && !self.timed_out {
                    self.timed_out = true;
                    command::kill_group(self.pid, libc::SIGKILL);
                }
            }
            if let Some((status, drain_until)) = self.exited {
                if (self.stdout.is_none() && self.stderr.is_none()) || now >= drain_until {
                    return self.finish(conn, status);
                }
            }
            if let Err(e) = conn.flush() {
                self.abandon();
                return Err(e);
            }
            if !self.wait(conn)? {
                self.abandon();
                return Ok(Outcome::Done);
            }
        }
    }

    /// Handles received requests while there is room for more stdin.
    fn handle_requests(&mut self, conn: &mut Conn) -> Verdict {
        while self.stdin_buf.len() < STDIN_HIGH {
            match conn.next_request() {
                Ok(None) => break,
                Ok(Some(Request::Stdin(data))) => {
                    // Data for a closed stdin is dropped, as a pipe's reader would never see it.
                    if self.stdin.is_some() && !self.stdin_eof {
                        self.stdin_buf.extend(data);
                    }
                }
                Ok(Some(Request::StdinEof)) => self.stdin_eof = true,
                Ok(Some(Request::Signal(signal))) => command::kill_group(self.pid, signal),
                Ok(Some(Request::Resize(size))) => {
                    // A command without a terminal has no size to change.
                    if let Some(terminal) = &self.terminal {
                        let _ = terminal.resize(size);
                    }
                }
                Ok(Some(Request::Poweroff)) => return Verdict::Poweroff,
                Ok(Some(other)) => {
                    return Verdict::Protocol(format!("{} while a command runs", name(&other)))
                }
                Err(e) => return Verdict::Protocol(e.to_string()),
            }
        }
        Verdict::Continue
    }

    fn write_stdin(&mut self) {
        let Some(stdin) = &self.stdin else { return };
        while !self.stdin_buf.is_empty() {
            let (chunk, _) = self.stdin_buf.as_slices();
            // SAFETY: chunk is a valid readable slice of chunk.len() bytes.
            match cvt_size(unsafe {
                libc::write(stdin.as_raw_fd(), chunk.as_ptr().cast(), chunk.len())
            }) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // EPIPE: the command closed its stdin; what is left is never read.
                    self.stdin_buf.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_eof {
            self.stdin = None;
        }
    }

    fn check_exit(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some((_, status))) = sys::waitpid(self.pid, libc::WNOHANG) {
            self.exited = Some((status, Instant::now() + DRAIN_LIMIT));
        }
    }

    /// Waits for something to do, and does the reading. `Ok(false)` when the host has gone.
    fn wait(&mut self, conn: &mut Conn) -> io::Result<bool> {
        let mut fds = Vec::with_capacity(6);
        let mut conn_events = libc::POLLRDHUP;
        if self.stdin_buf.len() < STDIN_HIGH && conn.input.len() < INPUT_MAX {
            conn_events |= libc::POLLIN;
        }
        if !conn.output.is_empty() {
            conn_events |= libc::POLLOUT;
        }
        fds.push(pollfd(conn.fd.as_fd(), conn_events));
        let output_room = conn.output.len() < OUTPUT_HIGH;
        for pipe in [&self.stdout, &self.stderr] {
            let events = if output_room { libc::POLLIN } else { 0 };
            fds.push(pipe_pollfd(pipe.as_ref(), events));
        }
        let stdin_events = if self.stdin_buf.is_empty() {
            0
        } else {
            libc::POLLOUT
        };
        fds.push(pipe_pollfd(self.stdin.as_ref(), stdin_events));
        let pidfd = self.pidfd.as_ref().filter(|_| self.exited.is_none());
        fds.push(pipe_pollfd(pidfd, libc::POLLIN));
        fds.push(match &self.oom {
            Some(watch) => pollfd(watch.fd(), libc::POLLIN),
            None => pipe_pollfd(None, 0),
        });

        let now = Instant::now();
        let mut wake = [
            self.timeout
                .filter(|_| !self.timed_out)
                .map(|(_, deadline)| deadline),
            self.exited.map(|(_, drain_until)| drain_until),
            (self.pidfd.is_none() && self.exited.is_none()).then(|| now + EXIT_CHECK),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now));
        // Round up, so that a deadline is past when poll returns.
        if let Some(wait) = &mut wake {
            *wait += Duration::from_micros(999);
        }
        poll(&mut fds, wake)?;

        let conn_revents = fds[0].revents;
        // The host keeps its end open until the final reply: any hang-up means it has gone.
        if conn_revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0 {
            return Ok(false);
        }
        if conn_revents & libc::POLLIN != 0 && !conn.fill()? {
            return Ok(false);
        }
        if fds[1].revents != 0 {
            self.read_output(conn, false);
        }
        if fds[2].revents != 0 {
            self.read_output(conn, true);
        }
        if fds[5].revents != 0 {
            self.report_oom_kills(conn);
        }
        Ok(true)
    }

    /// Sends the OOM kills the kernel's log tells of since the last look; stops following a
    /// log that cannot be read on.
    fn report_oom_kills(&mut self, conn: &mut Conn) {
        let Some(watch) = &mut self.oom else { return };
        let logged = watch.read();
        for kill in logged.kills {
            conn.queue(&Reply::OomKilled {
                seq: kill.seq,
                pid: kill.pid,
            });
        }
        if logged.ended {
            self.oom = None;
        }
    }

    /// Reads one chunk from stdout or stderr and queues it; closes the pipe at its end.
    fn read_output(&mut self, conn: &mut Conn, is_stderr: bool) {
        let pipe = if is_stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        let Some(fd) = pipe else { return };
        let mut buf = vec![0u8; frame::MAX_CHUNK];
        match sys::read(fd.as_fd(), &mut buf) {
            Ok(0) => *pipe = None,
            Ok(n) => {
                buf.truncate(n);
                conn.queue(&if is_stderr {
                    Reply::Stderr(buf)
                } else {
                    Reply::Stdout(buf)
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => *pipe = None,
        }
    }

    /// The main process has exited and its output is read: end what is left of its group,
    /// make its writes durable, send the OOM kills logged meanwhile and the final reply.
    fn finish(mut self, conn: &mut Conn, status: ExitStatus) -> io::Result<Outcome> {
        command::kill_group(self.pid, libc::SIGKILL);
        // The host may end the VM as soon as it has the reply: volumes must be on disk.
        // SAFETY: sync has no arguments.
        unsafe { libc::sync() };
        // The OOM killer logs a kill just after it sends its SIGKILL, so the victim's end may
        // be seen first; by now (its output drained, the disks synced) the record is there.
        self.report_oom_kills(conn);
        let reply = match (self.timeout, self.timed_out, status) {
            (Some((timeout_ms, _)), true, _) => Reply::TimedOut { timeout_ms },
            (_, _, ExitStatus::Code(code)) => Reply::Exited(code),
            (_, _, ExitStatus::Signal(signal)) => Reply::Signaled(signal),
        };
        conn.queue(&reply);
        conn.flush_all()?;
        Ok(Outcome::Done)
    }

    /// Kills the whole process group and reaps the main process.
    fn abandon(&mut self) {
        command::kill_group(self.pid, libc::SIGKILL);
        if self.exited.is_none() {
            let _ = sys::waitpid(self.pid, 0);
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

fn pollfd(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// A poll entry for an optional descriptor; a negative fd is ignored by poll(2).
fn pipe_pollfd(fd: Option<&OwnedFd>, events: libc::c_short) -> libc::pollfd {
    match fd {
        Some(fd) if events != 0 => pollfd(fd.as_fd(), events),
        _ => libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        },
    }
}

fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    sys::retry(|| {
        // SAFETY: fds is a valid array of fds.len() pollfd structures.
        cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) })
    })
    .map(drop)
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only read and write the file status flags of fd.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

#[cfg(test)]
mod tests;
