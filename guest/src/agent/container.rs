//! A container's view of the guest (contract::frame::Container): what the child of an `Exec`
//! with a container root does, as root, before it drops to the container's user. In a mount
//! namespace of its own, the root folder gets the file systems a process expects (`/proc`,
//! `/sys`, a minimal `/dev`), then the container's own (contract::mount: binds of the shim's
//! copies, `tmpfs`es), and becomes `/` through `pivot_root`; the guest's own tree is detached
//! from the view, so an absolute symlink in the container's files resolves inside them.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use contract::mount::{Mount, MountKind};

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

/// Makes `root` this process's `/`, in a new mount namespace, with `mounts` mounted in it; the
/// working directory is `/`. `root` may be `/`: the guest's own root file system then, without
/// what is mounted on it.
pub fn enter(root: &Path, mounts: &[Mount]) -> Result<()> {
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
        // No device node a process makes there opens a device: those it has are in /dev.
        let flags = flags_of(view)? | libc::MS_NODEV;
        sys::mount(
            None,
            view,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | flags,
            None,
        )?;
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
    for mount in mounts {
        mount_own(root, mount)?;
    }
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
    // nodev: the devices below are binds of the guest's, each a mount of its own; a node the
    // process makes here (CAP_MKNOD) opens nothing.
    mount_in(
        root,
        "dev",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
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

/// Mounts one of the container's own file systems at its destination in `root`.
fn mount_own(root: &Path, mount: &Mount) -> Result<()> {
    let mut flags = 0;
    for (set, flag) in [
        (mount.read_only, libc::MS_RDONLY),
        (mount.nosuid, libc::MS_NOSUID),
        (mount.nodev, libc::MS_NODEV),
        (mount.noexec, libc::MS_NOEXEC),
    ] {
        if set {
            flags |= flag;
        }
    }
    match &mount.kind {
        MountKind::Bind { source } => {
            let source = Path::new(OsStr::from_bytes(source));
            let text = utf8(source)?;
            let meta = fs::metadata(source)
                .map_err(|e| Error::sys(format!("stat {}", source.display()), e))?;
            // The bind's flags are set on a bind of the source onto itself (in this namespace
            // only), which the bind to the destination copies; the volume's own nosuid, nodev
            // and noatime are kept, as a remount would clear them.
            sys::mount(Some(text), source, None, libc::MS_BIND, None)?;
            let kept = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
            sys::mount(
                None,
                source,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | kept | flags,
                None,
            )?;
            let target = place(root, &mount.destination, meta.is_dir())?;
            sys::mount(Some(text), &fd_path(&target), None, libc::MS_BIND, None)
        }
        MountKind::Tmpfs { options } => {
            let options = std::str::from_utf8(options)
                .map_err(|_| Error::invalid("the tmpfs options", "are not UTF-8"))?;
            let target = place(root, &mount.destination, true)?;
            // nodev always: the container's devices are those in its /dev.
            sys::mount(
                Some("tmpfs"),
                &fd_path(&target),
                Some("tmpfs"),
                flags | libc::MS_NODEV,
                (!options.is_empty()).then_some(options),
            )
        }
        MountKind::Mask => {
            let Some(target) = existing(root, &mount.destination)? else {
                return Ok(());
            };
            let target = fd_path(&target);
            if target.is_dir() {
                sys::mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    libc::MS_RDONLY | NOSUID_NODEV_NOEXEC,
                    Some("size=0"),
                )
            } else {
                sys::mount(Some("/dev/null"), &target, None, libc::MS_BIND, None)
            }
        }
        MountKind::ReadOnly => {
            let Some(target) = existing(root, &mount.destination)? else {
                return Ok(());
            };
            let path = fd_path(&target);
            let text = utf8(&path)?.to_string();
            sys::mount(Some(&text), &path, None, libc::MS_BIND | libc::MS_REC, None)?;
            // The bind, now on top: remounted read-only with the flags it has.
            let bound = existing(root, &mount.destination)?.ok_or_else(|| {
                Error::invalid(String::from_utf8_lossy(&mount.destination), "went away")
            })?;
            let bound = fd_path(&bound);
            let flags = flags_of(&bound)? | libc::MS_RDONLY;
            sys::mount(
                None,
                &bound,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | flags,
                None,
            )
        }
    }
}

/// `destination` in `root`, as an `O_PATH` descriptor, when it exists there (symlinks on the
/// way resolving inside `root`); nothing is made.
fn existing(root: &Path, destination: &[u8]) -> Result<Option<OwnedFd>> {
    let root_dir =
        fs::File::open(root).map_err(|e| Error::sys(format!("open {}", root.display()), e))?;
    let path: PathBuf = destination
        .split(|&b| b == b'/')
        .filter(|name| !name.is_empty())
        .map(OsStr::from_bytes)
        .collect();
    let flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    match sys::openat2(root_dir.as_fd(), &path, flags, libc::RESOLVE_IN_ROOT) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(Error::sys(
            format!(
                "open the container's {}",
                String::from_utf8_lossy(destination)
            ),
            e,
        )),
    }
}

