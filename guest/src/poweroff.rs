//! Ending the VM cleanly: what the supervisor does when the REPL ends and the agent does on
//! `Poweroff`. The disks that outlive the VM (a disk upper layer, read-write volumes) must be
//! consistent on the host the instant the exit port is written.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use contract::params::{GuestParams, Upper};

use crate::init::mounts::UPPER_MOUNT;
use crate::ports;
use crate::sys;

/// How long shutdown waits for killed processes to go before making the disks read-only.
const KILL_GRACE: Duration = Duration::from_millis(300);
/// How long a remount read-only is retried (a killed process may still hold a file for
/// writing for a moment) before the file system is frozen instead.
const REMOUNT_TRIES: u32 = 30;
const REMOUNT_RETRY: Duration = Duration::from_millis(10);

/// The mount points of the file systems that outlive the VM and are written in it.
pub fn persistent_mounts(params: &GuestParams) -> Vec<PathBuf> {
    let upper = match params.upper {
        Upper::Disk(_) => Some(PathBuf::from(UPPER_MOUNT)),
        Upper::Tmpfs => None,
    };
    upper
        .into_iter()
        .chain(
            params
                .volumes
                .iter()
                .filter(|v| !v.read_only)
                .map(|v| PathBuf::from(&v.mount_point)),
        )
        .collect()
}

/// Ends the VM with `status`. With `persistent` file systems, first kills every process but
/// PID 1 and this one (none may write to them any more), then syncs and makes each read-only.
pub fn power_off(persistent: &[PathBuf], status: u8) -> ! {
    if !persistent.is_empty() {
        let _ = sys::kill(-1, libc::SIGKILL);
        let deadline = Instant::now() + KILL_GRACE;
        while Instant::now() < deadline {
            match sys::waitpid(-1, libc::WNOHANG) {
                Err(_) => break, // ECHILD: all our children are gone.
                Ok(Some(_)) => continue,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
    // SAFETY: sync has no arguments.
    unsafe { libc::sync() };
    // Volumes first: they may be mounted below the upper layer's mount point.
    for mount_point in persistent.iter().rev() {
        make_read_only(mount_point);
    }
    quiet_console();
    ports::exit_vm(status)
}

/// Remounts a file system read-only, or at least freezes it (which flushes the journal), so
/// the disk is clean when the VM stops.
fn make_read_only(mount_point: &Path) {
    for _ in 0..REMOUNT_TRIES {
        if sys::mount(
            None,
            mount_point,
            None,
            libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )
        .is_ok()
        {
            return;
        }
        std::thread::sleep(REMOUNT_RETRY);
    }
    if let Ok(dir) = std::fs::File::open(mount_point) {
        // FIFREEZE = _IOWR('X', 119, int)
        const FIFREEZE: libc::c_ulong = 0xc004_5877;
        // SAFETY: FIFREEZE takes no pointer argument; dir is an open descriptor on the file system.
        unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE, 0) };
    }
}

/// Stops kernel messages on the console and waits until everything written to it has left
/// the serial line: the VM ends the instant the exit port is written.
pub fn quiet_console() {
    const SYSLOG_ACTION_CONSOLE_OFF: libc::c_int = 6;
    // SAFETY: klogctl CONSOLE_OFF takes no buffer; tcdrain only waits on fd 1.
    unsafe {
        libc::klogctl(SYSLOG_ACTION_CONSOLE_OFF, std::ptr::null_mut(), 0);
        libc::tcdrain(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_mounts_are_the_disk_upper_and_rw_volumes() {
        let params = GuestParams::parse(
            "nodeos.upper=/dev/vdb nodeos.vol=/dev/vdc:/data:rw nodeos.vol=/dev/vdd:/ro:ro",
        )
        .unwrap();
        assert_eq!(
            persistent_mounts(&params),
            vec![PathBuf::from(UPPER_MOUNT), PathBuf::from("/data")]
        );
        assert!(persistent_mounts(&GuestParams::default()).is_empty());
    }
}
