//! The serial console (/dev/console, ttyS0) as the REPL's terminal.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use contract::params::{ConsoleMode, GuestParams};

use crate::error::{Context, Result};
use crate::sys::{cstring, cvt};

pub const CONSOLE: &str = "/dev/console";

/// Makes sure fds 0, 1 and 2 are open (on the console), so that error messages have somewhere
/// to go even if the kernel found no /dev/console to give init.
pub fn ensure_stdio() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        let Ok(path) = cstring(CONSOLE) else { return };
        // SAFETY: path is NUL-terminated; the new descriptor is moved to `fd` and then closed.
        unsafe {
            let new = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            if new >= 0 && new != fd {
                libc::dup2(new, fd);
                libc::close(new);
            }
        }
    }
}

/// Keeps kernel messages off the console except emergencies (a panic): the console is the
/// REPL's terminal, and in pipe mode its output must be only what the REPL prints. They stay
/// readable in /dev/kmsg.
pub fn quiet_kernel() {
    const SYSLOG_ACTION_CONSOLE_LEVEL: libc::c_int = 8;
    const KERN_EMERG_ONLY: libc::c_int = 1;
    // SAFETY: CONSOLE_LEVEL takes no buffer, only the level in the length argument.
    unsafe {
        libc::klogctl(
            SYSLOG_ACTION_CONSOLE_LEVEL,
            std::ptr::null_mut(),
            KERN_EMERG_ONLY,
        )
    };
}

/// Makes the console the controlling terminal of a new session led by this process (so Ctrl-C
/// and job control reach the REPL's children), puts it on fds 0-2 and sets the line
/// discipline for `params.console`.
pub fn setup(params: &GuestParams) -> Result<()> {
    // SAFETY: setsid has no arguments; it fails only if we already lead a process group, in
    // which case we keep the session we have.
    unsafe { libc::setsid() };
    let path = cstring(CONSOLE)?;
    // SAFETY: path is NUL-terminated.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
        .context(|| format!("open {CONSOLE}"))?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    let console = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: TIOCSCTTY takes an int argument (1: take it even from another session; we are root).
    cvt(unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSCTTY, 1) })
        .context(|| format!("make {CONSOLE} the controlling terminal"))?;
    for target in 0..=2 {
        // SAFETY: both descriptors are valid; dup2 replaces `target` atomically.
        cvt(unsafe { libc::dup2(console.as_raw_fd(), target) })
            .context(|| format!("dup2 {CONSOLE} to fd {target}"))?;
    }
    set_termios(console.as_raw_fd(), params.console)?;
    if let (Some(cols), Some(rows)) = (params.cols, params.rows) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize, which `size` is.
        cvt(unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &size) })
            .context(|| format!("set console size {cols}x{rows}"))?;
    }
    Ok(())
}

fn set_termios(fd: RawFd, mode: ConsoleMode) -> Result<()> {
    // SAFETY: termios is plain old data, filled in by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: t is a valid termios for tcgetattr to write.
    cvt(unsafe { libc::tcgetattr(fd, &mut t) }).context(|| format!("tcgetattr {CONSOLE}"))?;
    match mode {
        ConsoleMode::Tty => {
            // The kernel's defaults are sane; the REPL switches to raw mode itself. UTF-8 erase
            // handling helps programs that read cooked lines.
            t.c_iflag |= libc::IUTF8;
        }
        ConsoleMode::Pipe => pipe_termios(&mut t),
    }
    // SAFETY: t is a valid termios.
    cvt(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) })
        .context(|| format!("tcsetattr {CONSOLE}"))?;
    Ok(())
}

/// Pipe mode: lines in, bytes out. Canonical input so that `^D` at the start of a line is end
/// of input, but no echo, no signal keys, no editing keys and no CR/LF or flow-control
/// translation, so what the host pipes in reaches the REPL as sent, and output is byte-clean.
pub fn pipe_termios(t: &mut libc::termios) {
    t.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON
        | libc::IXOFF
        | libc::IXANY
        | libc::INPCK);
    t.c_iflag |= libc::IUTF8;
    t.c_oflag &= !libc::OPOST;
    t.c_lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOPRT
        | libc::ECHOKE
        | libc::ISIG
        | libc::IEXTEN);
    t.c_lflag |= libc::ICANON;
    t.c_cflag =
        (t.c_cflag & !(libc::CSIZE | libc::PARENB)) | libc::CS8 | libc::CREAD | libc::CLOCAL;
    const DISABLED: libc::cc_t = 0; // _POSIX_VDISABLE on Linux
    for cc in [
        libc::VINTR,
        libc::VQUIT,
        libc::VERASE,
        libc::VKILL,
        libc::VEOL,
        libc::VEOL2,
        libc::VSTART,
        libc::VSTOP,
        libc::VSUSP,
        libc::VREPRINT,
        libc::VDISCARD,
        libc::VWERASE,
        libc::VLNEXT,
    ] {
        t.c_cc[cc] = DISABLED;
    }
    t.c_cc[libc::VEOF] = 0x04; // ^D
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_mode_is_canonical_silent_and_byte_clean() {
        // SAFETY: termios is plain old data.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        t.c_iflag = libc::ICRNL | libc::IXON;
        t.c_oflag = libc::OPOST | libc::ONLCR;
        t.c_lflag = libc::ISIG | libc::ICANON | libc::ECHO | libc::ECHOE | libc::IEXTEN;
        t.c_cc[libc::VINTR] = 3;
        t.c_cc[libc::VERASE] = 0x7f;
        pipe_termios(&mut t);
        assert_eq!(t.c_lflag & libc::ICANON, libc::ICANON);
        assert_eq!(t.c_lflag & (libc::ECHO | libc::ISIG | libc::IEXTEN), 0);
        assert_eq!(t.c_oflag & libc::OPOST, 0);
        assert_eq!(t.c_iflag & (libc::ICRNL | libc::IXON), 0);
        assert_eq!(t.c_cc[libc::VEOF], 4);
        assert_eq!(t.c_cc[libc::VINTR], 0);
        assert_eq!(t.c_cc[libc::VERASE], 0);
    }
}
