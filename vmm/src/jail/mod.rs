//! A jail for the VMM process, in the spirit of Firecracker's jailer (docs/security.md), for
//! every user: root's VMM becomes an unprivileged user ([`Jail::Root`]), any other user's keeps
//! that user in a user namespace of its own ([`Jail::User`]).
//!
//! The VMM process, while still single-threaded, after closing every descriptor it was not
//! given:
//! 1. sets its resource limits ([`limits`]: no core dumps, a bounded number of descriptors, no
//!    file written beyond its largest writable disk);
//! 2. unshares the mount, IPC, UTS, network and PID namespaces (inside a new user namespace
//!    for [`Jail::User`]) and forks, so that the VMM is PID 1 of a PID namespace of its own;
//!    the first process only waits for it and ends as it did ([`namespaces`]);
//! 3. mounts a small tmpfs on its jail folder that holds only what the VM needs
//!    ([`layout`]): the kernel, the disks (read-only where the disk is) and `/dev/kvm`; makes
//!    it its root, the host's root gone ([`root`], [`pivot`]);
//! 4. restricts itself with Landlock to those files, where the kernel has it ([`landlock`]);
//! 5. builds the VM (every file and device opened) and then gives up its privileges
//!    ([`privileges`]) before any of its threads starts: as root, to an unprivileged user and
//!    group with no supplementary groups and no capabilities; as another user, every
//!    capability of its user namespace; no way to gain any back either way.
//!
//! The parent makes the jail folder and removes it afterwards, opens the network link (the
//! VMM cannot reach the host's network from its own namespace) and the agent link's socket
//! and connector (devices::virtio::vsock::host), and puts the VMM in a cgroup v2 with CPU and
//! memory limits when `/sys/fs/cgroup` is a writable cgroup2 mount ([`cgroup`]).
//!
//! A program that cannot enter a jail itself (QEMU) is started by the jail's helper, which does
//! the same steps with the program's layout and then executes it ([`exec`]).

pub mod cgroup;
pub mod exec;
mod landlock;
pub mod layout;
mod limits;
mod namespaces;
mod pivot;
mod privileges;
mod root;
#[cfg(test)]
pub(crate) mod tests;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime;
use crate::vm::VmSpec;

use layout::Entry;
pub use limits::Limits;
pub use privileges::{close_inherited_fds, drop_privileges};

/// `nobody` and `nogroup` on Debian: the default user and group of root's jailed VMM.
pub const DEFAULT_UID: u32 = 65534;
pub const DEFAULT_GID: u32 = 65534;

/// Whose jail it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Jail {
    /// nodeos-vm runs as root: the VMM becomes `uid` and `gid` (never 0) once its VM is built.
    Root { uid: u32, gid: u32 },
    /// nodeos-vm runs as another user: the VMM's namespaces belong to a user namespace of its
    /// own that maps only that user's uid and gid, and it gives up every capability it has
    /// there once its VM is built.
    User,
}

impl Jail {
    /// The jail of a VMM this process starts: as root, one that drops to `uid` and `gid`; as
    /// anyone else, [`Jail::User`].
    pub fn for_this_process(uid: u32, gid: u32) -> Jail {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            Jail::Root { uid, gid }
        } else {
            Jail::User
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("jail: {step}")]
    Step {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
}

/// An error of `step`, from errno.
fn last_error(step: impl Into<String>) -> Error {
    Error::Step {
        step: step.into(),
        source: io::Error::last_os_error(),
    }
}

/// Checks a libc return value: negative is an error of `step`.
fn check(ret: libc::c_int, step: impl FnOnce() -> String) -> Result<(), Error> {
    if ret < 0 {
        Err(last_error(step()))
    } else {
        Ok(())
    }
}

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Step {
        step: format!("{} contains a NUL byte", path.display()),
        source: io::ErrorKind::InvalidInput.into(),
    })
}

/// How often, and how long apart, a busy jail folder is tried again (2 s in all).
const BUSY_TRIES: u32 = 100;
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// What the jailed process is told: whose jail, where, and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub jail: Jail,
    /// The jail's folder, made by the parent.
    dir: PathBuf,
    limits: Limits,
}

/// The host's side of one jail: its folder (a mount point, seen empty from the host) and its
/// cgroup, both removed when dropped.
#[derive(Debug)]
pub struct HostSide {
    request: Request,
    cgroup: Option<cgroup::Cgroup>,
}

impl HostSide {
    /// Makes the jail folder of a VM of `spec` (its console written to `console_output`) in
    /// the runtime folder, and its cgroup when cgroup v2 is writable here, with
    /// `allowance_mib` beyond the guest's memory for the VMM (cgroup::VMM_MEMORY_ALLOWANCE_MIB,
    /// cgroup::QEMU_MEMORY_ALLOWANCE_MIB).
    pub fn prepare(
        jail: Jail,
        spec: &VmSpec,
        console_output: std::os::fd::BorrowedFd<'_>,
        allowance_mib: u64,
    ) -> Result<HostSide, Error> {
        let limits = Limits::for_vm(spec, console_output)?;
        let dir = runtime::scratch_dir("jail")?.keep();
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup = cgroup::Cgroup::create(&id, spec.cpus, spec.memory_mib, allowance_mib);
        Ok(HostSide {
            request: Request { jail, dir, limits },
            cgroup,
        })
    }

    /// What to tell the jailed process.
    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn cgroup(&self) -> Option<&cgroup::Cgroup> {
        self.cgroup.as_ref()
    }
}

impl Drop for HostSide {
    fn drop(&mut self) {
        // Not recursive: from the host the folder is empty (the jail's mounts live in the
        // VMM's own mount namespace), and should it not be, nothing in it is ours to delete.
        // The kernel lets go of a dead namespace's mounts a moment after its last process
        // ended: until then the folder is busy.
        let dir = &self.request.dir;
        let mut tries = 0;
        let result = loop {
            match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < BUSY_TRIES => {
                    tries += 1;
                    std::thread::sleep(BUSY_WAIT);
                }
                result => break result,
            }
        };
        if let Err(e) = result {
            tracing::warn!("removing the jail folder {}: {e}", dir.display());
        }
    }
}

/// Steps 1 to 4 above, in the VMM process. Returns in the VMM, PID 1 of its namespaces, with
/// `/` its jail and `spec` rewritten to where the VM's files are there; the first process never
/// returns (it relays the VMM's end). `keep` runs in the VMM while the host's files are still in
/// sight: to open what it reads later (`/proc/self/smaps`).
pub fn enter(
    request: &Request,
    spec: &VmSpec,
    keep: impl FnOnce() -> io::Result<()>,
) -> Result<VmSpec, Error> {
    let (entries, jailed) = layout::for_vm(spec);
    enter_with(request, &entries, keep)?;
    Ok(jailed)
}

/// Steps 1 to 4 above, with `entries` in the jail.
fn enter_with(
    request: &Request,
    entries: &[Entry],
    keep: impl FnOnce() -> io::Result<()>,
) -> Result<(), Error> {
    limits::apply(&request.limits)?;
    namespaces::unshare(&request.jail)?;
    namespaces::fork_pid1()?;
    keep().map_err(|source| Error::Step {
        step: "opening /proc/self/smaps before entering the jail".into(),
        source,
    })?;
    root::build(&request.jail, &request.dir, entries)?;
    landlock::restrict(entries)
}
