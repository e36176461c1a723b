//! The file system tree: the kernel mounted the read-only image as `/`; init mounts a tmpfs
//! on its `/run` first ([`mount_early`]: the agent's sockets live there from the template
//! point on), and once it knows the VM's upper layer turns the image into an OverlayFS root
//! (image below, tmpfs or ext4 above) and pivots into it, taking that `/run` along: every
//! process started before (the agent, its multiplexer) moves with the pivot.
//!
//! After [`build_root`]:
//! - `/` is the overlay; writes land in the upper layer.
//! - `/run/nodeos/lower` is the image, read-only (writes fail with EROFS).
//! - `/run/nodeos/upper` is the upper layer's file system (`upper/` and `work/` inside).
//! - `/proc`, `/sys`, `/dev` (+ `/dev/pts`, `/dev/shm`), `/run`, `/tmp` are mounted.

use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use contract::params::{Upper, Volume};

use super::user;
use crate::error::{Context, Result};
use crate::sys::{self, mount, umount};

/// The image, seen from the new root.
pub const LOWER_DIR: &str = "/run/nodeos/lower";
/// The upper layer's file system, seen from the new root.
pub const UPPER_MOUNT: &str = "/run/nodeos/upper";

/// Staging area on the image's /tmp, before the pivot.
const STAGE: &str = "/tmp";
const STAGE_UPPER: &str = "/tmp/upper";
const STAGE_ROOT: &str = "/tmp/root";
/// Where the early tmpfs is mounted, on the image and then in the new root.
const RUN: &str = "/run";
/// The gid devpts gives new ptys when /etc/group has no `tty` group.
const DEFAULT_TTY_GID: u32 = 5;

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// /proc, /sys and /dev on the image, needed before anything else (the command line, the
/// console; devtmpfs may already be there: CONFIG_DEVTMPFS_MOUNT), and a tmpfs on /run with
/// `/run/nodeos`, which the root built later keeps.
pub fn mount_early() -> Result<()> {
    mount_unless_mounted("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mount_unless_mounted("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    mount_unless_mounted(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_unless_mounted(
        "tmpfs",
        RUN,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    mkdir("/run/nodeos", 0o755)
}

/// Builds the overlay root and pivots into it (see the module docs for the result).
pub fn build_root(upper: &Upper) -> Result<()> {
    mount(
        Some("tmpfs"),
        Path::new(STAGE),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    mkdir(STAGE_UPPER, 0o755)?;
    match upper {
        Upper::Tmpfs => mount(
            Some("tmpfs"),
            Path::new(STAGE_UPPER),
            Some("tmpfs"),
            0,
            Some("mode=0755"),
        )?,
        Upper::Disk(device) => {
            // The host makes these disks sparse, so never-written inode tables already read as
            // zeros: no background thread zeroing them (ext4lazyinit) competing with the boot.
            mount(
                Some(device.as_str()),
                Path::new(STAGE_UPPER),
                Some("ext4"),
                libc::MS_NOATIME,
                Some("noinit_itable"),
            )?
        }
    }
    // Created on first use of a persistent layer; kept as they are afterwards.
    let upper_dir = format!("{STAGE_UPPER}/upper");
    let work_dir = format!("{STAGE_UPPER}/work");
    mkdir(&upper_dir, 0o755)?;
    mkdir(&work_dir, 0o755)?;

    mkdir(STAGE_ROOT, 0o755)?;
    let options = format!("lowerdir=/,upperdir={upper_dir},workdir={work_dir}");
    mount(
        Some("overlay"),
        Path::new(STAGE_ROOT),
        Some("overlay"),
        0,
        Some(&options),
    )?;

    // The early /run, with the agent's sockets, is the new root's.
    move_mount(RUN, &format!("{STAGE_ROOT}{RUN}"))?;
    let put_old = format!("{STAGE_ROOT}{LOWER_DIR}");
    let new_upper = format!("{STAGE_ROOT}{UPPER_MOUNT}");
    mkdir(&put_old, 0o755)?;
    mkdir(&new_upper, 0o755)?;
    move_mount(STAGE_UPPER, &new_upper)?;

    sys::pivot_root(Path::new(STAGE_ROOT), Path::new(&put_old))?;
    std::env::set_current_dir("/").context(|| "chdir /".to_string())?;

    for dir in ["/proc", "/sys", "/dev"] {
        move_mount(&format!("{LOWER_DIR}{dir}"), dir)?;
    }
    // The staging tmpfs is empty now (its mounts moved away); the image stays read-only.
    umount(&Path::new(LOWER_DIR).join("tmp"), libc::MNT_DETACH)?;
    mount(
        None,
        Path::new(LOWER_DIR),
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )?;
    mount_rest()
}

/// What a Linux userland expects besides the root: ptys, shared memory, /tmp, /dev/fd.
fn mount_rest() -> Result<()> {
    mkdir("/dev/pts", 0o755)?;
    let tty_gid = fs::read_to_string(user::GROUP_PATH)
        .ok()
        .and_then(|group| user::find_group_id(&group, "tty"))
        .unwrap_or(DEFAULT_TTY_GID);
    mount(
        Some("devpts"),
        Path::new("/dev/pts"),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(&format!("ptmxmode=0666,mode=0620,gid={tty_gid}")),
    )?;
    mkdir("/dev/shm", 0o1777)?;
    mount(
        Some("tmpfs"),
        Path::new("/dev/shm"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount(
        Some("tmpfs"),
        Path::new("/tmp"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "fd/0"),
        ("/dev/stdout", "fd/1"),
        ("/dev/stderr", "fd/2"),
    ] {
        symlink_if_missing(target, link)?;
    }
    Ok(())
}

/// Mounts the host's ext4 volumes (`nodeos.vol`), in the new root, creating missing mount
/// points. Their files already belong to the REPL's user: the host made them so.
pub fn mount_volumes(volumes: &[Volume]) -> Result<()> {
    for volume in volumes {
        let mount_point = Path::new(&volume.mount_point);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(mount_point)
            .context(|| format!("mkdir {}", volume.mount_point))?;
        let mut flags = libc::MS_NOATIME | libc::MS_NOSUID | libc::MS_NODEV;
        if volume.read_only {
            flags |= libc::MS_RDONLY;
        }
        // The host leaves the inode tables of a volume's free room unwritten (sparse); no
        // background thread zeroing them, filling the host's file.
        mount(
            Some(volume.device.as_str()),
            mount_point,
            Some("ext4"),
            flags,
            Some("noinit_itable"),
        )?;
    }
    Ok(())
}

fn mount_unless_mounted(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    if is_mount_point(target)? {
        return Ok(());
    }
    match mount(Some(source), Path::new(target), Some(fstype), flags, data) {
        Err(e) if e.errno() == Some(libc::EBUSY) => Ok(()),
        other => other,
    }
}

/// A directory is a mount point if it is on another device than its parent.
fn is_mount_point(path: &str) -> Result<bool> {
    let path = Path::new(path);
    let parent = path.parent().unwrap_or(Path::new("/"));
    Ok(sys::device_of(path)? != sys::device_of(parent)?)
}

fn move_mount(from: &str, to: &str) -> Result<()> {
    mount(Some(from), Path::new(to), None, libc::MS_MOVE, None)
}

/// A folder of `user`'s own (mode 0700) at `path`, on a file system mounted already.
pub fn user_dir(path: &str, user: &super::user::User) -> Result<()> {
    mkdir(path, 0o700)?;
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .context(|| format!("chown {path} to {}", user.name))
}

/// mkdir -p with `mode` on the last component (kept if it already exists).
fn mkdir(path: &str, mode: u32) -> Result<()> {
    let path = PathBuf::from(path);
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(&path)
        .context(|| format!("mkdir {}", path.display()))?;
    // The umask may have taken bits away (sticky /dev/shm needs 1777 exactly).
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {}", path.display()))
}

fn symlink_if_missing(target: &str, link: &str) -> Result<()> {
    match symlink(target, link) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.context(|| format!("symlink {link} -> {target}")),
    }
}
