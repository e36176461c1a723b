//! Root's jails each run as a user and group of their own: two jailed processes (two VMs'
//! VMMs, a VMM and a disk tool) never share a uid, so neither can signal, trace or read the
//! other's `/proc` files as its owner. The ids come from a range ([`IdRange`]): the [`COUNT`]
//! ids from its base up (100000 by default) that the host neither names (`/etc/passwd`,
//! `/etc/group`) nor delegates to users' rootless containers (`/etc/subuid`, `/etc/subgid`);
//! uid and gid are the same number. An id is taken by an exclusive `flock` on a file named
//! after it in a folder every nodeos-vm run as root shares ([`LOCK_DIR`], or the runtime
//! folder where `/run` cannot hold it), held while its jail lives: the kernel lets go of it
//! when the holder ends, however it ends.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::runtime;

/// How many ids a range holds.
pub const COUNT: u32 = 65_536;
/// Where the default range starts: above the ids Linux distributions hand out to users.
pub const DEFAULT_BASE: u32 = 100_000;
/// The folder of the ids' locks, shared by every nodeos-vm run as root on the host.
pub const LOCK_DIR: &str = "/run/nodeos-vm/jail-ids";
/// The host's files that name users and groups, and those that delegate id ranges.
const NAMING_FILES: [&str; 2] = ["/etc/passwd", "/etc/group"];
const DELEGATING_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "a jail's user and group: the {COUNT} ids from {base} up that the host neither names \
         nor delegates are all held by running jails (--jail-id-base chooses other ones)"
    )]
    Exhausted { base: u32 },
    #[error("a jail's user and group: {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
}

/// The ids root's jailed processes take theirs from: the [`COUNT`] from `base` up that the
/// host neither names nor delegates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    base: u32,
}

impl Default for IdRange {
    fn default() -> Self {
        IdRange { base: DEFAULT_BASE }
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.base)
    }
}

impl FromStr for IdRange {
    type Err = String;

    /// A base from 1 (0 is root) to `u32::MAX - 1` (`u32::MAX` is no id).
    fn from_str(text: &str) -> Result<IdRange, String> {
        match text.parse::<u32>() {
            Ok(base) if base != 0 && base != u32::MAX => Ok(IdRange { base }),
            _ => Err(format!(
                "{text:?}: the first id of root's jails, from 1 to {}",
                u32::MAX - 1
            )),
        }
    }
}

impl IdRange {
    /// Takes the first id of the range that no other jail holds.
    pub fn take(&self) -> Result<TakenId, Error> {
        let host = HostIds::read()?;
        let candidates = host.free_from(self.base).take(COUNT as usize);
        take_in(&lock_dir()?, candidates)?.ok_or(Error::Exhausted { base: self.base })
    }
}

/// The ids the host names, and those it delegates.
#[derive(Debug, Default)]
struct HostIds {
    named: HashSet<u32>,
    /// Half-open ranges.
    delegated: Vec<(u64, u64)>,
}

impl HostIds {
    fn read() -> Result<HostIds, Error> {
        let mut host = HostIds::default();
        for file in NAMING_FILES {
            host.named
                .extend(read_host_file(file)?.lines().filter_map(named_id));
        }
        for file in DELEGATING_FILES {
            host.delegated
                .extend(read_host_file(file)?.lines().filter_map(delegated_range));
        }
        Ok(host)
    }

    /// The ids from `base` up (below `u32::MAX`) that the host neither names nor delegates.
    fn free_from(&self, base: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = u64::from(base);
        std::iter::from_fn(move || loop {
            let id = u32::try_from(next).ok().filter(|&id| id != u32::MAX)?;
            match self
                .delegated
                .iter()
                .find(|(first, end)| (*first..*end).contains(&next))
            {
                Some(&(_, end)) => next = end,
                None => {
                    next += 1;
                    if !self.named.contains(&id) {
                        return Some(id);
                    }
                }
            }
        })
    }
}

