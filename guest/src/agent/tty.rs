//! A command's terminal (an `Exec` with `tty`): a pseudo-terminal pair from the guest's devpts.
//! The command gets the peer as its stdin, stdout, stderr and controlling terminal; the agent
//! keeps the master, reading what the command prints and writing what the host types.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use contract::frame::WinSize;

use crate::sys::cvt;

/// The master side of a command's terminal.
pub struct Terminal {
    master: File,
}

impl Terminal {
    /// A new terminal of `size`, and its peer (the command's side).
    pub fn open(size: WinSize) -> io::Result<(Terminal, OwnedFd)> {
        let master = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open("/dev/ptmx")?;
        let fd = master.as_raw_fd();
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int, which outlives the call.
        cvt(unsafe { libc::ioctl(fd, libc::TIOCSPTLCK, &unlock) })?;
        // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor, or -1.
        let peer = cvt(unsafe {
            libc::ioctl(
                fd,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `peer` is a descriptor the ioctl just opened, owned by nobody else.
        let peer = unsafe { OwnedFd::from_raw_fd(peer) };
        let terminal = Terminal { master };
        terminal.resize(size)?;
        Ok((terminal, peer))
    }

    /// Sets its size; the kernel sends SIGWINCH to its foreground process group.
    pub fn resize(&self, size: WinSize) -> io::Result<()> {
        let winsize = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize, which outlives the call.
        cvt(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) }).map(drop)
    }

    /// The master again: where the agent writes what the host types and reads what the
    /// command prints (EIO once every peer is closed).
    pub fn master(&self) -> io::Result<OwnedFd> {
        Ok(self.master.try_clone()?.into())
    }
}
