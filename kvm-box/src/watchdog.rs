//! L1 stalls: QEMU's TCG x86-64 at times leaves L1's only vCPU halted with no timer armed to
//! wake it (seen once in a few box runs, after a few minutes of VMs booting in L1: QEMU idle at
//! 0% CPU, its main loop sleeping for the next twenty minutes, L1's own `timeout`s never firing).
//! A running L1, even an idle one, uses some CPU every few seconds; QEMU that used none for
//! [`STALL`] is stalled. The watchdog then injects an NMI through QEMU's monitor (QMP): the
//! vCPU wakes, L1's kernel reprograms its timer on the way back to idle and goes on (it logs an
//! NMI of unknown reason on its console). Each kick is said on stderr. An L1 still using no CPU
//! [`STALL`] after its NMI, or one that cannot take an NMI (arm64's `virt`), is dead: the box
//! runs it again (see `run_streaming`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long QEMU may use no CPU at all before L1 counts as stalled.
pub(crate) const STALL: Duration = Duration::from_secs(20);
/// QEMU's CPU time is read twenty times per stall period.
const SAMPLES_PER_STALL: u32 = 20;
/// How long one monitor exchange may take.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(5);

/// What the watchdog makes of L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Running, or stalled and sent an NMI.
    Alive,
    /// Stalled, and no NMI woke it.
    Dead,
}

pub(crate) struct Watchdog {
    /// QEMU's process, as in `/proc/<pid>/stat`.
    stat: PathBuf,
    /// QEMU's QMP socket.
    monitor: PathBuf,
    stall: Duration,
    cpu_ticks: Option<u64>,
    sampled: Instant,
    busy: Instant,
    /// Whether an NMI was sent since QEMU last used CPU.
    kicked: bool,
}

impl Watchdog {
    /// Watches process `pid`, stalled after `stall` without CPU, woken through `monitor`.
    pub(crate) fn new(pid: u32, monitor: &Path, stall: Duration) -> Self {
        let now = Instant::now();
        Self {
            stat: PathBuf::from(format!("/proc/{pid}/stat")),
            monitor: monitor.to_path_buf(),
            stall,
            cpu_ticks: None,
            sampled: now,
            busy: now,
            kicked: false,
        }
    }

    /// Samples QEMU's CPU time (at most [`SAMPLES_PER_STALL`] times per stall period) and
    /// kicks L1 when it has used none for the stall period.
    pub(crate) fn poll(&mut self) -> Verdict {
        let now = Instant::now();
        if now.duration_since(self.sampled) < self.stall / SAMPLES_PER_STALL {
            return Verdict::Alive;
        }
        self.sampled = now;
        let ticks = std::fs::read_to_string(&self.stat)
            .ok()
            .and_then(|stat| cpu_ticks(&stat));
        if ticks.is_none() || ticks != self.cpu_ticks {
            self.cpu_ticks = ticks;
            self.busy = now;
            self.kicked = false;
            return Verdict::Alive;
        }
        let stall = self.stall;
        if now.duration_since(self.busy) < stall {
            return Verdict::Alive;
        }
        if self.kicked {
            return Verdict::Dead;
        }
        self.busy = now;
        self.kicked = true;
        // Said on stderr, not in a log: whoever reads the box's timings must know.
        match inject_nmi(&self.monitor) {
            Ok(()) => {
                eprintln!(
                    "kvm-box: L1 used no CPU for {stall:?} (an emulator stall): sent it an NMI"
                );
                Verdict::Alive
            }
            Err(e) => {
                eprintln!("kvm-box: L1 used no CPU for {stall:?} (an emulator stall); no NMI could be sent: {e}");
                Verdict::Dead
            }
        }
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

/// QMP: the greeting, capabilities negotiation, then `inject-nmi`; events in between skipped.
fn inject_nmi(monitor: &Path) -> std::io::Result<()> {
    let stream = UnixStream::connect(monitor)?;
    stream.set_read_timeout(Some(MONITOR_TIMEOUT))?;
    stream.set_write_timeout(Some(MONITOR_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    reply(&mut reader)?;
    for command in ["qmp_capabilities", "inject-nmi"] {
        writeln!(writer, "{{\"execute\": \"{command}\"}}")?;
        let answer = reply(&mut reader)?;
        if !answer.contains("\"return\"") {
            return Err(std::io::Error::other(format!(
                "{command}: {}",
                answer.trim()
            )));
        }
    }
    Ok(())
}

/// The monitor's next line that is not an event.
fn reply(reader: &mut BufReader<UnixStream>) -> std::io::Result<String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed its monitor",
            ));
        }
        if !line.contains("\"event\"") {
            return Ok(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `watchdog` for `time`; the first `Dead`, else `Alive`.
    fn watch(watchdog: &mut Watchdog, time: Duration) -> Verdict {
        let start = Instant::now();
        while start.elapsed() < time {
            if watchdog.poll() == Verdict::Dead {
                return Verdict::Dead;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Verdict::Alive
    }

    /// A process that runs is alive; one that sleeps, with no monitor to send it an NMI, is
    /// dead once it has used no CPU for the stall period.
    #[test]
    fn a_sleeping_process_is_dead_and_a_spinning_one_alive() {
        let monitor = Path::new("/nonexistent/qmp.sock");
        let stall = Duration::from_secs(1);
        let mut spinning = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let mut sleeping = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut alive = Watchdog::new(spinning.id(), monitor, stall);
        let mut dead = Watchdog::new(sleeping.id(), monitor, stall);
        assert_eq!(watch(&mut alive, stall * 3), Verdict::Alive);
        assert_eq!(watch(&mut dead, stall * 3), Verdict::Dead);
        for child in [&mut spinning, &mut sleeping] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime_whatever_the_name() {
        let stat = "4242 (qemu-system-x86 (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    1500 250 0 0 20 0 3 0 100 3594316 622957";
        assert_eq!(cpu_ticks(stat), Some(1750));
        assert_eq!(cpu_ticks("4242 (qemu) S 1"), None);
    }
}
