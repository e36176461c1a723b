//! What the jailed process keeps of its privileges: no descriptor it was not given, and once
//! its VM is built, nothing it could use to leave the jail: as root, it becomes an unprivileged
//! user and group with no supplementary groups and no capabilities (they go with the change
//! from uid 0); as another user (in a user namespace of its own), it keeps its user and gives
//! up every capability it had in that namespace. Either way, no way to gain any back.

use std::os::fd::RawFd;

use super::{check, Error, Identity};

/// Closes every descriptor from `first` up: the process keeps only those it was given below it.
pub fn close_inherited_fds(first: RawFd) -> Result<(), Error> {
    // SAFETY: close_range takes integers; the descriptors it closes are owned by nothing in
    // this process (it is called first thing, before any is opened).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    check(ret as libc::c_int, || {
        format!("closing the inherited descriptors from {first} up")
    })
}

/// Gives up for good what `identity` says, with no new privileges, still dying with the parent.
pub fn drop_privileges(identity: &Identity) -> Result<(), Error> {
    // Nothing executed later can gain a capability: none is left in the bounding set.
    drop_bounding_set()?;
    match *identity {
        Identity::Root { uid, gid } => become_user(uid, gid)?,
        Identity::User => drop_capabilities()?,
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), || {
            "setting no_new_privs".into()
        })?;
        // A change of credentials clears the parent-death signal.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL), || {
            "setting the parent-death signal again".into()
        })?;
    }
    Ok(())
}

/// From root to `uid`/`gid`, with no supplementary groups; root could take it back, a dropped
/// user cannot, which is checked.
fn become_user(uid: u32, gid: u32) -> Result<(), Error> {
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
    }
    // SAFETY: setuid takes an integer.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(Error::Step {
            step: format!("dropping root for uid {uid}"),
            source: std::io::Error::other("setuid(0) still succeeded"),
        });
    }
    Ok(())
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the bounding set, one capability at a time, up to the first the kernel does not
/// know.
fn drop_bounding_set() -> Result<(), Error> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(super::last_error(format!(
                "dropping capability {cap} from the bounding set"
            )));
        }
    }
    Ok(())
}

/// Empties the ambient, effective, permitted and inheritable capability sets, and checks that
/// they are empty.
fn drop_capabilities() -> Result<(), Error> {
    let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL;
    // SAFETY: prctl with integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, clear, 0, 0, 0) };
    check(ret, || "clearing the ambient capabilities".into())?;
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are a version 3 header and its two data words, which outlive
    // the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check(ret as libc::c_int, || "emptying the capability sets".into())?;
    // SAFETY: as above; capget writes the two data words.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check(ret as libc::c_int, || "reading the capability sets".into())?;
    if data
        .iter()
        .any(|d| d.effective != 0 || d.permitted != 0 || d.inheritable != 0)
    {
        return Err(Error::Step {
            step: "emptying the capability sets".into(),
            source: std::io::Error::other("capabilities remain after capset"),
        });
    }
    Ok(())
}
