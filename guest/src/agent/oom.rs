//! The guest kernel's OOM kills, as the agent reports them while a command runs
//! (`Reply::OomKilled`, docs/agent-protocol.md).
//!
//! The guest's kernel has neither memory cgroups (whose `memory.events` counts `oom_kill`) nor
//! VM event counters (`/proc/vmstat`'s `oom_kill`): kernel/config.fragment leaves both out. What
//! it does have is its log: the OOM killer writes `Out of memory: Killed process PID (NAME) ...`
//! there, as a kernel record, for every process it kills. So the agent reads `/dev/kmsg` from
//! the moment it starts a command on: each such record is one kill. The records are
//! numbered for the whole guest, so the host tells a kill two connections saw apart from two.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The kernel's log, one record per read.
pub const KERNEL_LOG: &str = "/dev/kmsg";
/// Room for the longest record /dev/kmsg gives (`CONSOLE_EXT_LOG_MAX`, its dictionary included).
const RECORD_MAX: usize = 8192;
/// Most records read at one go: more than the guest kernel's log (128 KiB) holds at once, so
/// that one look reads all there is; yet a kernel that logs without end holds up nothing else.
const RECORDS_PER_READ: usize = 4096;

/// One kill of the OOM killer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomKill {
    /// The log record's sequence number.
    pub seq: u64,
    /// The process killed.
    pub pid: i32,
}

/// The kernel's log, followed from where it was when it was opened.
pub struct OomWatch {
    log: File,
}

/// What one look at the log found.
pub struct Logged {
    pub kills: Vec<OomKill>,
    /// The log cannot be read on (it ended, or failed): stop following it.
    pub ended: bool,
}

impl OomWatch {
    /// Follows the log at `path` (/dev/kmsg) from its end: what is logged from now on. `None`
    /// when it cannot be opened (a kernel without one): nothing is reported then.
    pub fn open(path: &Path) -> Option<OomWatch> {
        let log = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        // SAFETY: lseek has no memory arguments. /dev/kmsg takes SEEK_END as "after the last
        // record"; a log that cannot seek (a FIFO, in tests) is read from where it is.
        unsafe { libc::lseek(log.as_raw_fd(), 0, libc::SEEK_END) };
        Some(OomWatch { log })
    }

    /// Readable (for poll) when something was logged.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.log.as_fd()
    }

    /// The OOM kills logged since the last look.
    pub fn read(&mut self) -> Logged {
        let mut kills = Vec::new();
        let mut buf = vec![0u8; RECORD_MAX];
        for _ in 0..RECORDS_PER_READ {
            match self.log.read(&mut buf) {
                Ok(0) => return Logged { kills, ended: true },
                Ok(n) => kills.extend(buf[..n].split(|&b| b == b'\n').filter_map(parse_record)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Records were overwritten before they were read (EPIPE): the next read gives
                // the oldest one left.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Logged { kills, ended: true },
            }
        }
        Logged {
            kills,
            ended: false,
        }
    }
}

/// The OOM kill a line of the log tells of: a record `PRIO,SEQ,TIME,FLAGS[,...];MESSAGE` of the
/// kernel's own (facility 0: what user space writes into the log never is) whose message is the
/// OOM killer's `Out of memory: Killed process PID (NAME) ...` (`Out of memory
/// (oom_kill_allocating_task): ...`, `Memory cgroup out of memory: ...` elsewhere). Anything
/// else, a record's continuation lines included, is not one.
fn parse_record(line: &[u8]) -> Option<OomKill> {
    let split = line.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(&line[..split]).ok()?;
    let message = String::from_utf8_lossy(&line[split + 1..]);
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq: u64 = fields.next()?.parse().ok()?;
    if prio >> 3 != 0 {
        return None;
    }
    let (what, rest) = message.split_once(": Killed process ")?;
    if !what.to_ascii_lowercase().contains("out of memory") {
        return None;
    }
    let pid = rest.split(' ').next()?.parse().ok()?;
    Some(OomKill { seq, pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oom_killers_records_are_kills() {
        let record = b"3,1544,52718377,-;Out of memory: Killed process 212 (node) \
            total-vm:1245312kB, anon-rss:236544kB, file-rss:0kB, shmem-rss:0kB, UID:1000 \
            pgtables:672kB oom_score_adj:0";
        assert_eq!(
            parse_record(record),
            Some(OomKill {
                seq: 1544,
                pid: 212
            })
        );
        let memcg = b"3,7,1,c;Memory cgroup out of memory: Killed process 9 (a b) total-vm:1kB";
        assert_eq!(parse_record(memcg), Some(OomKill { seq: 7, pid: 9 }));
        let allocating = b"3,8,1,-;Out of memory (oom_kill_allocating_task): Killed process 10 (x)";
        assert_eq!(parse_record(allocating), Some(OomKill { seq: 8, pid: 10 }));
    }

    #[test]
    fn anything_else_is_not_a_kill() {
        for line in [
            // The OOM killer's other lines, a record's continuation, other kernel messages.
            &b"4,1530,52718000,-;node invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0"[..],
            b"6,1543,52718376,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=node,pid=212,uid=1000",
            b"6,1545,52730000,-;oom_reaper: reaped process 212 (node), now anon-rss:0kB",
            b" SUBSYSTEM=memory",
            b"",
            // What user space writes into the log is of facility 1 (LOG_USER) at least.
            b"14,1546,52740000,-;Out of memory: Killed process 1 (init)",
            // Malformed headers and pids.
            b"3;Out of memory: Killed process 5 (x)",
            b"x,5,0,-;Out of memory: Killed process 5 (x)",
            b"3,-5,0,-;Out of memory: Killed process 5 (x)",
            b"3,5,0,-;Out of memory: Killed process five (x)",
            b"3,5,0,-;Out of memory: Killed processes 5 (x)",
            b"3,5,0,-;Something else: Killed process 5 (x)",
        ] {
            assert_eq!(parse_record(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn a_log_is_followed_from_its_end_until_it_ends() {
        let dir = std::env::temp_dir().join(format!("nodeos-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        std::fs::write(&path, "3,1,0,-;Out of memory: Killed process 5 (old)\n").unwrap();
        let mut watch = OomWatch::open(&path).unwrap();
        // A file seeks to its end: what it held is not news. Its end ends the watch.
        let logged = watch.read();
        assert!(logged.kills.is_empty() && logged.ended);
        assert!(OomWatch::open(&dir.join("missing")).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
