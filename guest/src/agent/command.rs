//! Starting the command of an `Exec` request: its own session and process group, the agent's
//! user (or a container's root, resource limits and user: container.rs), pipes for its output
//! and stdin (or a terminal: tty.rs), and exec failures reported back through a close-on-exec
//! pipe, as the supervisor does for the spawn shim.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use contract::caps::Capabilities;
use contract::frame::{ErrorKind, Exec};
use contract::mount::Mount;
use contract::rlimit::Rlimit;
use contract::status;

use super::handler::Config;
use super::tty::Terminal;
use super::{caps, container};
use crate::error::errno_text;
use crate::fdpass;
use crate::init::user;
use crate::sys::{self, cvt, Fork};

/// A started command: its pid (also its process group and session) and our ends of its pipes
/// (of its terminal, when it has one).
pub struct Child {
    pub pid: libc::pid_t,
    /// Absent when the request asked for no stdin (the command reads /dev/null, or a
    /// terminal nobody types into).
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    /// Absent on a terminal, where stderr is stdout.
    pub stderr: Option<OwnedFd>,
    /// The terminal's side the agent sizes.
    pub terminal: Option<Terminal>,
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
    Root = 3,
    Rlimit = 4,
    Privileges = 5,
}

/// Most bytes of the child's account of a failed container set-up that are read.
const MAX_DETAIL: usize = 1024;

/// What the child needs, prepared before the fork.
struct Prepared {
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    /// Who it runs as.
    ids: (u32, u32, Vec<u32>),
    /// Its resource limits (a container's), checked.
    rlimits: Vec<Rlimit>,
    /// Its file systems of its own (a container's), checked as they were decoded.
    mounts: Vec<Mount>,
    /// Its capabilities (a container's, when its spec gives them), checked as they were
    /// decoded.
    capabilities: Option<Capabilities>,
    /// No program it executes gains privileges.
    no_new_privileges: bool,
    /// Its seccomp filter's instructions (a container's, when its spec has a profile).
    seccomp: Option<Vec<libc::sock_filter>>,
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
    // A container's process gets the request's environment only.
    let base: &[Vec<u8>] = match exec.container {
        Some(_) => &[],
        None => &cfg.base_env,
    };
    let env = merge_env(base, &exec.env)?
        .iter()
        .map(|e| cstring(e, "environment entry"))
        .collect::<Result<_, _>>()?;
    let cwd = match (&exec.cwd, &exec.container) {
        (Some(cwd), _) => cstring(cwd, "working directory")?,
        (None, Some(_)) => cstring(b"/", "working directory")?,
        (None, None) => cstring(cfg.home.as_os_str().as_encoded_bytes(), "home")?,
    };
    let ids = match &exec.container {
        Some(c) => (c.uid, c.gid, c.groups.clone()),
        None => (cfg.uid, cfg.gid, cfg.groups.clone()),
    };
    let rlimits = exec
        .container
        .as_ref()
        .map_or(Vec::new(), |c| c.rlimits.clone());
    for limit in &rlimits {
        limit
            .check()
            .map_err(|e| Failure::new(ErrorKind::ExecFailed, format!("a resource limit: {e}")))?;
    }
    let mounts = exec
        .container
        .as_ref()
        .map_or(Vec::new(), |c| c.mounts.clone());
    Ok(Prepared {
        argv,
        env,
        cwd,
        ids,
        rlimits,
        mounts,
        capabilities: exec.container.as_ref().and_then(|c| c.capabilities),
        no_new_privileges: exec.container.as_ref().is_some_and(|c| c.no_new_privileges),
        seccomp: exec
            .container
            .as_ref()
            .and_then(|c| c.seccomp.as_ref())
            .map(|f| f.instructions()),
    })
}

/// The command's side of its standard streams, and the agent's.
struct Stdio {
    /// What becomes its descriptors 0, 1 and 2.
    child: [OwnedFd; 3],
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
    terminal: Option<Terminal>,
}

impl Stdio {
    fn pipes(exec: &Exec) -> std::io::Result<Stdio> {
        let (stdin_read, stdin_write) = if exec.stdin {
            let (r, w) = sys::pipe()?;
            (r, Some(w))
        } else {
            (OwnedFd::from(std::fs::File::open("/dev/null")?), None)
        };
        let (stdout_read, stdout_write) = sys::pipe()?;
        let (stderr_read, stderr_write) = sys::pipe()?;
        Ok(Stdio {
            child: [stdin_read, stdout_write, stderr_write],
            stdin: stdin_write,
            stdout: stdout_read,
            stderr: Some(stderr_read),
            terminal: None,
        })
    }

    fn terminal(exec: &Exec, size: contract::frame::WinSize) -> std::io::Result<Stdio> {
        let (terminal, peer) = Terminal::open(size)?;
        Ok(Stdio {
            child: [peer.try_clone()?, peer.try_clone()?, peer],
            stdin: exec.stdin.then(|| terminal.master()).transpose()?,
            stdout: terminal.master()?,
            stderr: None,
            terminal: Some(terminal),
        })
    }
}

