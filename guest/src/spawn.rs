//! The spawn shim: `nodeos-init spawn [--argv0 NAME] -- FILE ARGS...` (also run as
//! `nodeos-spawn`).
//!
//! PID 1 is Node.js, which reaps only the processes it started itself; orphans would stay
//! zombies under it for ever. So Node starts every child through this shim (spawn-preload.js),
//! which asks the supervisor, a child subreaper, to start the real command on its behalf with
//! the shim's argv, environment, cwd, umask and open descriptors. The shim then stands in for
//! the command: it forwards the signals sent to it and ends the way the command ended (same
//! exit code, or killed by the same signal). Orphans of the command are reaped by the supervisor.
//!
//! Differences from a plain spawn (documented in docs/guest-contract.md):
//! - A program that cannot be started shows as the shim printing `nodeos: FILE: <why>` and
//!   exiting 127 (126 for errors other than "not found"), not as an `error` event.
//! - `child.pid` is the shim's pid; signals sent to it reach the command. SIGKILL kills the shim
//!   only; the supervisor then kills the command (SIGKILL) when it sees the shim gone.
//!
//! Without the supervisor (its socket missing, e.g. outside NodeOS) the shim just execs the command.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use contract::status;

use crate::error::strerror;
use crate::fdpass;
use crate::protocol::{Request, Response, Stage, MAX_FDS, MAX_FD_NUMBER};
use crate::sys;

/// Where the supervisor listens.
pub const SPAWN_SOCKET: &str = "/run/nodeos/spawn.sock";

/// Signals the shim passes on to the command.
pub const FORWARDED_SIGNALS: [libc::c_int; 9] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Exit code when the command could not be found (as shells do).
const NOT_FOUND: i32 = status::NOT_FOUND as i32;
/// Exit code when the command was found but could not be run.
const CANNOT_RUN: i32 = status::CANNOT_RUN as i32;

/// What the shim was asked to run.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    pub file: OsString,
    /// argv, argv[0] included.
    pub argv: Vec<OsString>,
}

/// Parses `[--argv0 NAME] [--] FILE ARGS...`.
pub fn parse_args(args: &[OsString]) -> Result<Command, String> {
    let mut argv0 = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_bytes() {
            b"--argv0" => {
                argv0 = Some(args.get(i + 1).ok_or("--argv0 needs a value")?.clone());
                i += 2;
            }
            b"--" => {
                i += 1;
                break;
            }
            arg if arg.starts_with(b"-") => {
                return Err(format!("unknown option {}", args[i].to_string_lossy()))
            }
            _ => break,
        }
    }
    let file = args.get(i).ok_or("no command given")?.clone();
    let mut argv = vec![argv0.unwrap_or_else(|| file.clone())];
    argv.extend(args[i + 1..].iter().cloned());
    Ok(Command { file, argv })
}

pub fn main(args: &[OsString]) -> ! {
    let command = match parse_args(args) {
        Ok(command) => command,
        Err(why) => {
            eprintln!(
                "nodeos-spawn: {why}\nusage: nodeos-init spawn [--argv0 NAME] -- FILE [ARGS...]"
            );
            sys::exit_now(2);
        }
    };
    let display = command.file.to_string_lossy().into_owned();
    // Block the forwarded signals before anything else, so none is lost while starting.
    let signals = match sys::signalfd(&FORWARDED_SIGNALS) {
        Ok(fd) => fd,
        Err(e) => die(
            &format!(
                "nodeos: {display}: signalfd: {}",
                strerror(e.raw_os_error().unwrap_or(0))
            ),
            NOT_FOUND,
        ),
    };
    let request = match build_request(&command, signals.as_raw_fd()) {
        Ok(request) => request,
        Err(why) => die(&format!("nodeos: {display}: {why}"), NOT_FOUND),
    };
    let sock = match UnixStream::connect(SPAWN_SOCKET) {
        Ok(sock) => sock,
        Err(_) => {
            drop(signals);
            exec_directly(&request, &display)
        }
    };
    let encoded = match request.encode() {
        Ok(encoded) => encoded,
        Err(e) => die(&format!("nodeos: {display}: {e}"), NOT_FOUND),
    };
    let fds: Vec<RawFd> = request.fds.iter().map(|&fd| fd as RawFd).collect();
    if let Err(e) = fdpass::send_with_fds(sock.as_fd(), &encoded, &fds) {
        die(
            &format!(
                "nodeos: {display}: spawn service: {}",
                crate::error::errno_text(&e)
            ),
            NOT_FOUND,
        );
    }
    stand_in(&sock, &signals, &display)
}

