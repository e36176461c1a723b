//! User environments: each user's writable layer is an ext4 disk image of their own,
//! `<data>/users/<name>/disk.ext4`, attached as the overlay's upper layer (`--user NAME`).
//! Whatever the user writes in `/` lands there and outlives the VM; no other user's VM ever
//! sees it. A lock (`flock` on `<name>/lock`, held while a VM has the disk) keeps the disk from
//! being mounted twice read-write.
//!
//! A guest writes its disk as it likes, so e2fsck and resize2fs, which parse it to grow it,
//! run in a jail of their own ([`DiskTools`], vmm::tool), seeing only that disk.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use vmm::backend::process::{Jailed, VmmProgram};
use vmm::host_packages::{self, HostPackageError};
use vmm::jail::Jail;
use vmm::tool::{self, Tool};

use crate::folders::{self, NoDataDir};
use crate::{vmm_program, volume};

/// Size of a new user's disk when `--disk-size` is not given (sparse: it takes what is used).
pub const DEFAULT_DISK_SIZE: &str = "2G";
const DISK_FILE: &str = "disk.ext4";
const LOCK_FILE: &str = "lock";
const MAX_NAME_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    NoDataDir(#[from] NoDataDir),
    #[error(
        "{0:?} is not a user name: use 1 to {MAX_NAME_LEN} lowercase letters, digits, '-' or '_', \
         starting with a letter or digit"
    )]
    BadName(String),
    #[error("user {0:?} has no environment here (`nodeos-vm users ls` lists them)")]
    NoSuchUser(String),
    #[error(
        "user {0:?} already has a VM running (their disk is never mounted twice); stop it first \
         (`nodeos-vm ps`, `nodeos-vm stop ID`) or use another --user"
    )]
    InUse(String),
    #[error(
        "--disk-size {requested_mib} MiB: user {name:?}'s disk is {current_mib} MiB and disks only \
         grow; leave --disk-size out or give at least {current_mib}M"
    )]
    Shrink {
        name: String,
        requested_mib: u64,
        current_mib: u64,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tool(#[from] volume::Error),
    #[error(transparent)]
    Program(#[from] HostPackageError),
    #[error(transparent)]
    Helper(#[from] vmm_program::Error),
    #[error("{what}")]
    Jailed {
        what: String,
        #[source]
        source: tool::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a user name: it becomes a folder name and shows up in messages.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let ok = (1..=MAX_NAME_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

/// The folder holding every user's environment.
#[derive(Debug, Clone)]
pub struct Users {
    dir: PathBuf,
}

impl Users {
    /// `users/` in the data folder the environment names.
    pub fn from_env() -> Result<Users, Error> {
        Ok(Users::at(folders::data_dir()?.join("users")))
    }

    pub fn at(dir: PathBuf) -> Users {
        Users { dir }
    }

    /// Takes user `name`'s disk for a VM, creating it (`size_bytes`, or the default) on first
    /// use and growing it with `tools` when `size_bytes` asks for more than it has.
    pub fn acquire(
        &self,
        name: &str,
        size_bytes: Option<u64>,
        tools: &DiskTools,
    ) -> Result<UserDisk, Error> {
        check_name(name)?;
        let dir = self.dir.join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("creating", &dir))?;
        let lock = lock(name, &dir)?;
        let disk = dir.join(DISK_FILE);
        match fs::metadata(&disk) {
            Ok(meta) => {
                if let Some(size) = size_bytes.filter(|&s| s != meta.len()) {
                    grow(name, &disk, meta.len(), size, tools)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let size = match size_bytes {
                    Some(size) => size,
                    None => default_size(),
                };
                volume::create_empty(&disk, size, "nodeos-user")?;
            }
            Err(e) => return Err(io_err("reading", &disk)(e)),
        }
        Ok(UserDisk { disk, _lock: lock })
    }

    /// Every user with a disk, by name.
    pub fn list(&self) -> Result<Vec<UserInfo>, Error> {
        let dir = &self.dir;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", dir)(e)),
        };
        let mut users = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("reading", dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if check_name(&name).is_err() {
                continue;
            }
            let Ok(meta) = fs::metadata(entry.path().join(DISK_FILE)) else {
                continue;
            };
            let in_use = matches!(lock(&name, &entry.path()), Err(Error::InUse(_)));
            users.push(UserInfo {
                name,
                size_bytes: meta.len(),
                used_bytes: meta.blocks() * 512,
                in_use,
                last_used: meta.modified().ok(),
            });
        }
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// Deletes user `name`'s environment, unless a VM has it.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let dir = self.dir.join(name);
        if !dir.join(DISK_FILE).exists() {
            return Err(Error::NoSuchUser(name.to_string()));
        }
        let _lock = lock(name, &dir)?;
        fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))
    }
}

/// A user's disk, locked for one VM for as long as this value lives.
#[derive(Debug)]
pub struct UserDisk {
    disk: PathBuf,
    _lock: Flock<File>,
}

impl UserDisk {
    pub fn path(&self) -> &Path {
        &self.disk
    }
}

/// One user's environment, as `users ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    /// The disk's size as the guest sees it.
    pub size_bytes: u64,
    /// What the disk takes on the host (it is sparse).
    pub used_bytes: u64,
    pub in_use: bool,
    pub last_used: Option<SystemTime>,
}

fn default_size() -> u64 {
    crate::vm_config::size_mib(DEFAULT_DISK_SIZE).expect("the default parses") << 20
}

/// Takes the user's lock without waiting: `InUse` when another VM has it.
fn lock(name: &str, dir: &Path) -> Result<Flock<File>, Error> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            Error::InUse(name.to_string())
        } else {
            io_err("locking", &path)(errno.into())
        }
    })
}

