//! Making the jail folder the root of the jailed process's mount namespace.
//!
//! `pivot_root(".", ".")` stacks the old root on the new one, and a lazy unmount takes it away.
//! Where the host's root cannot be pivoted — an initramfs (rootfs), or a process already in a
//! `chroot` — `pivot_root` fails with `EINVAL`; then, as switch_root and other jailers do, the
//! jail's mount is moved over `/` and the process chroots into it. The host's root is still
//! mounted beneath it there, out of reach of a process that cannot `chroot` again: the jailed
//! process gives up the privilege to (crate::jail::privileges) before it runs anything of the
//! guest's.

use std::path::Path;

use super::root::mount;
use super::{check, Error};

/// Makes `dir` (a mount point) the root, and the current folder.
pub(super) fn into(dir: &Path) -> Result<(), Error> {
    std::env::set_current_dir(dir).map_err(|source| Error::Step {
        step: format!("entering {}", dir.display()),
        source,
    })?;
    let dot = c".";
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if ret == 0 {
        // SAFETY: as above.
        let ret = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
        check(ret, || "detaching the host's root".into())?;
    } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        tracing::debug!(
            "pivot_root into {}: EINVAL; moving it over /",
            dir.display()
        );
        move_over_root(dir)?;
    } else {
        check(ret as libc::c_int, || {
            format!("pivot_root into {}", dir.display())
        })?;
    }
    std::env::set_current_dir("/").map_err(|source| Error::Step {
        step: "entering / in the jail".into(),
        source,
    })
}

/// The fallback: the jail's mount (the current folder) moved over `/`, and chrooted into.
fn move_over_root(dir: &Path) -> Result<(), Error> {
    mount(
        Some(Path::new(".")),
        Path::new("/"),
        None,
        libc::MS_MOVE,
        None,
    )?;
    // SAFETY: a NUL-terminated string that outlives the call.
    check(unsafe { libc::chroot(c".".as_ptr()) }, || {
        format!("chroot into {} moved over /", dir.display())
    })
}
