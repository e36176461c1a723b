//! A container's view of the guest (contract::frame::Container): what the child of an `Exec`
//! with a container root does, as root, before it drops to the container's user. In a mount
//! namespace of its own, the root folder gets the file systems a process expects (`/proc`,
//! `/sys`, a minimal `/dev`) and becomes `/` through `pivot_root`; the guest's own tree is
//! detached from the view, so an absolute symlink in the container's files resolves inside
//! them.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::{self, cvt};

/// The devices a container's `/dev` has, bind-mounted from the guest's.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// The links of a container's `/dev`.
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];
/// Where a container whose root is the guest's own (`/`) finds it, in its mount namespace.
const GUEST_ROOT_VIEW: &str = "/run/nodeos/container-root";
const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Makes `root` this process's `/`, in a new mount namespace; the working directory is `/`.
/// `root` may be `/`: the guest's own root file system then, without what is mounted on it.
pub fn enter(root: &Path) -> Result<()> {
    // SAFETY: unshare has no memory arguments.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNS) })
        .map_err(|e| Error::sys("unshare the mount namespace", e))?;
    // Nothing done below may reach the guest's own mounts.
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let root = if root == Path::new("/") {
        // The guest's own root: a bind of it elsewhere (its submounts not carried), as the
        // root itself cannot be pivoted into.
        let view = Path::new(GUEST_ROOT_VIEW);
        make_dir(view)?;
        sys::mount(Some("/"), view, None, libc::MS_BIND, None)?;
        view
    } else {
        // pivot_root wants a mount point.
        let text = root.to_str().ok_or_else(|| {
            Error::invalid(
                "the container root",
                format!("{} is not UTF-8", root.display()),
            )
        })?;
        sys::mount(Some(text), root, None, libc::MS_BIND | libc::MS_REC, None)?;
        root
    };
    mount_in(root, "proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mount_in(
        root,
        "sys",
        "sysfs",
        NOSUID_NODEV_NOEXEC | libc::MS_RDONLY,
        None,
    )?;
    populate_dev(root)?;
    std::env::set_current_dir(root)
        .map_err(|e| Error::sys(format!("chdir {}", root.display()), e))?;
    // The runc way: the old root goes on top of the new one and is detached at once.
    sys::pivot_root(Path::new("."), Path::new("."))?;
    sys::umount(Path::new("."), libc::MNT_DETACH)?;
    std::env::set_current_dir("/").map_err(|e| Error::sys("chdir /", e))
}

/// A `tmpfs` on `root/dev` with the usual devices, the guest's terminals and a `/dev/shm`.
fn populate_dev(root: &Path) -> Result<()> {
    let dev = root.join("dev");
    mount_in(
        root,
        "dev",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        fs::File::create(&target)
            .map_err(|e| Error::sys(format!("create {}", target.display()), e))?;
        let source = format!("/dev/{name}");
        sys::mount(Some(&source), &target, None, libc::MS_BIND, None)?;
    }
    for (name, target) in DEV_LINKS {
        let link = dev.join(name);
        symlink(target, &link).map_err(|e| Error::sys(format!("link {}", link.display()), e))?;
    }
    let pts = dev.join("pts");
    make_dir(&pts)?;
    sys::mount(Some("/dev/pts"), &pts, None, libc::MS_BIND, None)?;
    mount_in(
        &dev,
        "shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
}

/// Mounts a file system of type `fstype` on `parent/name`, made first when missing.
fn mount_in(
    parent: &Path,
    name: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let target = parent.join(name);
    make_dir(&target)?;
    sys::mount(Some(fstype), &target, Some(fstype), flags, data)
}

/// A folder at `path` unless one is there; anything else there (a symlink the container's
/// image put in its place, say) is an error, never followed.
fn make_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(
            format!("the container's {}", path.display()),
            "is not a folder",
        )),
        Err(_) => {
            fs::create_dir(path).map_err(|e| Error::sys(format!("create {}", path.display()), e))
        }
    }
}