/// e2fsck and resize2fs, as they run on a user's disk: in a jail of their own (vmm::tool; the
/// VMM's, by its helper), or as they are where the VMM is not jailed either (`--no-jail`).
#[derive(Debug)]
pub struct DiskTools {
    jail: Option<(Jail, VmmProgram)>,
    e2fsck: PathBuf,
    resize2fs: PathBuf,
}

/// e2fsck's exit statuses when the file system is sound: 0, or 1 when it corrected something
/// (a journal recovered).
const E2FSCK_FINE: [i32; 2] = [0, 1];

/// e2fsprogs looks for the disk among the mounted file systems in `/proc/mounts` or
/// `/etc/mtab`, which the jail does not have: this tells it that none is mounted.
const NO_MTAB: (&str, &str) = ("EXT2FS_NO_MTAB_OK", "1");

impl DiskTools {
    /// The host's e2fsck and resize2fs, jailed as `jail` says (`None`: `--no-jail`).
    pub fn new(jail: Option<Jail>) -> Result<DiskTools, Error> {
        let jail = match jail {
            Some(jail) => Some((jail, vmm_program::program()?)),
            None => None,
        };
        Ok(DiskTools {
            jail,
            e2fsck: host_packages::ensure("e2fsck", "e2fsprogs")?,
            resize2fs: host_packages::ensure("resize2fs", "e2fsprogs")?,
        })
    }

    /// Runs `program` with `args` on `disk` (`what` it does, for errors); it must end with one
    /// of the `fine` exit statuses.
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        disk: &Path,
        fine: &[i32],
        what: String,
    ) -> Result<(), Error> {
        let tool = Tool {
            program,
            args,
            env: &[NO_MTAB],
            disk,
        };
        let jailed = self.jail.as_ref().map(|(jail, helper)| Jailed {
            jail: *jail,
            helper,
        });
        let name = program.file_name().unwrap_or_default().to_string_lossy();
        match tool.run(jailed) {
            Ok(output) => Ok(volume::check_tool(&output, &name, fine, what)?),
            Err(source) => Err(Error::Jailed { what, source }),
        }
    }
}

