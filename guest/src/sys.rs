//! Thin, checked wrappers over the few system calls std does not offer.
//!
//! Each wrapper turns `-1`/`errno` into an [`Error`] that names what was being done, so callers
//! stay free of `unsafe` and of errno bookkeeping.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// A path or string as a C string; a NUL byte inside is an error, not a panic.
pub fn cstring(s: impl AsRef<OsStr>) -> Result<CString> {
    let bytes = s.as_ref().as_bytes();
    CString::new(bytes)
        .map_err(|_| Error::invalid(String::from_utf8_lossy(bytes), "contains a NUL byte"))
}

/// `Ok(ret)` for a non-negative libc return value, the errno otherwise.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries a call that failed with EINTR.
pub fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// mount(2). `source`, `fstype` and `data` may be absent (remounts, moves, binds).
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let what = || {
        let src = source.or(fstype).unwrap_or("(none)");
        let mut what = format!("mount {src} on {}", target.display());
        if let Some(data) = data {
            what.push_str(&format!(" ({data})"));
        }
        what
    };
    let c_source = source.map(cstring).transpose()?;
    let c_target = cstring(target)?;
    let c_fstype = fstype.map(cstring).transpose()?;
    let c_data = data.map(cstring).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null (allowed by mount(2) for these arguments) or points
    // to a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            ptr(&c_source),
            c_target.as_ptr(),
            ptr(&c_fstype),
            flags,
            ptr(&c_data).cast(),
        )
    };
    cvt(ret).map(drop).map_err(|e| Error::sys(what(), e))
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> Result<()> {
    let c_target = cstring(target)?;
    // SAFETY: c_target is a valid NUL-terminated path for the duration of the call.
    let ret = unsafe { libc::umount2(c_target.as_ptr(), flags) };
    cvt(ret)
        .map(drop)
        .map_err(|e| Error::sys(format!("unmount {}", target.display()), e))
}

/// pivot_root(2): `new_root` becomes `/`, the old root is moved to `put_old`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> Result<()> {
    let c_new = cstring(new_root)?;
    let c_old = cstring(put_old)?;
    // SAFETY: pivot_root takes two NUL-terminated paths that outlive the call; glibc has no
    // wrapper, hence the raw syscall.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, c_new.as_ptr(), c_old.as_ptr()) };
    cvt(ret as libc::c_int).map(drop).map_err(|e| {
        Error::sys(
            format!(
                "pivot_root to {} (old root at {})",
                new_root.display(),
                put_old.display()
            ),
            e,
        )
    })
}

/// openat2(2): `path` opened relative to the folder `dir` with `flags` (`O_*`), its
/// resolution restricted by `resolve` (`RESOLVE_*`).
pub fn openat2(dir: BorrowedFd<'_>, path: &Path, flags: u64, resolve: u64) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers, for which all zeroes is a value (mode 0).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags;
    how.resolve = resolve;
    // SAFETY: c_path is NUL-terminated and `how` a valid open_how whose size is passed; both
    // outlive the call, which only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    cvt(fd as libc::c_int)?;
    // SAFETY: openat2 succeeded: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The device of a path, to tell whether something is mounted on it.
pub fn device_of(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| Error::sys(format!("stat {}", path.display()), e))
}

/// pipe2(2) with O_CLOEXEC: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `buf` to a descriptor.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = retry(|| {
            // SAFETY: buf is a valid readable slice of buf.len() bytes.
            cvt_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Reads into `buf`; `Ok(0)` at end of file.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable slice of buf.len() bytes.
    retry(|| cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }))
}

pub fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Sets or clears FD_CLOEXEC.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and write the descriptor flags of fd.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(drop)
}

/// Result of fork(2), in the parent and in the child.
pub enum Fork {
    Parent(libc::pid_t),
    Child,
}

/// fork(2). The guest binary is single-threaded, so the child may allocate and run Rust code.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the process is single-threaded when this is called (init, the supervisor and its
    // per-connection handlers never start threads), so the child inherits consistent state.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn from_wait(status: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// waitpid(2) for one child; `None` with WNOHANG when it has not ended yet.
pub fn waitpid(
    pid: libc::pid_t,
    flags: libc::c_int,
) -> io::Result<Option<(libc::pid_t, ExitStatus)>> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid int for waitpid to write.
        let ret = retry(|| cvt(unsafe { libc::waitpid(pid, &mut status, flags) }))?;
        if ret == 0 {
            return Ok(None);
        }
        if let Some(exit) = ExitStatus::from_wait(status) {
            return Ok(Some((ret, exit)));
        }
        // Stopped or continued (only with WUNTRACED/WCONTINUED): not an end, wait on.
    }
}

/// Blocks `signals` in this thread and returns a signalfd that reports them.
pub fn signalfd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    let set = sigset(signals);
    // SAFETY: set is an initialised sigset_t; a null old-set pointer is allowed.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    // SAFETY: -1 asks for a new descriptor; set is valid for the call.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal from a signalfd: (signal, si_code, sender pid).
pub fn read_signal(fd: BorrowedFd<'_>) -> io::Result<Option<libc::signalfd_siginfo>> {
    // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: info is a writable buffer of exactly `size` bytes.
    match cvt_size(unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    }) {
        Ok(n) if n == size => Ok(Some(info)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// A sigset_t holding `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only adds valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Unblocks every signal and puts every disposition back to its default, as a freshly exec'd
/// program expects (ignored signals and the mask are inherited across execve).
pub fn reset_signals() {
    // SAFETY: an empty set unblocks everything; setting SIG_DFL is valid for every catchable
    // signal, and the calls for SIGKILL/SIGSTOP simply fail, which is ignored.
    unsafe {
        let empty = sigset(&[]);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMAX() {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// poll(2) on a few descriptors for readability; returns which are readable (or hung up).
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: libc::c_int) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    retry(|| {
        // SAFETY: pfds is a valid array of pfds.len() pollfd structures.
        cvt(unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) })
    })?;
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Sends a signal to a process (or a group, for a negative pid).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory arguments.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// A descriptor that becomes readable when child `pid` ends; `None` where the kernel has no
/// pidfd_open (before 5.3).
pub fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments; glibc 2.36 has no wrapper in the libc crate's
    // static target, hence the raw syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: on success the kernel returned a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// This process's pid.
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Ends this process at once, without running destructors or atexit handlers (for children
/// after fork, and for exits that must not flush anything twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}
