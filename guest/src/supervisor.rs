//! The supervisor: the root process beside PID 1 (Node.js) that does what Node cannot.
//!
//! - **Ends the VM.** The REPL cannot call reboot(2) (it is unprivileged) and PID 1 must never
//!   exit (the kernel would panic). So repl.js writes its exit code, as a decimal line, to the
//!   control pipe it inherited (fd [`CONTROL_FD`], named in `NODEOS_CONTROL_FD`) and blocks for
//!   ever; the supervisor reads it and powers the VM off (poweroff.rs: syncs, makes the disks
//!   read-only, silences the kernel console, drains the serial line and writes the code to the
//!   exit port).
//! - **Reaps orphans.** It is a child subreaper and serves the spawn service on
//!   [`SPAWN_SOCKET`]: every command Node starts runs as a descendant of the supervisor (see
//!   spawn.rs), so orphans reparent here and are reaped, not left as zombies under PID 1.
//!
//! Each spawn connection is served by its own short-lived child (a "handler"), which drops to
//! the caller's uid/gid/groups, starts the command as its own child and waits for it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use contract::ports::MAX_EXIT_STATUS;
use contract::status;

use crate::error::{Context, Error, Result};
use crate::fdpass;
use crate::init::user::{self, User};
use crate::ports;
use crate::poweroff;
use crate::protocol::{Request, Response, Stage, HEADER_LEN, MAX_FDS};
use crate::spawn::SPAWN_SOCKET;
use crate::sys::{self, cvt, ExitStatus, Fork};

/// The descriptor number of the control pipe's write end in PID 1.
pub const CONTROL_FD: RawFd = 3;
/// The environment variable that tells repl.js which descriptor is the control pipe.
pub const CONTROL_FD_ENV: &str = "NODEOS_CONTROL_FD";
/// Longest control line ("-2147483648\n" fits).
const MAX_CONTROL_MESSAGE: usize = 32;

/// Starts the supervisor as a child of the calling process (PID 1, still root). Returns the
/// write end of the control pipe, owned by `user` so that Node can reopen it close-on-exec.
/// `persistent`: the disks to make clean when the VM ends (poweroff::persistent_mounts).
pub fn start(persistent: Vec<PathBuf>, user: &User) -> Result<OwnedFd> {
    let (control_read, control_write) = sys::pipe().context(|| "create the control pipe".into())?;
    // SAFETY: fchown on a pipe descriptor we own; no memory arguments.
    cvt(unsafe { libc::fchown(control_write.as_raw_fd(), user.uid, user.gid) })
        .context(|| format!("chown the control pipe to {}", user.uid))?;
    // Listen before PID 1 runs Node, so the first spawn from the REPL finds the socket.
    let listener = listen(user)?;
    match sys::fork().context(|| "fork the supervisor".into())? {
        Fork::Child => {
            drop(control_write);
            let supervisor = Supervisor {
                control: control_read,
                listener,
                allowed_uid: user.uid,
                persistent,
            };
            supervisor.run()
        }
        Fork::Parent(_) => Ok(control_write),
    }
}

fn listen(user: &User) -> Result<UnixListener> {
    let _ = std::fs::remove_file(SPAWN_SOCKET);
    let listener =
        UnixListener::bind(SPAWN_SOCKET).context(|| format!("listen on {SPAWN_SOCKET}"))?;
    let path = sys::cstring(SPAWN_SOCKET)?;
    // SAFETY: path is NUL-terminated; chown has no other memory arguments.
    cvt(unsafe { libc::chown(path.as_ptr(), user.uid, user.gid) })
        .context(|| format!("chown {SPAWN_SOCKET}"))?;
    std::fs::set_permissions(SPAWN_SOCKET, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("chmod {SPAWN_SOCKET}"))?;
    listener
        .set_nonblocking(true)
        .context(|| format!("set {SPAWN_SOCKET} non-blocking"))?;
    Ok(listener)
}

struct Supervisor {
    control: OwnedFd,
    listener: UnixListener,
    /// The only uid allowed to use the spawn service (the REPL's user).
    allowed_uid: u32,
    persistent: Vec<PathBuf>,
}