/// Relays signals to the command and ends like it.
fn stand_in(sock: &UnixStream, signals: &OwnedFd, display: &str) -> ! {
    let mut pid = None;
    let mut pending: Vec<libc::c_int> = Vec::new();
    loop {
        let ready = match sys::poll_readable(&[sock.as_fd(), signals.as_fd()], -1) {
            Ok(ready) => ready,
            Err(e) => die(
                &format!("nodeos: {display}: poll: {}", crate::error::errno_text(&e)),
                NOT_FOUND,
            ),
        };
        if ready[1] {
            while let Ok(Some(info)) = sys::read_signal(signals.as_fd()) {
                // Signals the kernel generates for a terminal (Ctrl-C: SI_KERNEL) reach the
                // command directly, as it is in the same foreground process group; only signals
                // a process sent (kill(2): si_code <= 0) are for the command through us.
                if info.ssi_code > 0 {
                    continue;
                }
                let sig = info.ssi_signo as libc::c_int;
                match pid {
                    Some(pid) => {
                        let _ = sys::kill(pid, sig);
                    }
                    None if pending.len() < 64 => pending.push(sig),
                    None => {}
                }
            }
        }
        if ready[0] {
            match read_response(sock) {
                Ok(Some(Response::Started { pid: started })) => {
                    pid = Some(started);
                    for sig in pending.drain(..) {
                        let _ = sys::kill(started, sig);
                    }
                }
                Ok(Some(Response::Exited { code })) => sys::exit_now(code),
                Ok(Some(Response::Signaled { signal })) => die_by_signal(signal),
                Ok(Some(Response::Failed { stage, errno })) => {
                    let what = match stage {
                        Stage::Exec => display.to_string(),
                        Stage::Chdir => format!("{display}: chdir"),
                        Stage::Setup => format!("{display}: set-up"),
                    };
                    let code = if stage == Stage::Exec && errno == libc::ENOENT {
                        NOT_FOUND
                    } else {
                        CANNOT_RUN
                    };
                    die(&format!("nodeos: {what}: {}", strerror(errno)), code)
                }
                Ok(Some(Response::Refused { reason })) => die(
                    &format!("nodeos: {display}: spawn service refused: {reason}"),
                    NOT_FOUND,
                ),
                Ok(None) => die(
                    &format!("nodeos: {display}: spawn service closed the connection"),
                    NOT_FOUND,
                ),
                Err(why) => die(
                    &format!("nodeos: {display}: spawn service: {why}"),
                    NOT_FOUND,
                ),
            }
        }
    }
}