/// One jail's uid and gid (the same number), its own for as long as this value lives.
#[derive(Debug)]
pub struct TakenId {
    id: u32,
    _lock: Flock<File>,
}

impl TakenId {
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// The folder of the locks: [`LOCK_DIR`], or where `/run` cannot hold it (no `/run`, a
/// read-only one), `jail-ids` in the runtime folder. Made (0700) when missing.
fn lock_dir() -> Result<PathBuf, Error> {
    let create = |path: &Path| {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
    };
    let shared = PathBuf::from(LOCK_DIR);
    if create(&shared).is_ok() {
        return Ok(shared);
    }
    let own = runtime::base()?.join("jail-ids");
    create(&own).map_err(|source| Error::Io {
        what: "creating",
        path: own.clone(),
        source,
    })?;
    Ok(own)
}

/// Takes the first of `candidates` whose lock in `dir` nobody holds; `None` when every one is
/// held.
fn take_in(dir: &Path, candidates: impl Iterator<Item = u32>) -> Result<Option<TakenId>, Error> {
    for id in candidates {
        let path = dir.join(id.to_string());
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                what: "opening the lock",
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(TakenId { id, _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, errno)) => {
                return Err(Error::Io {
                    what: "locking",
                    path,
                    source: errno.into(),
                })
            }
        }
    }
    Ok(None)
}

/// A host file's text; empty when it does not exist.
fn read_host_file(path: &str) -> Result<String, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(Error::Io {
            what: "reading",
            path: path.into(),
            source,
        }),
    }
}

/// The id of a `/etc/passwd` or `/etc/group` line: `name:password:ID:...`.
fn named_id(line: &str) -> Option<u32> {
    line.split(':').nth(2)?.parse().ok()
}

/// The ids a `/etc/subuid` or `/etc/subgid` line delegates, `name:first:count`, as a
/// half-open range.
fn delegated_range(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split(':').skip(1);
    let first: u64 = fields.next()?.parse().ok()?;
    let count: u64 = fields.next()?.parse().ok()?;
    Some((first, first + count))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two jails at once never share an id; an id is free again once its holder lets go (the
    /// lock is the kernel's: whatever process held it, however it ended).
    #[test]
    fn ids_are_taken_one_jail_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let take = || take_in(dir.path(), [10, 12, 13].into_iter()).unwrap();
        let first = take().unwrap();
        let second = take().unwrap();
        assert_eq!((first.id(), second.id()), (10, 12));
        drop(first);
        let again = take().unwrap();
        assert_eq!(again.id(), 10);
        let third = take().unwrap();
        assert_eq!(third.id(), 13);
        assert!(take().is_none(), "every candidate is held");
        drop((second, third, again));
    }

    /// Named ids are skipped, delegated ranges jumped over, and no id reaches `u32::MAX`.
    #[test]
    fn the_range_skips_what_the_host_names_or_delegates() {
        let mut host = HostIds::default();
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n# x\n";
        host.named.extend(passwd.lines().filter_map(named_id));
        host.named
            .extend("nogroup:x:100001:".lines().filter_map(named_id));
        let subuid = "alice:100003:65536\nbob:100000\n";
        host.delegated
            .extend(subuid.lines().filter_map(delegated_range));
        assert_eq!(host.named, HashSet::from([0, 65534, 100001]));
        assert_eq!(host.delegated, [(100_003, 165_539)]);
        let ids: Vec<u32> = host.free_from(100_000).take(5).collect();
        assert_eq!(ids, [100_000, 100_002, 165_539, 165_540, 165_541]);
        let top: Vec<u32> = HostIds::default().free_from(u32::MAX - 2).collect();
        assert_eq!(top, [u32::MAX - 2, u32::MAX - 1]);
    }

    #[test]
    fn bases() {
        assert_eq!("100000".parse::<IdRange>().unwrap(), IdRange::default());
        assert_eq!(IdRange::default().to_string(), "100000");
        for bad in ["0", "4294967295", "-1", "x", ""] {
            assert!(bad.parse::<IdRange>().is_err(), "{bad}");
        }
    }
}