impl Supervisor {
    fn run(self) -> ! {
        // Out of the console's foreground process group: Ctrl-C is not for us.
        // SAFETY: setpgid/prctl/signal have no memory arguments.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let children = match sys::signalfd(&[libc::SIGCHLD]) {
            Ok(fd) => fd,
            Err(e) => fatal(&Error::sys("signalfd SIGCHLD", e)),
        };
        let mut pending = Vec::new();
        loop {
            let ready = match sys::poll_readable(
                &[
                    self.listener.as_fd(),
                    self.control.as_fd(),
                    children.as_fd(),
                ],
                -1,
            ) {
                Ok(ready) => ready,
                Err(e) => fatal(&Error::sys("poll", e)),
            };
            if ready[2] {
                while let Ok(Some(_)) = sys::read_signal(children.as_fd()) {}
                reap_all();
            }
            if ready[0] {
                self.accept();
            }
            if ready[1] {
                let mut buf = [0u8; MAX_CONTROL_MESSAGE];
                let n = sys::read(self.control.as_fd(), &mut buf).unwrap_or(0);
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    match ControlMessage::parse(&line) {
                        ControlMessage::Ready => ports::mark_console_ready(),
                        ControlMessage::Exit(code) => {
                            poweroff::power_off(&self.persistent, ports::exit_status_byte(code))
                        }
                    }
                }
                // PID 1 closing the pipe, or sending garbage, cannot happen through repl.js;
                // end the VM anyway rather than leave it running with no way out.
                if n == 0 || pending.len() >= MAX_CONTROL_MESSAGE {
                    poweroff::power_off(&self.persistent, MAX_EXIT_STATUS);
                }
            }
        }
    }

    fn accept(&self) {
        loop {
            let conn = match self.listener.accept() {
                Ok((conn, _)) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // ECONNABORTED etc.: that client is gone.
            };
            match sys::fork() {
                Ok(Fork::Child) => {
                    // SAFETY: in the handler, these duplicates of the supervisor's descriptors are
                    // not used; closing them does not affect the supervisor's copies. This process
                    // never returns into code that would use or close them again.
                    unsafe {
                        libc::close(self.listener.as_raw_fd());
                        libc::close(self.control.as_raw_fd());
                    }
                    handle(conn, self.allowed_uid)
                }
                Ok(Fork::Parent(_)) => {}
                Err(e) => {
                    let _ = send(
                        &conn,
                        &Response::Refused {
                            reason: format!("fork: {}", crate::error::errno_text(&e)),
                        },
                    );
                }
            }
        }
    }
}

/// Reaps every child that has ended: handlers, and orphans that reparented to us.
fn reap_all() {
    while let Ok(Some(_)) = sys::waitpid(-1, libc::WNOHANG) {}
}

/// A line repl.js writes on the control pipe.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// `ready`: the REPL reads its input now.
    Ready,
    /// A decimal exit code: the REPL has ended. Anything else is taken as 127.
    Exit(i64),
}

impl ControlMessage {
    pub fn parse(line: &[u8]) -> Self {
        let text = std::str::from_utf8(line).unwrap_or("").trim();
        match text {
            "ready" => ControlMessage::Ready,
            _ => ControlMessage::Exit(text.parse().unwrap_or(i64::from(MAX_EXIT_STATUS))),
        }
    }
}

/// How the command joins process groups, copied from the shim so that it behaves as if Node
/// had started it: in the shim's (foreground) process group, or in a session of its own when
/// the shim is one (`detached: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    New,
    JoinGroup(libc::pid_t),
}

fn session_of(pid: libc::pid_t) -> Session {
    // SAFETY: getsid/getpgid have no memory arguments.
    let (sid, pgid) = unsafe { (libc::getsid(pid), libc::getpgid(pid)) };
    if sid == pid || pgid < 0 {
        Session::New
    } else {
        Session::JoinGroup(pgid)
    }
}

/// The supplementary groups in a /proc/PID/status text.
pub fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

/// Serves one spawn connection, in its own process, and exits.
fn handle(conn: UnixStream, allowed_uid: u32) -> ! {
    let code = match serve(&conn, allowed_uid) {
        Ok(()) => 0,
        Err(reason) => {
            let _ = send(&conn, &Response::Refused { reason });
            1
        }
    };
    sys::exit_now(code)
}

