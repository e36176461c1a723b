//! The VMM's cgroup v2, `/sys/fs/cgroup/nodeos-vm/<jail id>`: `cpu.max` from the VM's vCPUs
//! and `memory.max` from its memory plus what the VMM itself needs ([`VMM_MEMORY_ALLOWANCE_MIB`]
//! for ours, [`QEMU_MEMORY_ALLOWANCE_MIB`] for QEMU). Made by the parent
//! when `/sys/fs/cgroup` is a writable cgroup2 mount (otherwise the VMM runs without one), the
//! VMM process joins it between fork and exec, and it is removed once the VMM has ended.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "nodeos-vm";
/// `statfs` type of a cgroup2 mount.
const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;
/// Memory the VMM may use beyond the guest's RAM: its own code, heap and thread stacks, device
/// buffers, and the page cache of its disk images (which is reclaimed first at the limit).
pub const VMM_MEMORY_ALLOWANCE_MIB: u64 = 128;
/// The same for QEMU: its translation cache with TCG (at most 256 MiB: `tb-size`), its own
/// larger heap and libraries.
pub const QEMU_MEMORY_ALLOWANCE_MIB: u64 = 512;
/// `cpu.max`'s period, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// A VM's cgroup, removed when dropped.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    procs: fs::File,
}

impl Cgroup {
    /// The cgroup `id` for a jailed process of `cpus` CPUs and `memory_mib` of memory (a VM's
    /// RAM and the VMM's allowance); `None` (said at info level) when cgroup v2 is not
    /// writable here.
    pub fn create(id: &str, cpus: u8, memory_mib: u64) -> Option<Cgroup> {
        if !is_cgroup2(Path::new(ROOT)) {
            tracing::info!("{ROOT} is not a cgroup2 mount: the VMM runs without a cgroup");
            return None;
        }
        match Cgroup::try_create(id, cpus, memory_mib) {
            Ok(cgroup) => Some(cgroup),
            Err(e) => {
                tracing::info!("the VMM runs without a cgroup: {e}");
                None
            }
        }
    }

    fn try_create(id: &str, cpus: u8, memory_mib: u64) -> io::Result<Cgroup> {
        let root = Path::new(ROOT);
        let group = root.join(GROUP);
        match fs::create_dir(&group) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(at(&group, e)),
            _ => {}
        }
        // The controllers must be enabled on the way down for the leaf to have their files.
        for parent in [root, &group] {
            write(&parent.join("cgroup.subtree_control"), "+cpu +memory")?;
        }
        let path = group.join(id);
        fs::create_dir(&path).map_err(|e| at(&path, e))?;
        let limits = [
            ("cpu.max", cpu_max(cpus)),
            ("memory.max", (memory_mib << 20).to_string()),
        ];
        let opened = limits
            .iter()
            .try_for_each(|(file, value)| write(&path.join(file), value))
            .and_then(|()| {
                let procs = path.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&procs)
                    .map_err(|e| at(&procs, e))
            });
        match opened {
            Ok(procs) => Ok(Cgroup { path, procs }),
            Err(e) => {
                let _ = fs::remove_dir(&path);
                Err(e)
            }
        }
    }

    /// `cgroup.procs`, open for writing: a process that writes `0` to it joins the cgroup.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.path) {
            tracing::warn!("removing the VMM's cgroup {}: {e}", self.path.display());
        }
    }
}

fn cpu_max(cpus: u8) -> String {
    format!("{} {CPU_PERIOD_US}", u64::from(cpus) * CPU_PERIOD_US)
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = super::c_path(path) else {
        return false;
    };
    // SAFETY: statfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st a valid out-pointer; both outlive the call.
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
    // SAFETY: access takes a NUL-terminated path.
    ok && st.f_type == CGROUP2_SUPER_MAGIC && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| at(path, e))
}

/// `e`, saying which file it was about.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(cpu_max(1), "100000 100000");
        assert_eq!(cpu_max(4), "400000 100000");
    }
}
