//! A jail for the VMM process, in the spirit of Firecracker's jailer (docs/security.md).
//!
//! When nodeos-vm runs as root, its VMM process (`backend::process`), while still
//! single-threaded, after closing every descriptor it was not given:
//! 1. unshares the mount, IPC, UTS, network and PID namespaces and forks, so that the VMM is
//!    PID 1 of a PID namespace of its own; the first process only waits for it and exits as it
//!    did ([`namespaces`]);
//! 2. mounts a small tmpfs on its jail folder that holds only what the VM needs, bind-mounted:
//!    the kernel, the root image and the disks (read-only where the disk is) and `/dev/kvm`;
//!    pivots into it, detaches the host's root and makes the tmpfs read-only ([`root`]);
//! 3. builds the VM (every file and device opened) and then drops to an unprivileged user and
//!    group, with no supplementary groups, no capabilities and no way to gain privileges
//!    ([`privileges`]), before any of its threads starts.
//!
//! The parent makes the jail folder and removes it afterwards, opens the network link (the
//! VMM cannot reach the host's network from its own namespace) and the agent link's socket
//! and connector (devices::virtio::vsock::host), and puts the VMM in a cgroup
//! v2 with CPU and memory limits when `/sys/fs/cgroup` is a writable cgroup2 mount
//! ([`cgroup`]).

pub mod cgroup;
mod namespaces;
mod privileges;
mod root;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime;
use crate::vm::VmSpec;

pub use privileges::{close_inherited_fds, drop_privileges};

/// `nobody` and `nogroup` on Debian: the default user and group of a jailed VMM.
pub const DEFAULT_UID: u32 = 65534;
pub const DEFAULT_GID: u32 = 65534;

/// Who a jailed VMM runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jail {
    pub uid: u32,
    pub gid: u32,
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

/// The host's side of one jail: its folder (a mount point, seen empty from the host) and its
/// cgroup, both removed when dropped.
#[derive(Debug)]
pub struct HostSide {
    dir: PathBuf,
    cgroup: Option<cgroup::Cgroup>,
}

impl HostSide {
    /// Makes the jail folder of a VM of `spec` in the runtime folder, and its cgroup when
    /// cgroup v2 is writable here.
    pub fn prepare(spec: &VmSpec) -> Result<HostSide, Error> {
        let dir = runtime::scratch_dir("jail")?.keep();
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup = cgroup::Cgroup::create(&id, spec.cpus, spec.memory_mib);
        Ok(HostSide { dir, cgroup })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
        let mut tries = 0;
        let result = loop {
            match std::fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < BUSY_TRIES => {
                    tries += 1;
                    std::thread::sleep(BUSY_WAIT);
                }
                result => break result,
            }
        };
        if let Err(e) = result {
            tracing::warn!("removing the jail folder {}: {e}", self.dir.display());
        }
    }
}

/// Steps 1 and 2 above, in the VMM process. Returns in the VMM, PID 1 of its namespaces, with
/// `/` its jail and `spec` rewritten to where the VM's files are there; the first process never
/// returns (it relays the VMM's exit status). `keep` runs in the VMM while the host's files are
/// still in sight: to open what it reads later (`/proc/self/smaps`).
pub fn enter(
    dir: &Path,
    spec: &VmSpec,
    keep: impl FnOnce() -> io::Result<()>,
) -> Result<VmSpec, Error> {
    namespaces::unshare()?;
    namespaces::fork_pid1()?;
    keep().map_err(|source| Error::Step {
        step: "opening /proc/self/smaps before entering the jail".into(),
        source,
    })?;
    root::build(dir, spec)
}
