//! What the VMM keeps of the host's privileges: no descriptor it was not given, and once its VM
//! is built, no root: an unprivileged user and group, no supplementary groups, no capabilities
//! (they go with the change from uid 0), and no way to gain any back.

use std::os::fd::RawFd;

use super::{check, Error, Jail};

/// Closes every descriptor from `first` up: the VMM keeps only those it was given below it.
pub fn close_inherited_fds(first: RawFd) -> Result<(), Error> {
    // SAFETY: close_range takes integers; the descriptors it closes are owned by nothing in
    // this process (it is called first thing, before any is opened).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    check(ret as libc::c_int, || {
        format!("closing the inherited descriptors from {first} up")
    })
}

/// Becomes `jail.uid`/`jail.gid` for good, with no new privileges, still dying with the parent.
pub fn drop_privileges(jail: &Jail) -> Result<(), Error> {
    let (uid, gid) = (jail.uid, jail.gid);
    // SAFETY: setgroups with a zero count reads no memory; the others take integers.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), || {
            "dropping the supplementary groups".into()
        })?;
        check(libc::setresgid(gid, gid, gid), || {
            format!("setting gid {gid}")
        })?;
        check(libc::setresuid(uid, uid, uid), || {
            format!("setting uid {uid}")
        })?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), || {
            "setting no_new_privs".into()
        })?;
        // A change of credentials clears the parent-death signal.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL), || {
            "setting the parent-death signal again".into()
        })?;
    }
    // Root could take it back; a dropped user cannot.
    // SAFETY: setuid takes an integer.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(Error::Step {
            step: format!("dropping root for uid {uid}"),
            source: std::io::Error::other("setuid(0) still succeeded"),
        });
    }
    Ok(())
}
