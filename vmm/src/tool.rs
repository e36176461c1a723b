//! A host program that works on one file a guest wrote — e2fsck and resize2fs on a user's disk
//! (sandbox::users) — run to its end in a jail of its own: the parser of a file system a
//! hostile guest controlled byte by byte is as exposed as our VMM, so it is confined as QEMU
//! is, by the jail's helper (crate::jail::exec): fresh mount, PID, network, IPC and UTS
//! namespaces (and a user namespace for any user but root), a root holding only the host's
//! programs and libraries (read-only), `/dev/null` and the file, at [`DISK`]; Landlock on them; no
//! capabilities, `no_new_privs`, as root a uid and gid of its own (crate::jail::ids); no core
//! dumps, no file written past the file's size, a cgroup of one CPU and [`MEMORY_MIB`] where
//! cgroup v2 is writable.
//!
//! As root, the jail's user could not open a file of root's: the file is lent to it while the
//! program runs (`fchown`), then given back to this process's user and group with its mode as it
//! was. Its folder stays out of the jail's sight.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::backend::handover;
use crate::backend::process::Jailed;
use crate::jail::exec::{self, Exec, FIRST_PROGRAM_FD, HELPER_ARG};
use crate::jail::layout::{self, Access, Entry};
use crate::jail::{self, HostSide, Identity, Limits};

/// Where the program finds its file in the jail.
pub const DISK: &str = "/disk";
/// e2fsck opens it (to keep descriptors 0 to 2 taken).
const NULL_DEVICE: &str = "/dev/null";
/// The memory of a program's cgroup: e2fsck's bitmaps and tables for a 1 TiB file system fit.
pub const MEMORY_MIB: u64 = 1024;
const CPUS: u8 = 1;

/// A program and the file it works on.
#[derive(Debug, Clone, Copy)]
pub struct Tool<'a> {
    /// The program on the host.
    pub program: &'a Path,
    /// Its arguments, after its name and before the file, which comes last.
    pub args: &'a [&'a str],
    /// Its whole environment.
    pub env: &'a [(&'a str, &'a str)],
    /// The file, read and written in place (never grown: its size bounds what may be written).
    pub disk: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Jail(#[from] jail::Error),
    #[error(transparent)]
    Exec(#[from] exec::Error),
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Tool<'_> {
    /// Runs the program to its end, in its jail when `jailed` is given (otherwise, with
    /// `--no-jail`, as it is); its output.
    pub fn run(&self, jailed: Option<Jailed<'_>>) -> Result<Output, Error> {
        let io_err = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        let Some(jailed) = jailed else {
            return Command::new(self.program)
                .args(self.args)
                .arg(self.disk)
                .env_clear()
                .envs(self.env.iter().copied())
                .stdin(Stdio::null())
                .output()
                .map_err(io_err("running", self.program));
        };
        let disk = File::options()
            .read(true)
            .write(true)
            .open(self.disk)
            .map_err(io_err("opening", self.disk))?;
        let size = disk.metadata().map_err(io_err("reading", self.disk))?.len();
        let limits = Limits {
            file_size: Some(size),
        };
        let host = HostSide::new(jailed.jail, limits, CPUS, MEMORY_MIB)?;
        let _lent = match host.request().identity {
            Identity::Root { uid, gid } => Some(Lent::to(&disk, self.disk, uid, gid)?),
            Identity::User => None,
        };
        let name = self.program.file_name().unwrap_or_default();
        let mut args: Vec<OsString> = vec![name.into()];
        args.extend(self.args.iter().map(OsString::from));
        args.push(DISK.into());
        let mut entries = vec![
            Entry::bind(self.disk, DISK, Access::ReadWrite),
            Entry::bind(NULL_DEVICE, NULL_DEVICE, Access::Device),
        ];
        entries.extend(layout::programs_for(self.program));
        let exec = Exec {
            jail: host.request().clone(),
            entries,
            program: self.program.to_path_buf(),
            args,
            env: self.env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            fds_end: FIRST_PROGRAM_FD,
        };
        let mut command = jailed.helper.command();
        command
            .arg(HELPER_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cgroup = host.cgroup().map(|c| c.procs_fd());
        let child = exec::start_helper(&exec, &[], |moves| {
            handover::spawn(command, moves, FIRST_PROGRAM_FD, cgroup)
                .map_err(io_err("starting the jail's helper for", self.program))
        })?;
        child
            .wait_with_output()
            .map_err(io_err("waiting for", self.program))
    }
}

/// A file lent to a jail's user: given back to this process's user and group, its mode as it
/// was, when dropped.
struct Lent<'a> {
    file: &'a File,
    path: &'a Path,
    mode: u32,
}

impl<'a> Lent<'a> {
    fn to(file: &'a File, path: &'a Path, uid: u32, gid: u32) -> Result<Lent<'a>, Error> {
        let mode = file
            .metadata()
            .map_err(|source| Error::Io {
                what: "reading",
                path: path.to_path_buf(),
                source,
            })?
            .mode();
        std::os::unix::fs::fchown(file.as_fd(), Some(uid), Some(gid)).map_err(|source| {
            Error::Io {
                what: "lending to the jail's user",
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Lent { file, path, mode })
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        // SAFETY: the id getters have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let given_back = std::os::unix::fs::fchown(self.file.as_fd(), Some(uid), Some(gid))
            .and_then(|()| {
                let mode = std::fs::Permissions::from_mode(self.mode & 0o7777);
                self.file.set_permissions(mode)
            });
        if let Err(e) = given_back {
            tracing::warn!(
                "giving {} back from the jail's user: {e}",
                self.path.display()
            );
        }
    }
}
