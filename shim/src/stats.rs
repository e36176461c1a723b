//! A task's metrics (`ctr task metrics`, a kubelet's stats): the microVM's memory, CPU time and
//! processes as its own kernel counts them, read through the agent (`/proc/meminfo`,
//! `/proc/stat`, the pids in `/proc`) and given to containerd as cgroups v1 `Metrics`, the
//! kind a runc shim sends. The whole VM is the container's: its memory limit is the VM's.

use std::path::Path;
use std::time::{Duration, Instant};

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::MessageField;
use sandbox::agent::{Command, Event, Outcome, Session, Wake};
use vmm_sys_util::eventfd::EventFd;

/// The guest kernel's clock ticks per second (`USER_HZ`, 100 on every Linux architecture).
const USER_HZ: u64 = 100;
/// What the guest prints; the agent runs it as the guest's own user, outside the container.
const SCRIPT: &str = "cat /proc/meminfo /proc/stat; echo pids; ls /proc";
/// Most output read (a few KiB are expected).
const MAX_OUTPUT: usize = 256 << 10;
/// How long the guest has to answer; it is not trusted to answer at all.
const ANSWER_TIME: Duration = Duration::from_secs(15);

/// The metrics of the VM whose agent is behind `socket`; `ended` is readable once it ended.
pub fn collect(socket: &Path, ended: &EventFd) -> Result<Metrics, String> {
    let command = Command {
        argv: ["sh", "-c", SCRIPT].map(|a| a.as_bytes().to_vec()).into(),
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout: Some(ANSWER_TIME),
        container: None,
        tty: None,
    };
    let deadline = Instant::now() + ANSWER_TIME;
    let mut session =
        Session::start(socket, &command, ended, Some(deadline)).map_err(|e| e.to_string())?;
    let mut output = Vec::new();
    loop {
        let wake = session.next(ended, &[], Some(deadline));
        match wake.map_err(|e| e.to_string())? {
            Wake::Event(Event::Stdout(data)) if output.len() < MAX_OUTPUT => output.extend(data),
            Wake::Event(Event::Ended(Outcome::Exited(0))) => break,
            Wake::Event(Event::Ended(outcome)) => {
                return Err(format!("reading the guest's counters: {outcome:?}"))
            }
            Wake::Event(_) | Wake::Extra(_) => {}
        }
    }
    Ok(parse(&String::from_utf8_lossy(&output)))
}

/// Metrics from the script's output (the guest's: any numbers at all, none overflowing).
fn parse(text: &str) -> Metrics {
    let kib = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |v| v.saturating_mul(1024))
    };
    let (total, available) = (kib("MemTotal"), kib("MemAvailable"));
    let memory = MemoryStat {
        cache: kib("Cached"),
        rss: kib("AnonPages"),
        mapped_file: kib("Mapped"),
        dirty: kib("Dirty"),
        writeback: kib("Writeback"),
        inactive_anon: kib("Inactive(anon)"),
        active_anon: kib("Active(anon)"),
        inactive_file: kib("Inactive(file)"),
        active_file: kib("Active(file)"),
        unevictable: kib("Unevictable"),
        hierarchical_memory_limit: total,
        // The hierarchy is the VM: its totals are the same (ctr prints these).
        total_cache: kib("Cached"),
        total_rss: kib("AnonPages"),
        total_mapped_file: kib("Mapped"),
        total_dirty: kib("Dirty"),
        total_writeback: kib("Writeback"),
        total_inactive_anon: kib("Inactive(anon)"),
        total_active_anon: kib("Active(anon)"),
        total_inactive_file: kib("Inactive(file)"),
        total_active_file: kib("Active(file)"),
        total_unevictable: kib("Unevictable"),
        usage: MessageField::some(MemoryEntry {
            usage: total.saturating_sub(available),
            limit: total,
            ..Default::default()
        }),
        ..Default::default()
    };
    // `cpu  user nice system idle iowait irq softirq ...` in ticks, then one line per CPU.
    let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / USER_HZ);
    let times = |line: &str| -> (u64, u64) {
        let t: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| t.get(i).copied().unwrap_or(0);
        (
            at(0).saturating_add(at(1)),
            at(2).saturating_add(at(5)).saturating_add(at(6)),
        )
    };
    let mut usage = CPUUsage::default();
    for line in text.lines() {
        if line.starts_with("cpu ") {
            let (user, kernel) = times(line);
            usage.user = ns(user);
            usage.kernel = ns(kernel);
            usage.total = ns(user.saturating_add(kernel));
        } else if line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
        {
            let (user, kernel) = times(line);
            usage.per_cpu.push(ns(user.saturating_add(kernel)));
        }
    }
    let pids = text.split_once("\npids\n").map_or(0, |(_, list)| {
        list.lines()
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .count() as u64
    });
    Metrics {
        memory: MessageField::some(memory),
        cpu: MessageField::some(CPUStat {
            usage: MessageField::some(usage),
            ..Default::default()
        }),
        pids: MessageField::some(PidsStat {
            current: pids,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_counters_become_metrics() {
        let text = "MemTotal:         500000 kB\nMemFree:  100000 kB\n\
                    MemAvailable:     300000 kB\nCached:            50000 kB\n\
                    AnonPages:         40000 kB\n\
                    cpu  100 20 30 1000 5 1 2 0 0 0\ncpu0 60 10 20 500 2 1 1 0 0 0\n\
                    cpu1 40 10 10 500 3 0 1 0 0 0\nintr 1 2 3\nprocesses 77\n\
                    pids\n1\n58\nacpi\nself\n60\n";
        let m = parse(text);
        let memory = m.memory.unwrap();
        assert_eq!(memory.usage.usage, 200000 * 1024);
        assert_eq!(memory.usage.limit, 500000 * 1024);
        assert_eq!(memory.cache, 50000 * 1024);
        assert_eq!(memory.total_cache, 50000 * 1024);
        assert_eq!(memory.rss, 40000 * 1024);
        let usage = m.cpu.unwrap().usage.unwrap();
        assert_eq!(usage.user, 120 * 10_000_000);
        assert_eq!(usage.kernel, 33 * 10_000_000);
        assert_eq!(usage.total, 153 * 10_000_000);
        assert_eq!(usage.per_cpu, [92 * 10_000_000, 61 * 10_000_000]);
        assert_eq!(m.pids.current, 3);
        // A guest's absurd numbers saturate.
        let m = parse("MemTotal: 18446744073709551615 kB\ncpu  18446744073709551615 5 0 0\n");
        assert_eq!(m.memory.unwrap().usage.limit, u64::MAX);
        assert_eq!(m.cpu.unwrap().usage.unwrap().total, u64::MAX);
    }
}
