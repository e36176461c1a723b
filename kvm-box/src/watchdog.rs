//! L1 stalls: QEMU's TCG x86-64 at times leaves L1's only vCPU halted for good, with the
//! interrupt that should wake it pending in its local APIC (the timer's vector in the IRR,
//! interrupts enabled, nothing in service) and never delivered: QEMU idle at 0% CPU, its main
//! loop asleep until the emulated RTC's next alarm, L1's own `timeout`s never firing. Seen in a
//! third to a half of this project's x86-64 box runs on some evenings, in none on others, at any
//! point of a run (~25 s to ~180 s in). An NMI injected through QEMU's monitor did not wake it,
//! so the box does not try to revive L1: it runs the box again (see `run_streaming`). A running
//! L1, even an idle one, uses some CPU every few seconds (`sleep 50` as the script: never
//! stalled); QEMU that used no CPU for [`STALL`] has stalled.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long QEMU may use no CPU at all before L1 counts as stalled.
pub(crate) const STALL: Duration = Duration::from_secs(20);
/// QEMU's CPU time is read twenty times per stall period.
const SAMPLES_PER_STALL: u32 = 20;

pub(crate) struct Watchdog {
    /// QEMU's process, as in `/proc/<pid>/stat`.
    stat: PathBuf,
    stall: Duration,
    cpu_ticks: Option<u64>,
    sampled: Instant,
    busy: Instant,
}

impl Watchdog {
    /// Watches process `pid`, stalled after `stall` without CPU.
    pub(crate) fn new(pid: u32, stall: Duration) -> Self {
        let now = Instant::now();
        Self {
            stat: PathBuf::from(format!("/proc/{pid}/stat")),
            stall,
            cpu_ticks: None,
            sampled: now,
            busy: now,
        }
    }

    /// Whether the process has used no CPU for the stall period (its CPU time read at most
    /// [`SAMPLES_PER_STALL`] times per period).
    pub(crate) fn stalled(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.sampled) < self.stall / SAMPLES_PER_STALL {
            return false;
        }
        self.sampled = now;
        let ticks = std::fs::read_to_string(&self.stat)
            .ok()
            .and_then(|stat| cpu_ticks(&stat));
        if ticks.is_none() || ticks != self.cpu_ticks {
            self.cpu_ticks = ticks;
            self.busy = now;
            return false;
        }
        now.duration_since(self.busy) >= self.stall
    }
}

/// User plus system time, in clock ticks, from a `/proc/<pid>/stat` line: the 14th and 15th
/// fields, counted after the command name's closing parenthesis (the name may hold spaces).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l1::KillOnDrop;

    /// Whether `watchdog` says stalled within `time`.
    fn stalls_within(watchdog: &mut Watchdog, time: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < time {
            if watchdog.stalled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// `program` with `args`, killed when dropped (an assertion failing included).
    fn spawn(program: &str, args: &[&str]) -> KillOnDrop {
        KillOnDrop(
            std::process::Command::new(program)
                .args(args)
                .spawn()
                .unwrap(),
        )
    }

    /// A process that runs never stalls; one that sleeps has stalled once it has used no CPU
    /// for the stall period.
    #[test]
    fn a_sleeping_process_stalls_and_a_spinning_one_does_not() {
        let stall = Duration::from_secs(1);
        let spinning = spawn("sh", &["-c", "while :; do :; done"]);
        let sleeping = spawn("sleep", &["30"]);
        let mut running = Watchdog::new(spinning.0.id(), stall);
        let mut idle = Watchdog::new(sleeping.0.id(), stall);
        assert!(!stalls_within(&mut running, stall * 3));
        assert!(stalls_within(&mut idle, stall * 3));
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime_whatever_the_name() {
        let stat = "4242 (qemu-system-x86 (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    1500 250 0 0 20 0 3 0 100 3594316 622957";
        assert_eq!(cpu_ticks(stat), Some(1750));
        assert_eq!(cpu_ticks("4242 (qemu) S 1"), None);
    }
}
