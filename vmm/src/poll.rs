//! Waiting on several descriptors at once.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The index of the first of `fds` that is readable (or hung up); `None` once `timeout` has
/// passed (never without one).
pub fn first_readable(fds: &[RawFd], timeout: Option<Duration>) -> Option<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                left.as_millis().min(i32::MAX as u128 - 1) as i32 + 1
            }
        };
        // SAFETY: pfds is a valid array of pfds.len() pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n > 0 {
            if let Some(i) = pfds.iter().position(|p| p.revents != 0) {
                return Some(i);
            }
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
}
