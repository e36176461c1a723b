//! A container's process's privileges, set in its forked child as runc sets them: its
//! capabilities (contract::caps) — the bounding set dropped to the spec's and the permitted set
//! kept across the switch of user ([`bound`], as root), then the effective, permitted and
//! inheritable sets and the ambient capabilities ([`set`], as the container's user) — no new
//! privileges, and its seccomp filter (contract::seccomp).

use std::io;

use contract::caps::Capabilities;

use crate::sys::cvt;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

/// capset(2)'s header.
#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

/// capset(2)'s data: one of the two words of each set.
#[repr(C)]
#[derive(Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// One prctl(2) with integer arguments.
fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here take integers only, no memory.
    cvt(unsafe { libc::prctl(option, arg, 0, 0, 0) }).map(drop)
}

/// Drops every capability but `caps.bounding` from the bounding set, and keeps the permitted
/// set across the switch to the container's user that follows. As root.
pub fn bound(caps: &Capabilities) -> io::Result<()> {
    for cap in 0..64 {
        if caps.bounding & 1 << cap != 0 {
            continue;
        }
        match prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 1)
}

/// Sets the effective, permitted and inheritable sets (effective within permitted, inheritable
/// within the bounding set, as the kernel takes them) and raises the ambient capabilities that
/// are both permitted and inheritable. After the switch of user.
pub fn set(caps: &Capabilities) -> io::Result<()> {
    let permitted = caps.permitted;
    let effective = caps.effective & permitted;
    let inheritable = caps.inheritable & caps.bounding;
    let word = |mask: u64, high: bool| (if high { mask >> 32 } else { mask }) as u32;
    let data = [false, true].map(|high| Data {
        effective: word(effective, high),
        permitted: word(permitted, high),
        inheritable: word(inheritable, high),
    });
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads the header and the two data words, which outlive the call.
    cvt(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } as libc::c_int)?;
    prctl(libc::PR_SET_KEEPCAPS, 0)?;
    // SAFETY: as in `prctl`: integers only.
    cvt(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    let ambient = caps.ambient & permitted & inheritable;
    for cap in (0..64).filter(|cap| ambient & 1 << cap != 0) {
        // SAFETY: as in `prctl`: integers only.
        cvt(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        })?;
    }
    Ok(())
}

/// No program the process executes gains privileges (`PR_SET_NO_NEW_PRIVS`).
pub fn no_new_privileges() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// Installs the seccomp `filter` on the calling thread (the process's only one): after
/// [`no_new_privileges`], or while it is still root (installing one takes either).
pub fn install_filter(filter: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp reads `prog` and the instructions it points to, which outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
