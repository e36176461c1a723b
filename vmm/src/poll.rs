//! Waiting on several descriptors at once, for the first that is ready (`nix::poll`).

use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The index of the first of `fds` that is readable (or hung up, or in error); `None` once
/// `timeout` has passed (never without one; at once with a zero one, after looking once). The
/// descriptors stay open during the call.
pub fn first_readable(fds: &[RawFd], timeout: Option<Duration>) -> Option<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        // SAFETY: the borrows end with this call, during which the caller keeps the
        // descriptors open (a closed one would only be reported as ready: POLLNVAL).
        .map(|&fd| PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, PollFlags::POLLIN))
        .collect();
    loop {
        let wait = match deadline {
            None => PollTimeout::NONE,
            // Rounded up: waking before the deadline would only poll again.
            Some(d) => PollTimeout::try_from(
                d.saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000),
            )
            .unwrap_or(PollTimeout::MAX),
        };
        // An error (EINTR) is only another turn.
        if matches!(poll(&mut pfds, wait), Ok(n) if n > 0) {
            if let Some(i) = pfds
                .iter()
                .position(|p| p.revents() != Some(PollFlags::empty()))
            {
                return Some(i);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn finds_the_readable_one_or_times_out() {
        let (r1, _w1) = nix::unistd::pipe().unwrap();
        let (r2, w2) = nix::unistd::pipe().unwrap();
        let fds = [r1.as_raw_fd(), r2.as_raw_fd()];
        assert_eq!(first_readable(&fds, Some(Duration::from_millis(20))), None);
        nix::unistd::write(&w2, b"x").unwrap();
        assert_eq!(
            first_readable(&fds, Some(Duration::from_millis(20))),
            Some(1)
        );
        assert_eq!(first_readable(&fds, None), Some(1));
    }

    #[test]
    fn a_zero_timeout_looks_once() {
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(first_readable(&[r.as_raw_fd()], Some(Duration::ZERO)), None);
        nix::unistd::write(&w, b"x").unwrap();
        assert_eq!(
            first_readable(&[r.as_raw_fd()], Some(Duration::ZERO)),
            Some(0)
        );
        drop(w);
        let (r2, _w2) = nix::unistd::pipe().unwrap();
        // A hung-up pipe counts as ready.
        assert_eq!(
            first_readable(&[r2.as_raw_fd(), r.as_raw_fd()], None),
            Some(1)
        );
    }
}
