//! The jail's root: a tmpfs on the jail folder, in the VMM's own mount namespace, holding only
//! bind mounts of what the VM needs; the VMM pivots into it and the host's root goes.
//!
//! ```text
//! /kernel          the kernel, read-only
//! /disk0, ...      the block devices in the guest's order (the root image, the user's disk,
//!                  volumes), read-only where the disk is
//! /dev/kvm
//! ```
//!
//! No socket: the agent link's listener and connections, and the network link, are
//! descriptors the parent hands over.

use std::fs;
use std::path::{Path, PathBuf};

use super::{c_path, check, Error};
use crate::vm::{Device, VmSpec};

const KVM_DEVICE: &str = "/dev/kvm";
/// The tmpfs holds only mount points.
const TMPFS_OPTIONS: &str = "mode=0755,size=64k,nr_inodes=64";

/// How a file is bind-mounted into the jail.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadOnly,
    ReadWrite,
    Device,
}

/// Builds the jail on `dir` for `spec`, pivots into it, and returns `spec` with the paths the
/// VM's files have in the jail.
pub(super) fn build(dir: &Path, spec: &VmSpec) -> Result<VmSpec, Error> {
    // No mount of ours may propagate to the host's namespace.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount(
        Some(Path::new("tmpfs")),
        dir,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(TMPFS_OPTIONS),
    )?;
    let mut jailed = spec.clone();
    jailed.kernel = bind_file(dir, "kernel", &spec.kernel, Access::ReadOnly)?;
    for (index, device) in jailed.devices.iter_mut().enumerate() {
        match device {
            Device::Block(disk) => {
                let access = if disk.read_only {
                    Access::ReadOnly
                } else {
                    Access::ReadWrite
                };
                disk.path = bind_file(dir, &format!("disk{index}"), &disk.path, access)?;
            }
            // The VMM gets its descriptors from the parent (vsock::host, net::HostEnd).
            Device::AgentLink(_) | Device::Rng | Device::Net(_) => {}
        }
    }
    make_dir(&dir.join("dev"))?;
    bind_file(dir, "dev/kvm", Path::new(KVM_DEVICE), Access::Device)?;
    pivot(dir)?;
    // Nothing more is created in the jail.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )?;
    Ok(jailed)
}

/// Bind-mounts the file `source` on `<dir>/<name>`; returns its path in the jail.
fn bind_file(dir: &Path, name: &str, source: &Path, access: Access) -> Result<PathBuf, Error> {
    let target = dir.join(name);
    fs::File::create(&target).map_err(|source| Error::Step {
        step: format!("creating the mount point {}", target.display()),
        source,
    })?;
    bind(source, &target, access)?;
    Ok(Path::new("/").join(name))
}

fn make_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir(path).map_err(|source| Error::Step {
        step: format!("creating {}", path.display()),
        source,
    })
}

/// A bind mount of `source` on `target`, then remounted with the flags of `access`.
fn bind(source: &Path, target: &Path, access: Access) -> Result<(), Error> {
    mount(Some(source), target, None, libc::MS_BIND, None)?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC;
    match access {
        Access::ReadOnly => flags |= libc::MS_RDONLY | libc::MS_NODEV,
        Access::ReadWrite => flags |= libc::MS_NODEV,
        Access::Device => {}
    }
    mount(None, target, None, flags, None)
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), Error> {
    let source_c = source.map(c_path).transpose()?;
    let target_c = c_path(target)?;
    let fstype_c = fstype.map(|t| std::ffi::CString::new(t).expect("no NUL"));
    let data_c = data.map(|d| std::ffi::CString::new(d).expect("no NUL"));
    let ptr = |c: &Option<std::ffi::CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            ptr(&source_c),
            target_c.as_ptr(),
            ptr(&fstype_c),
            flags,
            ptr(&data_c).cast(),
        )
    };
    check(ret, || match source {
        Some(source) => format!(
            "mounting {} on {} (flags {flags:#x})",
            source.display(),
            target.display()
        ),
        None => format!("changing the mount {} (flags {flags:#x})", target.display()),
    })
}

/// Makes `dir` the root: `pivot_root(".", ".")` stacks the old root on the new one, and the
/// lazy unmount takes it away.
fn pivot(dir: &Path) -> Result<(), Error> {
    std::env::set_current_dir(dir).map_err(|source| Error::Step {
        step: format!("entering {}", dir.display()),
        source,
    })?;
    let dot = c".";
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(ret as libc::c_int, || {
        format!("pivot_root into {}", dir.display())
    })?;
    // SAFETY: as above.
    let ret = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(ret, || "detaching the host's root".into())?;
    std::env::set_current_dir("/").map_err(|source| Error::Step {
        step: "entering / in the jail".into(),
        source,
    })
}