fn read_response(sock: &UnixStream) -> Result<Option<Response>, String> {
    let mut header = [0u8; 5];
    match fdpass::read_exact_or_eof(sock.as_fd(), &mut header) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return Err(crate::error::errno_text(&e)),
    }
    let len = Response::payload_len(&header).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; len];
    match fdpass::read_exact_or_eof(sock.as_fd(), &mut payload) {
        Ok(true) => {}
        Ok(false) if len == 0 => {}
        Ok(false) => return Err("truncated response".into()),
        Err(e) => return Err(crate::error::errno_text(&e)),
    }
    Response::decode(header[0], &payload)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn build_request(command: &Command, exclude: RawFd) -> Result<Request, String> {
    let cstring = |s: &OsString| {
        CString::new(s.as_bytes())
            .map_err(|_| format!("{} contains a NUL byte", s.to_string_lossy()))
    };
    let cwd =
        std::env::current_dir().map_err(|e| format!("getcwd: {}", crate::error::errno_text(&e)))?;
    // SAFETY: umask only swaps the process's file mode mask; it is restored at once.
    let umask = unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    };
    Ok(Request {
        file: cstring(&command.file)?,
        argv: command.argv.iter().map(cstring).collect::<Result<_, _>>()?,
        env: crate::exec::current_env(),
        cwd: cstring(&cwd.into_os_string())?,
        umask,
        fds: open_fds(exclude)?,
    })
}

/// The descriptors this process has open (all of them inherited from Node: stdio, an IPC
/// channel, ...), which the command gets at the same numbers.
fn open_fds(exclude: RawFd) -> Result<Vec<u32>, String> {
    let listed: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => vec![0, 1, 2],
    };
    let mut fds: Vec<u32> = listed
        .into_iter()
        // SAFETY: F_GETFD only queries; the read_dir descriptor, closed by now, drops out here.
        .filter(|&fd| fd != exclude && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .map(|fd| fd as u32)
        .collect();
    fds.sort_unstable();
    if fds.len() > MAX_FDS || fds.iter().any(|&fd| fd > MAX_FD_NUMBER) {
        return Err(format!("too many open descriptors to pass on ({} open, at most {MAX_FDS} below {MAX_FD_NUMBER})", fds.len()));
    }
    Ok(fds)
}

/// No supervisor: become the command.
fn exec_directly(request: &Request, display: &str) -> ! {
    sys::reset_signals();
    let err = crate::exec::execvpe(&request.file, &request.argv, &request.env);
    let code = if err.raw_os_error() == Some(libc::ENOENT) {
        NOT_FOUND
    } else {
        CANNOT_RUN
    };
    die(
        &format!("nodeos: {display}: {}", crate::error::errno_text(&err)),
        code,
    )
}

fn die(message: &str, code: i32) -> ! {
    let _ = sys::write_all(std::io::stderr().as_fd(), format!("{message}\n").as_bytes());
    sys::exit_now(code)
}

/// Ends this process by `signal`, so the parent sees the same `signal` the command got.
fn die_by_signal(signal: libc::c_int) -> ! {
    // SAFETY: restoring the default action and unblocking `signal` only affect this process,
    // which is about to end; raise delivers it synchronously.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let set = sys::sigset(&[signal]);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    // A signal whose default action is not to terminate (cannot happen for a command that
    // was killed by it, but be safe): exit as a shell reports it.
    sys::exit_now(i32::from(status::SIGNALED_BASE) + signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_preload_form() {
        let command = parse_args(&os(&[
            "--argv0",
            "nodejs",
            "--",
            "/usr/bin/node",
            "-e",
            "1",
        ]))
        .unwrap();
        assert_eq!(
            command,
            Command {
                file: "/usr/bin/node".into(),
                argv: os(&["nodejs", "-e", "1"])
            }
        );
    }

    #[test]
    fn argv0_defaults_to_the_file_and_dash_dash_is_optional() {
        assert_eq!(
            parse_args(&os(&["ls", "-l"])).unwrap().argv,
            os(&["ls", "-l"])
        );
        // Arguments after FILE that look like options belong to the command.
        assert_eq!(
            parse_args(&os(&["--", "node", "--version"])).unwrap().argv,
            os(&["node", "--version"])
        );
    }

    #[test]
    fn errors() {
        assert!(parse_args(&os(&[])).is_err());
        assert!(parse_args(&os(&["--"])).is_err());
        assert!(parse_args(&os(&["--argv0"])).is_err());
        assert!(parse_args(&os(&["--bogus", "x"])).is_err());
    }
}
