//! Starting the command of an `Exec` request: its own session and process group, the agent's
//! user, pipes for its output (and stdin), and exec failures reported back through a
//! close-on-exec pipe, as the supervisor does for the spawn shim.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use contract::frame::{ErrorKind, Exec};
use contract::status;

use super::handler::Config;
use crate::error::errno_text;
use crate::fdpass;
use crate::init::user;
use crate::sys::{self, cvt, Fork};

/// A started command: its pid (also its process group and session) and our ends of its pipes.
pub struct Child {
    pub pid: libc::pid_t,
    /// Absent when the request asked for no stdin (the command reads /dev/null).
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Why the command did not start, as the reply says it.
#[derive(Debug)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// The step of the child's set-up that failed, as written on the report pipe.
#[derive(Clone, Copy)]
enum Stage {
    Setup = 0,
    Chdir = 1,
    Exec = 2,
}

/// What the child needs, prepared before the fork.
struct Prepared {
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
}

/// The environment of the command: `base` with `extra`'s `NAME=VALUE` entries added or
/// replacing entries of the same name.
pub fn merge_env(base: &[Vec<u8>], extra: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, Failure> {
    let mut env = base.to_vec();
    for entry in extra {
        let name_len = match entry.iter().position(|&b| b == b'=') {
            Some(n) if n > 0 => n + 1,
            _ => {
                return Err(Failure::new(
                    ErrorKind::Protocol,
                    format!(
                        "environment entry {:?} is not NAME=VALUE",
                        String::from_utf8_lossy(entry)
                    ),
                ))
            }
        };
        let name = &entry[..name_len];
        env.retain(|e| !e.starts_with(name));
        env.push(entry.clone());
    }
    Ok(env)
}

fn prepare(exec: &Exec, cfg: &Config) -> Result<Prepared, Failure> {
    if exec.argv.is_empty() {
        return Err(Failure::new(ErrorKind::Protocol, "empty argv"));
    }
    let cstring = |bytes: &[u8], what: &str| {
        CString::new(bytes).map_err(|_| {
            Failure::new(
                ErrorKind::ExecFailed,
                format!(
                    "{what} {:?} contains a NUL byte",
                    String::from_utf8_lossy(bytes)
                ),
            )
        })
    };
    let argv = exec
        .argv
        .iter()
        .map(|a| cstring(a, "argument"))
        .collect::<Result<_, _>>()?;
    let env = merge_env(&cfg.base_env, &exec.env)?
        .iter()
        .map(|e| cstring(e, "environment entry"))
        .collect::<Result<_, _>>()?;
    let cwd = match &exec.cwd {
        Some(cwd) => cstring(cwd, "working directory")?,
        None => cstring(cfg.home.as_os_str().as_encoded_bytes(), "home")?,
    };
    Ok(Prepared { argv, env, cwd })
}

/// Starts the command. Returns once it runs (its exec succeeded) or failed to start.
pub fn spawn(exec: &Exec, cfg: &Config) -> Result<Child, Failure> {
    let prepared = prepare(exec, cfg)?;
    let sys_failure = |what: &str, e: std::io::Error| {
        Failure::new(ErrorKind::ExecFailed, format!("{what}: {}", errno_text(&e)))
    };
    let (stdin_read, stdin_write) = if exec.stdin {
        let (r, w) = sys::pipe().map_err(|e| sys_failure("pipe", e))?;
        (r, Some(w))
    } else {
        let null =
            std::fs::File::open("/dev/null").map_err(|e| sys_failure("open /dev/null", e))?;
        (OwnedFd::from(null), None)
    };
    let (stdout_read, stdout_write) = sys::pipe().map_err(|e| sys_failure("pipe", e))?;
    let (stderr_read, stderr_write) = sys::pipe().map_err(|e| sys_failure("pipe", e))?;
    let (report_read, report_write) = sys::pipe().map_err(|e| sys_failure("pipe", e))?;

    let pid = match sys::fork().map_err(|e| sys_failure("fork", e))? {
        Fork::Child => become_command(
            &prepared,
            cfg,
            [&stdin_read, &stdout_write, &stderr_write],
            &report_write,
        ),
        Fork::Parent(pid) => pid,
    };
    drop((stdin_read, stdout_write, stderr_write, report_write));

    // The exec succeeded when the close-on-exec report pipe closes without a word.
    let mut report = [0u8; 5];
    if !fdpass::read_exact_or_eof(report_read.as_fd(), &mut report).unwrap_or(false) {
        return Ok(Child {
            pid,
            stdin: stdin_write,
            stdout: stdout_read,
            stderr: stderr_read,
        });
    }
    let _ = sys::waitpid(pid, 0);
    let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
    let why = crate::error::strerror(errno);
    let file = String::from_utf8_lossy(&exec.argv[0]);
    Err(match report[0] {
        s if s == Stage::Exec as u8 => match errno {
            libc::ENOENT => Failure::new(ErrorKind::NotFound, format!("{file}: {why}")),
            libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR => {
                Failure::new(ErrorKind::NotExecutable, format!("{file}: {why}"))
            }
            _ => Failure::new(ErrorKind::ExecFailed, format!("{file}: {why}")),
        },
        s if s == Stage::Chdir as u8 => Failure::new(
            ErrorKind::BadCwd,
            format!("chdir {}: {why}", prepared.cwd.to_string_lossy()),
        ),
        _ => Failure::new(ErrorKind::ExecFailed, format!("{file}: set-up: {why}")),
    })
}

/// In the forked child: become the command, or report why not and exit.
fn become_command(prepared: &Prepared, cfg: &Config, stdio: [&OwnedFd; 3], report: &OwnedFd) -> ! {
    let fail = |stage: Stage, err: std::io::Error| -> ! {
        let mut msg = vec![stage as u8];
        msg.extend_from_slice(&err.raw_os_error().unwrap_or(libc::EIO).to_le_bytes());
        let _ = sys::write_all(report.as_fd(), &msg);
        sys::exit_now(i32::from(status::NOT_FOUND))
    };
    // SAFETY: setsid has no memory arguments; a fresh child of the handler is not a group
    // leader, so it cannot fail.
    unsafe { libc::setsid() };
    // Descriptors 0-2 are always open in the agent (init made sure of it), so the pipes are
    // numbered above them and no dup2 below clobbers another source.
    for (target, fd) in stdio.into_iter().enumerate() {
        if let Err(e) = install(fd, target as RawFd) {
            fail(Stage::Setup, e);
        }
    }
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != cfg.uid || egid != cfg.gid {
        if let Err(e) = user::drop_privileges(cfg.uid, cfg.gid, &cfg.groups) {
            let errno = e.errno().unwrap_or(libc::EPERM);
            fail(Stage::Setup, std::io::Error::from_raw_os_error(errno));
        }
    }
    // SAFETY: cwd is a NUL-terminated path.
    if let Err(e) = cvt(unsafe { libc::chdir(prepared.cwd.as_ptr()) }) {
        fail(Stage::Chdir, e);
    }
    // SAFETY: umask has no memory arguments.
    unsafe { libc::umask(0o022) };
    sys::reset_signals();
    let err = crate::exec::execvpe(&prepared.argv[0], &prepared.argv, &prepared.env);
    fail(Stage::Exec, err)
}

/// Makes `fd` the inherited descriptor `target`.
fn install(fd: &OwnedFd, target: RawFd) -> std::io::Result<()> {
    if fd.as_raw_fd() == target {
        return sys::set_cloexec(target, false);
    }
    // SAFETY: both are valid descriptor numbers; dup2 atomically replaces target, and the copy
    // is not close-on-exec.
    cvt(unsafe { libc::dup2(fd.as_raw_fd(), target) }).map(drop)
}

/// The process group of a started command is its pid; this ends all of it.
pub fn kill_group(pid: libc::pid_t, signal: libc::c_int) {
    let _ = sys::kill(-pid, signal);
}