fn serve(conn: &UnixStream, allowed_uid: u32) -> std::result::Result<(), String> {
    let text = |e: io::Error| crate::error::errno_text(&e);
    let peer = fdpass::peer_cred(conn.as_fd()).map_err(|e| format!("SO_PEERCRED: {}", text(e)))?;
    if peer.uid != allowed_uid {
        return Err(format!("uid {} may not use the spawn service", peer.uid));
    }
    let mut header = [0u8; HEADER_LEN];
    let fds = fdpass::recv_with_fds(conn.as_fd(), &mut header, MAX_FDS)
        .map_err(|e| format!("read request: {}", text(e)))?;
    let len = Request::body_len(&header).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    if len > 0
        && !fdpass::read_exact_or_eof(conn.as_fd(), &mut body)
            .map_err(|e| format!("read request: {}", text(e)))?
    {
        return Err("request truncated".into());
    }
    let request = Request::decode(&body).map_err(|e| e.to_string())?;
    if request.fds.len() != fds.len() {
        return Err(format!(
            "request names {} descriptors, {} came",
            request.fds.len(),
            fds.len()
        ));
    }

    let groups = std::fs::read_to_string(format!("/proc/{}/status", peer.pid))
        .ok()
        .and_then(|s| parse_groups(&s))
        .unwrap_or_else(|| vec![peer.gid]);
    let session = session_of(peer.pid);
    user::drop_privileges(peer.uid, peer.gid, &groups).map_err(|e| e.to_string())?;

    let (report_read, report_write) = sys::pipe().map_err(|e| format!("pipe: {}", text(e)))?;
    let pid = match sys::fork().map_err(|e| format!("fork: {}", text(e)))? {
        Fork::Child => {
            drop(report_read);
            start_command(&request, fds, session, report_write)
        }
        Fork::Parent(pid) => pid,
    };
    drop(fds);
    drop(report_write);

    // Exec succeeded when the close-on-exec report pipe closes without a word.
    let mut report = [0u8; 5];
    if fdpass::read_exact_or_eof(report_read.as_fd(), &mut report).unwrap_or(false) {
        let _ = sys::waitpid(pid, 0);
        let stage = match report[0] {
            0 => Stage::Exec,
            1 => Stage::Chdir,
            _ => Stage::Setup,
        };
        let errno = i32::from_le_bytes(report[1..].try_into().expect("4 bytes"));
        return send(conn, &Response::Failed { stage, errno }).map_err(text);
    }
    let shim_alive = send(conn, &Response::Started { pid }).is_ok();
    let status = wait_for(pid, conn, shim_alive);
    let response = match status {
        ExitStatus::Code(code) => Response::Exited { code },
        ExitStatus::Signal(signal) => Response::Signaled { signal },
    };
    let _ = send(conn, &response);
    Ok(())
}