/// Grows the disk to `size` bytes (offline: no VM has it, we hold the lock).
fn grow(name: &str, disk: &Path, current: u64, size: u64, tools: &DiskTools) -> Result<(), Error> {
    if size < current {
        return Err(Error::Shrink {
            name: name.to_string(),
            requested_mib: size >> 20,
            current_mib: current >> 20,
        });
    }
    // resize2fs wants a freshly checked file system; -p repairs only what is safe. A disk a
    // VM had has a journal to recover (the VM is stopped, not shut down): e2fsck does it and
    // says so with status 1, "file system errors corrected".
    let what = format!("checking {} (e2fsck)", disk.display());
    tools.run(&tools.e2fsck, &["-f", "-p"], disk, &E2FSCK_FINE, what)?;
    File::options()
        .write(true)
        .open(disk)
        .and_then(|f| f.set_len(size))
        .map_err(io_err("growing", disk))?;
    let what = format!("growing {} (resize2fs)", disk.display());
    tools.run(&tools.resize2fs, &[], disk, &[0], what)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use vmm::jail::IdRange;

    #[test]
    fn names() {
        for good in ["alice", "a", "bob-2", "ci_runner", "0day"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            "Alice",
            "-x",
            "_x",
            "a/b",
            "..",
            ".",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(matches!(check_name(bad), Err(Error::BadName(_))), "{bad:?}");
        }
    }

    /// e2fsck and resize2fs jailed as whoever runs the tests would be.
    fn jailed_tools() -> DiskTools {
        DiskTools::new(Some(Jail::for_this_process(IdRange::default()))).unwrap()
    }

    /// Stands in for e2fsck and resize2fs: waits until the host has looked at it ("looked" at
    /// the start of the disk), then writes what it sees from inside into the disk, at 4 KiB
    /// for the first, 8 KiB for the second.
    const STAND_IN: &str = r#"#!/bin/sh
for disk; do :; done
until [ "$(head -c 6 "$disk")" = looked ]; do sleep 0.05; done
case $0 in *e2fsck) at=1 ;; *) at=2 ;; esac
passwd=unreadable; [ -r /etc/passwd ] && passwd=readable
data=invisible; [ -e DATA ] && data=visible
printf 'uid %s gid %s passwd %s data %s.' "$(id -u)" "$(id -g)" $passwd $data |
  dd of="$disk" bs=4096 seek=$at conv=notrunc 2>/dev/null