/// Starts the command. Returns once it runs (its exec succeeded) or failed to start.
pub fn spawn(exec: &Exec, cfg: &Config) -> Result<Child, Failure> {
    let prepared = prepare(exec, cfg)?;
    let sys_failure = |what: &str, e: std::io::Error| {
        Failure::new(ErrorKind::ExecFailed, format!("{what}: {}", errno_text(&e)))
    };
    let stdio = match exec.tty {
        Some(size) => Stdio::terminal(exec, size).map_err(|e| sys_failure("open a terminal", e)),
        None => Stdio::pipes(exec).map_err(|e| sys_failure("make pipes", e)),
    }?;
    let (report_read, report_write) = sys::pipe().map_err(|e| sys_failure("pipe", e))?;

    let root = exec.container.as_ref().map(|c| &c.root[..]);
    let pid = match sys::fork().map_err(|e| sys_failure("fork", e))? {
        Fork::Child => become_command(
            &prepared,
            root,
            &stdio.child,
            stdio.terminal.is_some(),
            &report_write,
        ),
        Fork::Parent(pid) => pid,
    };
    let Stdio {
        child,
        stdin,
        stdout,
        stderr,
        terminal,
    } = stdio;
    drop((child, report_write));

    // The exec succeeded when the close-on-exec report pipe closes without a word.
    let mut report = [0u8; 5];
    if !fdpass::read_exact_or_eof(report_read.as_fd(), &mut report).unwrap_or(false) {
        return Ok(Child {
            pid,
            stdin,
            stdout,
            stderr,
            terminal,
        });
    }
    let mut detail = vec![0u8; MAX_DETAIL];
    let detail_len = sys::read(report_read.as_fd(), &mut detail).unwrap_or(0);
    detail.truncate(detail_len);
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
        s if s == Stage::Rlimit as u8 || s == Stage::Privileges as u8 => Failure::new(
            ErrorKind::ExecFailed,
            format!("setting {}: {why}", String::from_utf8_lossy(&detail)),
        ),
        s if s == Stage::Root as u8 => Failure::new(
            ErrorKind::ExecFailed,
            format!(
                "entering the container root {}: {}",
                String::from_utf8_lossy(root.unwrap_or_default()),
                String::from_utf8_lossy(&detail)
            ),
        ),
        _ => Failure::new(ErrorKind::ExecFailed, format!("{file}: set-up: {why}")),
    })
}

/// In the forked child: become the command (in the container `root` when there is one; its
/// stdio a terminal, its controlling one, when `tty`), or report why not and exit.
fn become_command(
    prepared: &Prepared,
    root: Option<&[u8]>,
    stdio: &[OwnedFd; 3],
    tty: bool,
    report: &OwnedFd,
) -> ! {
    // The stage, the errno, and what the parent's message names (the step that failed).
    let fail_with = |stage: Stage, errno: i32, detail: &str| -> ! {
        let mut msg = vec![stage as u8];
        msg.extend_from_slice(&errno.to_le_bytes());
        msg.extend_from_slice(detail.as_bytes());
        let _ = sys::write_all(report.as_fd(), &msg);
        sys::exit_now(i32::from(status::NOT_FOUND))
    };
    let fail = |stage: Stage, err: std::io::Error| -> ! {
        fail_with(stage, err.raw_os_error().unwrap_or(libc::EIO), "")
    };
    // SAFETY: setsid has no memory arguments; a fresh child of the handler is not a group
    // leader, so it cannot fail.
    unsafe { libc::setsid() };
    // Descriptors 0-2 are always open in the agent (init made sure of it), so the pipes are
    // numbered above them and no dup2 below clobbers another source.
    for (target, fd) in stdio.iter().enumerate() {
        if let Err(e) = install(fd, target as RawFd) {
            fail(Stage::Setup, e);
        }
    }
    // SAFETY: TIOCSCTTY takes an int; descriptor 0 is the terminal of this new session.
    if tty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        fail(Stage::Setup, std::io::Error::last_os_error());
    }
    if let Some(root) = root {
        let root = std::path::Path::new(OsStr::from_bytes(root));
        if let Err(e) = container::enter(root, &prepared.mounts) {
            fail_with(
                Stage::Root,
                e.errno().unwrap_or(libc::ENOTDIR),
                &e.to_string(),
            );
        }
    }
    // As root still, so that a hard limit may be raised too.
    for limit in &prepared.rlimits {
        let value = libc::rlimit {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: setrlimit reads the rlimit structure `value`, which outlives the call.
        if unsafe { libc::setrlimit(limit.resource as _, &value) } != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error();
            fail_with(
                Stage::Rlimit,
                errno.unwrap_or(libc::EINVAL),
                &limit.to_string(),
            );
        }
    }
    let caps_failed = |what: &str, e: std::io::Error| -> ! {
        let errno = e.raw_os_error().unwrap_or(libc::EPERM);
        fail_with(Stage::Privileges, errno, what)
    };
    let filter = |filter: &[libc::sock_filter]| {
        if let Err(e) = caps::install_filter(filter) {
            caps_failed("the seccomp filter", e);
        }
    };
    // Without no new privileges, installing a filter takes CAP_SYS_ADMIN: while still root.
    if let (false, Some(program)) = (prepared.no_new_privileges, &prepared.seccomp) {
        filter(program);
    }
    // As root still: the bounding set, and the permitted one kept across the switch of user.
    if let Some(caps) = &prepared.capabilities {
        if let Err(e) = caps::bound(caps) {
            caps_failed("the bounding capabilities", e);
        }
    }
    let (uid, gid, groups) = &prepared.ids;
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != *uid || egid != *gid || root.is_some() {
        if let Err(e) = user::drop_privileges(*uid, *gid, groups) {
            let errno = e.errno().unwrap_or(libc::EPERM);
            fail(Stage::Setup, std::io::Error::from_raw_os_error(errno));
        }
    }
    if let Some(caps) = &prepared.capabilities {
        if let Err(e) = caps::set(caps) {
            caps_failed("the capabilities", e);
        }
    }
    if prepared.no_new_privileges {
        if let Err(e) = caps::no_new_privileges() {
            caps_failed("no new privileges", e);
        }
        if let Some(program) = &prepared.seccomp {
            filter(program);
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