/// Waits for the command; if the shim goes away first (SIGKILLed), kills the command too, as
/// killing a plainly spawned child would have.
fn wait_for(pid: libc::pid_t, conn: &UnixStream, mut shim_alive: bool) -> ExitStatus {
    // Without a pidfd (kernel < 5.3) the command is checked every POLL_FALLBACK instead.
    const POLL_FALLBACK_MS: libc::c_int = 50;
    let pidfd = sys::pidfd_open(pid);
    if !shim_alive {
        let _ = sys::kill(pid, libc::SIGKILL);
    }
    loop {
        if let Ok(Some((_, status))) = sys::waitpid(pid, libc::WNOHANG) {
            return status;
        }
        let mut watched = Vec::with_capacity(2);
        if shim_alive {
            watched.push(conn.as_fd());
        }
        if let Some(pidfd) = &pidfd {
            watched.push(pidfd.as_fd());
        }
        let timeout = if pidfd.is_some() {
            -1
        } else {
            POLL_FALLBACK_MS
        };
        if watched.is_empty() {
            std::thread::sleep(Duration::from_millis(POLL_FALLBACK_MS as u64));
            continue;
        }
        let ready = sys::poll_readable(&watched, timeout).unwrap_or_default();
        if shim_alive && ready.first() == Some(&true) {
            let mut buf = [0u8; 64];
            // The shim sends nothing after its request: readable means it is gone.
            if !matches!(sys::read(conn.as_fd(), &mut buf), Ok(n) if n > 0) {
                shim_alive = false;
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn send(conn: &UnixStream, response: &Response) -> io::Result<()> {
    fdpass::send_with_fds(conn.as_fd(), &response.encode(), &[])
}

/// In the forked child: become the command. Reports a failure as (stage, errno) on `report`.
fn start_command(request: &Request, fds: Vec<OwnedFd>, session: Session, report: OwnedFd) -> ! {
    // The report pipe must survive the dup2s that put the passed fds in place.
    let report = match move_above(&report, fd_base(&request.fds)) {
        Ok(moved) => {
            drop(report);
            moved
        }
        Err(_) => sys::exit_now(i32::from(status::NOT_FOUND)),
    };
    let fail = |stage: Stage, err: io::Error| -> ! {
        let mut msg = vec![stage as u8];
        msg.extend_from_slice(&err.raw_os_error().unwrap_or(libc::EIO).to_le_bytes());
        let _ = sys::write_all(report.as_fd(), &msg);
        sys::exit_now(i32::from(status::NOT_FOUND))
    };
    // SAFETY: setsid/setpgid have no memory arguments.
    unsafe {
        match session {
            Session::New => {
                libc::setsid();
            }
            Session::JoinGroup(pgid) => {
                if libc::setpgid(0, pgid) < 0 {
                    libc::setpgid(0, 0);
                }
            }
        }
    }
    if let Err(e) = install_fds(&request.fds, fds) {
        fail(Stage::Setup, e);
    }
    // SAFETY: umask has no memory arguments.
    unsafe { libc::umask(request.umask as libc::mode_t) };
    // SAFETY: cwd is a NUL-terminated path.
    if let Err(e) = cvt(unsafe { libc::chdir(request.cwd.as_ptr()) }) {
        fail(Stage::Chdir, e);
    }
    sys::reset_signals();
    let err = crate::exec::execvpe(&request.file, &request.argv, &request.env);
    fail(Stage::Exec, err)
}

/// Puts each received descriptor at its number (`targets`, same order), closes stdio numbers
/// the shim did not have, and leaves everything else close-on-exec.
fn install_fds(targets: &[u32], fds: Vec<OwnedFd>) -> io::Result<()> {
    // First move every received fd above all targets, so no dup2 below clobbers one not yet placed.
    let base = fd_base(targets);
    let moved = fds
        .iter()
        .map(|fd| move_above(fd, base))
        .collect::<io::Result<Vec<_>>>()?;
    drop(fds);
    for (&target, fd) in targets.iter().zip(&moved) {
        // SAFETY: both are valid descriptor numbers; dup2 atomically replaces target, and the
        // copy at target is not close-on-exec.
        cvt(unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) })?;
    }
    for stdio in 0..3u32 {
        if !targets.contains(&stdio) {
            // SAFETY: closing a descriptor number the command should not inherit; nothing in this
            // process uses it afterwards.
            unsafe { libc::close(stdio as RawFd) };
        }
    }
    Ok(())
}

/// The lowest descriptor number above every target number (and stdio).
fn fd_base(targets: &[u32]) -> RawFd {
    targets
        .iter()
        .map(|&t| t as RawFd + 1)
        .max()
        .unwrap_or(0)
        .max(3)
}

/// A close-on-exec duplicate of `fd` numbered `base` or higher.
fn move_above(fd: &OwnedFd, base: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid descriptor to the lowest free number >= base.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) })?;
    // SAFETY: the new descriptor is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A fatal supervisor error: without the supervisor the VM could never end, so end it now.
fn fatal(err: &Error) -> ! {
    eprintln!("nodeos-init: supervisor: {err}");
    poweroff::quiet_console();
    ports::exit_vm(status::BOOT_FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_from_repl_js() {
        use ControlMessage::*;
        assert_eq!(ControlMessage::parse(b"ready\n"), Ready);
        assert_eq!(ControlMessage::parse(b"0\n"), Exit(0));
        assert_eq!(ControlMessage::parse(b"3\n"), Exit(3));
        assert_eq!(ControlMessage::parse(b"-1\n"), Exit(-1));
        assert_eq!(ControlMessage::parse(b" 42 \n"), Exit(42));
        assert_eq!(ControlMessage::parse(b"x\n"), Exit(127));
        assert_eq!(ControlMessage::parse(b"\xff\n"), Exit(127));
    }

    #[test]
    fn groups_from_proc_status() {
        let status = "Name:\tnode\nUid:\t1000\t1000\t1000\t1000\nGroups:\t1000 29 \nNSpid:\t7\n";
        assert_eq!(parse_groups(status), Some(vec![1000, 29]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Name:\tx\n"), None);
    }

    #[test]
    fn a_session_leader_gets_a_new_session() {
        // This test process is normally not a session leader: it joins its own group.
        let me = sys::getpid();
        // SAFETY: getsid/getpgid have no memory arguments.
        let (sid, pgid) = unsafe { (libc::getsid(0), libc::getpgid(0)) };
        let expected = if sid == me {
            Session::New
        } else {
            Session::JoinGroup(pgid)
        };
        assert_eq!(session_of(me), expected);
    }
}