"#;

    /// What the host sees of the first process whose command line names `token`: its ids,
    /// whether it shares any of our namespaces, its root's entries, `NoNewPrivs`, `CapEff` and
    /// its file size limit.
    fn look_at(token: &str) -> Option<String> {
        let pid = fs::read_dir("/proc").ok()?.find_map(|e| {
            let pid = e.ok()?.file_name().into_string().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(token)
                .then_some(pid)
        })?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        let shared: Vec<&str> = ["mnt", "pid", "net", "ipc", "uts"]
            .into_iter()
            .filter(|ns| {
                let link = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
                link("self") == link(&pid)
            })
            .collect();
        let mut root: Vec<String> = fs::read_dir(format!("/proc/{pid}/root"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        root.sort();
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let file_size = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max file size"))
            .and_then(|l| l.split_whitespace().next().map(String::from))
            .unwrap_or_default();
        Some(format!(
            "uid {}; gid {}; shares {shared:?}; root {root:?}; no_new_privs {}; caps {}; \
             file size {file_size}",
            field("Uid:"),
            field("Gid:"),
            field("NoNewPrivs:"),
            field("CapEff:"),
        ))
    }

    /// Finding: e2fsck and resize2fs parsed the disk a guest wrote as nodeos-vm's own user
    /// (root, usually), with the whole host in sight. Now they run in a jail of their own: the
    /// host sees them in namespaces of their own, unprivileged, their root holding the disk and
    /// the host's programs; from inside they see neither the host's files nor the users'
    /// folder.
    #[test]
    fn disk_tools_run_jailed_and_see_only_the_disk() {
        let data = tempfile::tempdir().unwrap();
        let users = Users::at(data.path().join("users"));
        let tools = jailed_tools();
        drop(users.acquire("alice", Some(32 << 20), &tools).unwrap());
        let disk = data.path().join("users/alice").join(DISK_FILE);

        let bin = tempfile::tempdir().unwrap();
        fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let script = STAND_IN.replace("DATA", &data.path().display().to_string());
        let stand_in = |name: &str| {
            let path = bin.path().join(name);
            fs::write(&path, &script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let tools = DiskTools {
            e2fsck: stand_in("e2fsck"),
            resize2fs: stand_in("resize2fs"),
            ..tools
        };
        let token = bin.path().display().to_string();
        let host_side = {
            let disk = disk.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let seen = loop {
                    if let Some(seen) = look_at(&token) {
                        break seen;
                    }
                    assert!(started.elapsed().as_secs() < 60, "no stand-in ran");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                };
                let file = File::options().write(true).open(&disk).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&file, b"looked", 0).unwrap();
                seen
            })
        };
        let grown = users.acquire("alice", Some(48 << 20), &tools);
        let seen = host_side.join().unwrap();
        grown.unwrap();

        let (uid, gid) = if is_root() {
            (None, None)
        } else {
            // SAFETY: the id getters have no preconditions.
            unsafe { (Some(libc::getuid()), Some(libc::getgid())) }
        };
        let words: Vec<&str> = seen.split_whitespace().collect();
        let id = |at: usize| words[at].trim_end_matches(';').parse::<u32>().unwrap();
        let jail_uid = uid.unwrap_or_else(|| id(1));
        assert!(jail_uid != 0, "{seen}");
        if is_root() {
            assert!(jail_uid >= 100_000, "a uid of the jails' range: {seen}");
        }
        let jail_gid = gid.unwrap_or(jail_uid);
        assert!(
            seen.starts_with(&format!(
                "uid {jail_uid} {jail_uid} {jail_uid} {jail_uid}; \
                 gid {jail_gid} {jail_gid} {jail_gid} {jail_gid}; shares []; \
                 root [\"bin\", \"dev\", \"disk\", \"lib\", \"lib64\", \"sbin\", \"tmp\", \"usr\"]; \
                 no_new_privs 1; caps 0000000000000000; file size {}",
                32 << 20
            )),
            "{seen}"
        );
        // From inside: e2fsck's (the one the host looked at), then resize2fs's, each jail with
        // its own ids as root.
        let file = File::open(&disk).unwrap();
        for (at, looked_at) in [(4096, true), (8192, false)] {
            let mut report = [0; 80];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut report, at).unwrap();
            let report = String::from_utf8_lossy(&report);
            let report = report.split('.').next().unwrap();
            let words: Vec<&str> = report.split_whitespace().collect();
            let (inner_uid, inner_gid): (u32, u32) =
                (words[1].parse().unwrap(), words[3].parse().unwrap());
            if looked_at {
                assert_eq!((inner_uid, inner_gid), (jail_uid, jail_gid), "{report}");
            }
            assert_eq!(inner_uid, uid.unwrap_or(inner_uid), "{report}");
            assert!(
                inner_uid != 0 && (uid.is_some() || inner_uid >= 100_000),
                "{report}"
            );
            assert_eq!(inner_gid, gid.unwrap_or(inner_uid), "{report}");
            assert_eq!(
                words[4..],
                ["passwd", "unreadable", "data", "invisible"],
                "{report}"
            );
        }
        let meta = fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 48 << 20);
        // SAFETY: the id getters have no preconditions.
        let ours = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((meta.uid(), meta.gid()), ours, "given back");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// With the real mke2fs/e2fsck/resize2fs (jailed): create, lock (a second taker is
    /// refused), list, grow, refuse to shrink, remove.
    #[test]
    fn disk_life_cycle() {
        let data = tempfile::tempdir().unwrap();
        let users = Users::at(data.path().join("users"));
        let tools = jailed_tools();
        let disk = users.acquire("alice", Some(64 << 20), &tools).unwrap();
        assert_eq!(fs::metadata(disk.path()).unwrap().len(), 64 << 20);
        assert!(matches!(
            users.acquire("alice", None, &tools),
            Err(Error::InUse(name)) if name == "alice"
        ));
        assert!(matches!(users.remove("alice"), Err(Error::InUse(_))));
        let listed = users.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].in_use);
        assert_eq!(listed[0].size_bytes, 64 << 20);
        assert!(listed[0].used_bytes < 64 << 20, "the disk is sparse");
        drop(disk);

        assert!(!users.list().unwrap()[0].in_use);
        let before = fs::metadata(data.path().join("users/alice").join(DISK_FILE)).unwrap();
        let grown = users.acquire("alice", Some(96 << 20), &tools).unwrap();
        let after = fs::metadata(grown.path()).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode()),
            "lent to the tools' jail and given back"
        );
        assert_eq!(fs::metadata(grown.path()).unwrap().len(), 96 << 20);
        let dumpe2fs = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(grown.path())
            .output()
            .unwrap();
        let header = String::from_utf8_lossy(&dumpe2fs.stdout);
        assert!(header.contains("has_journal"), "{header}");
        let blocks: u64 = header
            .lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let block_size: u64 = header
            .lines()
            .find_map(|l| l.strip_prefix("Block size:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert_eq!(
            blocks * block_size,
            96 << 20,
            "resize2fs grew the file system"
        );
        drop(grown);
        assert!(matches!(
            users.acquire("alice", Some(32 << 20), &tools),
            Err(Error::Shrink { .. })
        ));

        assert!(matches!(users.remove("bob"), Err(Error::NoSuchUser(_))));
        users.remove("alice").unwrap();
        assert!(users.list().unwrap().is_empty());
    }
}