/// The per-mount flags of the mount at `path` (as a remount must give them again, or clear
/// them).
fn flags_of(path: &Path) -> Result<libc::c_ulong> {
    let text = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(path.display().to_string(), "contains a NUL byte"))?;
    // SAFETY: statvfs is plain integers, for which all zeroes is a value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: text is NUL-terminated and `stat` is writable; both outlive the call.
    cvt(unsafe { libc::statvfs(text.as_ptr(), &mut stat) })
        .map_err(|e| Error::sys(format!("statvfs {}", path.display()), e))?;
    let mut flags = 0;
    for (st, ms) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if stat.f_flag & st != 0 {
            flags |= ms;
        }
    }
    Ok(flags)
}

/// The path through which a descriptor's file is reached (and mounted on).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::invalid(path.display().to_string(), "is not UTF-8"))
}

/// `destination` in `root`, as an `O_PATH` descriptor: symlinks on the way resolve inside
/// `root` (openat2's `RESOLVE_IN_ROOT`, as runc resolves them), and what is missing is made —
/// folders, and the last an empty file unless `dir`.
fn place(root: &Path, destination: &[u8], dir: bool) -> Result<OwnedFd> {
    let shown = String::from_utf8_lossy(destination);
    let open_err = |e| Error::sys(format!("open the container's {shown}"), e);
    let root_dir =
        fs::File::open(root).map_err(|e| Error::sys(format!("open {}", root.display()), e))?;
    let flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    let names: Vec<&[u8]> = destination
        .split(|&b| b == b'/')
        .filter(|name| !name.is_empty())
        .collect();
    let mut at = OwnedFd::from(root_dir.try_clone().map_err(open_err)?);
    let mut path = PathBuf::new();
    for (i, name) in names.iter().enumerate() {
        path.push(OsStr::from_bytes(name));
        let open = || sys::openat2(root_dir.as_fd(), &path, flags, libc::RESOLVE_IN_ROOT);
        at = match open() {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let last = i + 1 == names.len();
                make(&at, name, dir || !last)
                    .map_err(|e| Error::sys(format!("make the container's {shown}"), e))?;
                open().map_err(open_err)?
            }
            Err(e) => return Err(open_err(e)),
        };
    }
    Ok(at)
}

/// Makes `name` in the folder `at`: a folder, or an empty file.
fn make(at: &OwnedFd, name: &[u8], dir: bool) -> std::io::Result<()> {
    let name = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    if dir {
        // SAFETY: name is NUL-terminated and outlives the call; `at` is an open folder.
        return cvt(unsafe { libc::mkdirat(at.as_raw_fd(), name.as_ptr(), 0o755) }).map(drop);
    }
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as above; the descriptor openat returns is closed at once.
    let fd = cvt(unsafe { libc::openat(at.as_raw_fd(), name.as_ptr(), flags, 0o644) })?;
    // SAFETY: fd was just opened and is owned here alone.
    unsafe { libc::close(fd) };
    Ok(())
}
