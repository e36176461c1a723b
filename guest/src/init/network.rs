//! Host name and the loopback interface: what a Node program expects of any machine.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Context, Error, Result};
use crate::sys::cvt;

pub const HOSTNAME: &str = "nodeos";
const LOOPBACK: &str = "lo";

pub fn setup() -> Result<()> {
    set_hostname(HOSTNAME)?;
    bring_up(LOOPBACK)
}

fn set_hostname(name: &str) -> Result<()> {
    // SAFETY: name points to name.len() readable bytes (no NUL terminator needed).
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
        .context(|| format!("sethostname {name}"))?;
    Ok(())
}

/// Sets IFF_UP on an interface; for `lo` the kernel then configures 127.0.0.1/8 and ::1 itself.
fn bring_up(interface: &str) -> Result<()> {
    let what = || format!("bring up network interface {interface}");
    // SAFETY: socket has no memory arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
        .context(what)?;
    // SAFETY: socket returned a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if interface.len() >= req.ifr_name.len() {
        return Err(Error::invalid(what(), "interface name too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags inside req, which is a valid ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) }).context(what)?;
    // SAFETY: the ioctl above filled ifru_flags, the union member read and written here.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags from req, a valid ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }).context(what)?;
    Ok(())
}
