//! Starting a program in a jail: `nodeos-vmm exec` (the jail's helper) enters the jail as our
//! VMM does — limits, namespaces, its root, Landlock, privileges given up — and then executes
//! the program, which can no longer gain any privilege (`no_new_privs`) and finds only its
//! jail. QEMU runs this way (crate::backend::qemu): its own `-runas` would change users after
//! its seccomp filter, which forbids it; and so do the host's tools that read what a guest
//! wrote (crate::tool: e2fsck, resize2fs).
//!
//! The helper's descriptors: 0, 1 and 2 are the program's; 3 ([`REQUEST_FD`]) the [`Exec`]
//! request, JSON, read to its end; 4 ([`STATUS_FD`]) its status, closed on exec: a line saying
//! what failed, or nothing at all once the program runs; from 5 ([`FIRST_PROGRAM_FD`]) up to
//! [`Exec::fds_end`], the program's own. Every other descriptor is closed first thing.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use super::layout::Entry;
use super::{close_inherited_fds, drop_privileges, enter_with, Request};

/// The argument that makes `nodeos-vmm` the jail's helper.
pub const HELPER_ARG: &str = "exec";
pub const REQUEST_FD: RawFd = 3;
pub const STATUS_FD: RawFd = 4;
/// The program's first descriptor (beside 0, 1 and 2).
pub const FIRST_PROGRAM_FD: RawFd = 5;

/// What the helper is asked to run, and where.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exec {
    pub jail: Request,
    /// What the jail holds.
    pub entries: Vec<Entry>,
    /// The program, by its path in the jail, and its arguments (the first is its name).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Its whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// The program's descriptors end here: from [`FIRST_PROGRAM_FD`] up to this one.
    pub fds_end: RawFd,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a pipe for the jail's helper")]
    Pipe(#[source] io::Error),
    #[error("the jail's helper did not start {program}: {said}")]
    Failed { program: PathBuf, said: String },
}

/// In the parent: starts the helper with `spawn`, which must hand it the descriptors of the
/// moves (from, to) it is given (the program's, `moves`, and the helper's request and status
/// pipes), sends it `exec` and waits until the program runs, or the helper says why it does
/// not (then it is killed). The helper, whose program runs.
pub fn start_helper<E: From<Error>>(
    exec: &Exec,
    moves: &[(RawFd, RawFd)],
    spawn: impl FnOnce(&[(RawFd, RawFd)]) -> Result<Child, E>,
) -> Result<Child, E> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Pipe(e.into()));
    let (helper_request, request) = pipe()?;
    let (status, helper_status) = pipe()?;
    let mut moves = moves.to_vec();
    moves.push((helper_request.as_raw_fd(), REQUEST_FD));
    moves.push((helper_status.as_raw_fd(), STATUS_FD));
    let mut child = spawn(&moves)?;
    // The helper's ends must be the helper's alone: its status ends when it executes.
    drop((helper_request, helper_status));
    if let Err(e) = send(request, status, exec) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.into());
    }
    Ok(child)
}

/// Sends `exec` to the helper and waits until the program runs, or the helper says why not.
fn send(request: OwnedFd, status: OwnedFd, exec: &Exec) -> Result<(), Error> {
    // A helper that died before reading it fails the write; its status says more.
    let _ = serde_json::to_writer(std::io::BufWriter::new(File::from(request)), exec);
    let mut said = String::new();
    let _ = File::from(status).read_to_string(&mut said);
    if said.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed {
            program: exec.program.clone(),
            said: said.trim().to_string(),
        })
    }
}

/// `nodeos-vmm exec`: the helper. Returns only when it failed, with the exit status.
pub fn main() -> u8 {
    // SAFETY: the parent handed this descriptor over, and nothing else here owns it.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let failed = run().unwrap_err();
    let _ = writeln!(status, "{failed}");
    contract::status::HOST_FAILURE
}

/// Enters the jail and executes the program; returns only what failed.
fn run() -> Result<std::convert::Infallible, String> {
    // SAFETY: as for the status: handed over, owned by nothing else.
    let request = unsafe { File::from_raw_fd(REQUEST_FD) };
    // Buffered: serde_json reads a byte at a time.
    let exec: Exec = serde_json::from_reader(std::io::BufReader::new(request))
        .map_err(|e| format!("its request: {e}"))?;
    // SAFETY: fcntl takes integers; STATUS_FD is open (above).
    if unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(format!("its status: {}", io::Error::last_os_error()));
    }
    close_inherited_fds(exec.fds_end).map_err(|e| crate::error_chain::one_line(&e))?;
    enter_with(&exec.jail, &exec.entries, || Ok(()))
        .map_err(|e| crate::error_chain::one_line(&e))?;
    drop_privileges(&exec.jail.identity).map_err(|e| crate::error_chain::one_line(&e))?;
    let mut args = exec.args.iter();
    let mut command = Command::new(&exec.program);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    let e = command.args(args).env_clear().envs(exec.env.clone()).exec();
    Err(format!("executing {}: {e}", exec.program.display()))
}
