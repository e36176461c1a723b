//! Unix socket helpers for the spawn service: passing descriptors (SCM_RIGHTS) and asking who
//! is on the other end (SO_PEERCRED).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::{cvt, cvt_size, retry};

/// Sends all of `data`, with `fds` attached to its first bytes.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut sent = 0;
    if !fds.is_empty() {
        let fd_bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is valid before the fields are set.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `space` bytes, enough for one cmsg carrying fd_bytes
        // (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for the fds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
        sent = retry(|| {
            // SAFETY: msg and everything it points to (iov, data, control) are valid for the call.
            cvt_size(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
        })?;
    }
    while sent < data.len() {
        let rest = &data[sent..];
        let n = retry(|| {
            // SAFETY: rest is a valid readable slice.
            cvt_size(unsafe {
                libc::send(
                    sock.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            })
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, collecting up to `max_fds` descriptors that come with them.
/// Descriptors arrive close-on-exec. More descriptors than `max_fds` is an error (they are
/// closed), so a peer cannot make us hold an unbounded number.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    let mut got = 0;
    while got < buf.len() {
        let fd_bytes = max_fds * std::mem::size_of::<RawFd>();
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        // u64 elements keep the control buffer aligned for cmsghdr.
        let mut control = vec![0u64; space.div_ceil(8)];
        let rest = &mut buf[got..];
        let mut iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is valid before the fields are set.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let n = retry(|| {
            // SAFETY: msg points to valid buffers of the stated sizes for recvmsg to fill.
            cvt_size(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })
        })?;
        // SAFETY: recvmsg filled in msg; the CMSG_* macros walk only within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data_len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let count = data_len / std::mem::size_of::<RawFd>();
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..count {
                        // Each is a new descriptor the kernel installed for us.
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > max_fds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {max_fds} descriptors sent"),
            ));
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(fds)
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on end of file before the first byte.
pub fn read_exact_or_eof(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = crate::sys::read(sock, &mut buf[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(false)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    Ok(true)
}

/// The process at the other end of a connected Unix socket.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub pid: libc::pid_t,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for getsockopt to write a ucred into.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_travel_with_the_data() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = crate::sys::pipe().unwrap();
        send_with_fds(a.as_fd(), b"hello world", &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 11];
        let fds = recv_with_fds(b.as_fd(), &mut buf, 4).unwrap();
        assert_eq!(&buf, b"hello world");
        assert_eq!(fds.len(), 2);
        // The received write end feeds the original read end.
        crate::sys::write_all(fds[1].as_fd(), b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(crate::sys::read(r.as_fd(), &mut one).unwrap(), 1);
        assert_eq!(peer_cred(b.as_fd()).unwrap().pid, crate::sys::getpid());
    }

    #[test]
    fn too_many_descriptors_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = crate::sys::pipe().unwrap();
        send_with_fds(
            a.as_fd(),
            b"x",
            &[r.as_raw_fd(), w.as_raw_fd(), r.as_raw_fd()],
        )
        .unwrap();
        let mut buf = [0u8; 1];
        assert!(recv_with_fds(b.as_fd(), &mut buf, 2).is_err());
    }
}
