//! The jail's root: a tmpfs on the jail folder, in the jailed process's own mount namespace,
//! holding only the entries of its layout (crate::jail::layout); the process makes it its
//! root ([`pivot`]) and the host's root goes.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use super::layout::{Access, Entry};
use super::{c_path, check, Error, Identity};

/// The tmpfs holds only mount points, folders for them and links.
const TMPFS_OPTIONS: &str = "mode=0755,size=64k,nr_inodes=64";

/// Builds the jail on `dir` with `entries`, and makes it the root.
pub(super) fn build(identity: &Identity, dir: &Path, entries: &[Entry]) -> Result<(), Error> {
    // No mount of ours may propagate to the host's namespace.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    // As root, device nodes are made on the tmpfs itself: it cannot be `nodev`.
    let mut flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    if !matches!(identity, Identity::Root { .. }) {
        flags |= libc::MS_NODEV;
    }
    mount(
        Some(Path::new("tmpfs")),
        dir,
        Some("tmpfs"),
        flags,
        Some(TMPFS_OPTIONS),
    )?;
    for entry in entries {
        match entry {
            Entry::Bind {
                source,
                target,
                access,
            } => {
                let at = inside(dir, target)?;
                match (access, identity) {
                    (Access::Device, Identity::Root { uid, gid }) => {
                        make_node(source, &at, *uid, *gid)?
                    }
                    _ => {
                        make_mount_point(source, &at)?;
                        bind(source, &at, *access)?;
                    }
                }
            }
            Entry::Link { target, to } => {
                let at = inside(dir, target)?;
                symlink(to, &at).map_err(|source| Error::Step {
                    step: format!("linking {} to {}", at.display(), to.display()),
                    source,
                })?;
            }
        }
    }
    super::pivot::into(dir)?;
    // Nothing more is created in the jail.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
        None,
    )
}

/// Where `target` (absolute in the jail) is on `dir`, its folders made.
fn inside(dir: &Path, target: &Path) -> Result<PathBuf, Error> {
    let relative = target.strip_prefix("/").map_err(|_| Error::Step {
        step: format!("{} is not an absolute path in the jail", target.display()),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let at = dir.join(relative);
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent).map_err(|source| Error::Step {
            step: format!("creating {}", parent.display()),
            source,
        })?;
    }
    Ok(at)
}

/// An empty file or folder at `at`, as `source` is one or the other.
fn make_mount_point(source: &Path, at: &Path) -> Result<(), Error> {
    let made = if source.is_dir() {
        fs::create_dir(at)
    } else {
        fs::File::create(at).map(drop)
    };
    made.map_err(|source| Error::Step {
        step: format!("creating the mount point {}", at.display()),
        source,
    })
}

/// A node at `at` for the device `source`, read and written by `uid`/`gid` only: the jailed
/// user opens it once it is no longer root, whatever the host's node allows.
fn make_node(source: &Path, at: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    let step = |what: &str, path: &Path| {
        let step = format!("{what} {}", path.display());
        move |source| Error::Step { step, source }
    };
    let rdev = fs::metadata(source)
        .map_err(step("reading the device", source))?
        .rdev();
    let c = c_path(at)?;
    // SAFETY: c is a NUL-terminated path that outlives the call.
    let ret = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, rdev) };
    check(ret, || {
        format!("making the device node {} ({rdev:#x})", at.display())
    })?;
    std::os::unix::fs::chown(at, Some(uid), Some(gid)).map_err(step("giving the jail's user", at))
}

/// A bind mount of `source` on `target`, then remounted with the flags of `access`.
fn bind(source: &Path, target: &Path, access: Access) -> Result<(), Error> {
    mount(Some(source), target, None, libc::MS_BIND, None)?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID;
    flags |= match access {
        Access::ReadOnly => libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOEXEC,
        Access::ReadWrite => libc::MS_NODEV | libc::MS_NOEXEC,
        Access::Device => libc::MS_NOEXEC,
        Access::Programs => libc::MS_RDONLY | libc::MS_NODEV,
    };
    mount(None, target, None, flags, None)
}

pub(super) fn mount(
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
