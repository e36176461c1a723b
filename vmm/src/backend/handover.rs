//! What a process we start as a VMM (ours, or QEMU through the jail's helper) gets between fork
//! and exec: it dies with the thread that started it, joins its cgroup, and finds the
//! descriptors it is handed at the numbers it expects.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The most descriptors one child is handed.
pub const MAX_MOVES: usize = 32;

/// In the child between fork and exec: sets the parent-death signal, joins the cgroup whose
/// `cgroup.procs` is open as `cgroup_procs`, and moves the descriptors of `moves` (from, to)
/// into place: first out of the way of every target (close-on-exec copies from `first_free`
/// up, which no target reaches), then where they go. Calls only async-signal-safe functions.
pub fn hand_over(
    moves: &[(RawFd, RawFd)],
    first_free: RawFd,
    cgroup_procs: Option<RawFd>,
) -> io::Result<()> {
    let check = |ret: libc::c_int| {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    };
    if moves.len() > MAX_MOVES {
        return Err(io::Error::from_raw_os_error(libc::EMFILE));
    }
    // SAFETY: all of these take integers, or a pointer to a one-byte static buffer.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        if let Some(fd) = cgroup_procs {
            check(libc::write(fd, b"0".as_ptr().cast(), 1) as libc::c_int)?;
        }
        let mut copies = [0; MAX_MOVES];
        for (copy, (from, _)) in copies.iter_mut().zip(moves) {
            *copy = check(libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, first_free))?;
        }
        for (copy, (_, to)) in copies.iter().zip(moves) {
            check(libc::dup2(*copy, *to))?;
        }
    }
    Ok(())
}

/// Starts `command`, handing it `moves` (below `first_free`) and putting it in the cgroup whose
/// `cgroup.procs` is open as `cgroup_procs` ([`hand_over`]).
pub fn spawn(
    mut command: Command,
    moves: &[(RawFd, RawFd)],
    first_free: RawFd,
    cgroup_procs: Option<RawFd>,
) -> io::Result<Child> {
    let moves = moves.to_vec();
    // SAFETY: hand_over only calls async-signal-safe functions (prctl, write, fcntl, dup2) on
    // descriptors that are open in the child, inherited from us. Among them, the
    // parent-death signal: the child must not outlive the thread that started it.
    unsafe { command.pre_exec(move || hand_over(&moves, first_free, cgroup_procs)) };
    command.spawn()
}
