//! Exit statuses that mean the same on both sides: a host command's status is either the
//! guest's (through the exit port, 0..=[`crate::ports::MAX_EXIT_STATUS`]) or one of these, which
//! follow the shell's conventions (`timeout(1)`, `env(1)`, `sh`).

/// The guest could not boot: init printed `nodeos-init: <what failed>: <why>` and ended the VM.
pub const BOOT_FAILURE: u8 = 121;
/// The command ran out of time and was killed (as `timeout(1)` reports it).
pub const TIMED_OUT: u8 = 124;
/// nodeos-vm itself failed (as `env(1)` and `timeout(1)` report their own failures).
pub const HOST_FAILURE: u8 = 125;
/// The command was found but could not be run.
pub const CANNOT_RUN: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;
/// A command killed by signal N is reported as `SIGNALED_BASE + N`.
pub const SIGNALED_BASE: u8 = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_and_below_the_signal_range() {
        let all = [BOOT_FAILURE, TIMED_OUT, HOST_FAILURE, CANNOT_RUN, NOT_FOUND];
        for (i, a) in all.iter().enumerate() {
            assert!(*a < SIGNALED_BASE);
            assert!(all[i + 1..].iter().all(|b| b != a), "{a} twice");
        }
    }
}
