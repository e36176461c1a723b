//! A jail for the VMM process, in the spirit of Firecracker's jailer (docs/security.md), for
//! every user: root's VMM becomes an unprivileged user of its own, taken from a range for as
//! long as its jail lives ([`Jail::Root`], [`ids`]), any other user's keeps that user in a user
//! namespace of its own ([`Jail::User`]).
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
pub mod ids;
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

pub use ids::IdRange;
use layout::Entry;
pub use limits::Limits;
pub use privileges::{close_inherited_fds, drop_privileges};

/// Whose jail it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Jail {
    /// nodeos-vm runs as root: each jail takes a uid and gid of its own from `ids` (never 0),
    /// which its process becomes once what it opens as root is open.
    Root { ids: IdRange },
    /// nodeos-vm runs as another user: the jail's namespaces belong to a user namespace of its
    /// own that maps only that user's uid and gid, and its process gives up every capability
    /// it has there once what it opens is open.
    User,
}

impl Jail {
    /// The jail of a process this one starts: as root, one whose user and group come from
    /// `ids`; as anyone else, [`Jail::User`].
    pub fn for_this_process(ids: IdRange) -> Jail {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            Jail::Root { ids }
        } else {
            Jail::User
        }
    }
}

/// Who a jailed process is, as its request says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// Root's jail: the process becomes `uid` and `gid` (never 0), its jail's own.
    Root { uid: u32, gid: u32 },
    /// [`Jail::User`].
    User,
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
    #[error(transparent)]
    Ids(#[from] ids::Error),
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

/// What the jailed process is told: who it is, where its jail is, and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub identity: Identity,
    /// The jail's folder, made by the parent.
    dir: PathBuf,
    limits: Limits,
}

/// The host's side of one jail: its folder (a mount point, seen empty from the host), its
/// cgroup, both removed when dropped, and as root the uid and gid it took, free again then.
#[derive(Debug)]
pub struct HostSide {
    request: Request,
    cgroup: Option<cgroup::Cgroup>,
    _id: Option<ids::TakenId>,
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
        let memory_mib = u64::from(spec.memory_mib) + allowance_mib;
        HostSide::new(jail, limits, spec.cpus, memory_mib)
    }

    /// Makes a jail folder in the runtime folder for a process with `limits`, and its cgroup
    /// of `cpus` and `memory_mib` when cgroup v2 is writable here; as root, takes its user.
    pub fn new(jail: Jail, limits: Limits, cpus: u8, memory_mib: u64) -> Result<HostSide, Error> {
        let (identity, taken) = match jail {
            Jail::Root { ids } => {
                let taken = ids.take()?;
                let id = taken.id();
                (Identity::Root { uid: id, gid: id }, Some(taken))
            }
            Jail::User => (Identity::User, None),
        };
        let dir = runtime::scratch_dir("jail")?.keep();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup = cgroup::Cgroup::create(&name, cpus, memory_mib);
        Ok(HostSide {
            request: Request {
                identity,
                dir,
                limits,
            },
            cgroup,
            _id: taken,
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
    namespaces::unshare(&request.identity)?;
    namespaces::fork_pid1()?;
    keep().map_err(|source| Error::Step {
        step: "opening /proc/self/smaps before entering the jail".into(),
        source,
    })?;
    root::build(&request.identity, &request.dir, entries)?;
    landlock::restrict(entries)
}
