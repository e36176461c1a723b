//! What a violation looks like: the filters answer a forbidden syscall with SIGSYS
//! (`SECCOMP_RET_TRAP`), and this handler writes one line naming the thread and the syscall,
//! then ends the process with [`VIOLATION_EXIT_STATUS`].

use std::cell::Cell;
use std::io;
use std::sync::OnceLock;

/// The exit status of a VMM stopped by a seccomp violation: 128 + SIGSYS, as a shell reports
/// a process that SIGSYS killed.
pub const VIOLATION_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// Longest thread name kept (Linux's own limit is 15 bytes).
const NAME_LEN: usize = 16;
/// Byte offset of `si_syscall` in a SIGSYS `siginfo_t` on 64-bit Linux, x86-64 and arm64
/// alike: after `si_signo`, `si_errno`, `si_code` and padding (16 bytes), then `si_call_addr`
/// (8 bytes).
const SI_SYSCALL_OFFSET: usize = 24;

thread_local! {
    /// This thread's name, for the handler: a const-initialized plain array needs no lazy set-up
    /// or destructor, so reading it from a signal handler is safe.
    static THREAD_NAME: Cell<[u8; NAME_LEN]> = const { Cell::new([0; NAME_LEN]) };
}

/// Records the calling thread's name for the violation line.
pub(super) fn set_thread_name(name: &str) {
    let mut buf = [0; NAME_LEN];
    let n = name.len().min(NAME_LEN);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    THREAD_NAME.with(|c| c.set(buf));
}

/// Installs the SIGSYS handler, once per process.
pub(super) fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // SAFETY: a zeroed sigaction is valid; the fields that matter are set below.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigsys as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            // SAFETY: sa_mask is a valid sigset_t owned by `action`.
            unsafe { libc::sigfillset(&mut action.sa_mask) };
            // SAFETY: `action` is fully initialized and the handler has the SA_SIGINFO
            // signature; the old action is not wanted.
            if unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
            }
        })
        .map_err(io::Error::from_raw_os_error)
}

/// A fixed-size line built without allocating.
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// Formats the violation line: `nodeos-vm: seccomp: thread vcpu0 made forbidden syscall 41;
/// the VMM stopped`.
fn violation_line(name: &[u8], syscall: i32) -> Line {
    let mut line = Line {
        buf: [0; 128],
        len: 0,
    };
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    line.push(b"nodeos-vm: seccomp: thread ");
    line.push(if name.is_empty() { b"?" } else { name });
    line.push(b" made forbidden syscall ");
    line.push_number(syscall as u32);
    line.push(b"; the VMM stopped\n");
    line
}

/// Only async-signal-safe work: a TLS read of plain bytes, write(2) and _exit(2), both of which
/// every filter allows.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; for a seccomp SIGSYS its `_sigsys` member,
    // which holds the syscall number at this offset, is the one filled in.
    let syscall = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let line = violation_line(&THREAD_NAME.with(Cell::get), syscall);
    // SAFETY: writes `line.len` initialized bytes of `line.buf` to stderr, then exits without
    // running anything else in this process.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.buf.as_ptr().cast(), line.len);
        libc::_exit(VIOLATION_EXIT_STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_thread_and_syscall() {
        let mut name = [0; NAME_LEN];
        name[..5].copy_from_slice(b"vcpu0");
        let line = violation_line(&name, 41);
        assert_eq!(
            &line.buf[..line.len],
            b"nodeos-vm: seccomp: thread vcpu0 made forbidden syscall 41; the VMM stopped\n"
        );
        let line = violation_line(&[0; NAME_LEN], 0);
        assert!(line.buf[..line.len]
            .starts_with(b"nodeos-vm: seccomp: thread ? made forbidden syscall 0;"));
    }
}
