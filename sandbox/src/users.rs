//! User environments: each user's writable layer is an ext4 disk image of their own,
//! `<data>/users/<name>/disk.ext4`, attached as the overlay's upper layer (`--user NAME`).
//! Whatever the user writes in `/` lands there and outlives the VM; no other user's VM ever
//! sees it. A lock (`flock` on `<name>/lock`, held while a VM has the disk) keeps the disk from
//! being mounted twice read-write.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use crate::folders::{self, NoDataDir};
use crate::volume;

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
    /// use and growing it when `size_bytes` asks for more than it has.
    pub fn acquire(&self, name: &str, size_bytes: Option<u64>) -> Result<UserDisk, Error> {
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
                    grow(name, &disk, meta.len(), size)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let size = match size_bytes {
                    Some(size) => size,
                    None => default_size(),
                };
                create(&disk, size)?;
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

/// A fresh ext4 file system with a journal (so a VM killed mid-write comes back consistent).
fn create(disk: &Path, size_bytes: u64) -> Result<(), Error> {
    let part = disk.with_extension("ext4.part");
    let file = File::create(&part).map_err(io_err("creating", &part))?;
    file.set_len(size_bytes).map_err(io_err("sizing", &part))?;
    drop(file);
    let mut mke2fs = Command::new("mke2fs");
    mke2fs
        .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", "nodeos-user"])
        // The file is new and sparse, so its unwritten blocks already read as zeros.
        .args([
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        ])
        .arg(&part);
    volume::run_tool(mke2fs, format!("creating {} (mke2fs)", disk.display()))?;
    fs::rename(&part, disk).map_err(io_err("renaming", &part))
}

/// Grows the disk to `size` bytes (offline: no VM has it, we hold the lock).
fn grow(name: &str, disk: &Path, current: u64, size: u64) -> Result<(), Error> {
    if size < current {
        return Err(Error::Shrink {
            name: name.to_string(),
            requested_mib: size >> 20,
            current_mib: current >> 20,
        });
    }
    // resize2fs wants a freshly checked file system; -p repairs only what is safe.
    let mut e2fsck = Command::new("e2fsck");
    e2fsck.args(["-f", "-p"]).arg(disk);
    volume::run_tool(e2fsck, format!("checking {} (e2fsck)", disk.display()))?;
    File::options()
        .write(true)
        .open(disk)
        .and_then(|f| f.set_len(size))
        .map_err(io_err("growing", disk))?;
    let mut resize2fs = Command::new("resize2fs");
    resize2fs.arg(disk);
    volume::run_tool(resize2fs, format!("growing {} (resize2fs)", disk.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// With the real mke2fs/e2fsck/resize2fs: create, lock (a second taker is refused), list,
    /// grow, refuse to shrink, remove.
    #[test]
    fn disk_life_cycle() {
        let data = tempfile::tempdir().unwrap();
        let users = Users::at(data.path().join("users"));
        let disk = users.acquire("alice", Some(64 << 20)).unwrap();
        assert_eq!(fs::metadata(disk.path()).unwrap().len(), 64 << 20);
        assert!(matches!(
            users.acquire("alice", None),
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
        let grown = users.acquire("alice", Some(96 << 20)).unwrap();
        assert_eq!(fs::metadata(grown.path()).unwrap().len(), 96 << 20);
        let dumpe2fs = Command::new("dumpe2fs")
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
            users.acquire("alice", Some(32 << 20)),
            Err(Error::Shrink { .. })
        ));

        assert!(matches!(users.remove("bob"), Err(Error::NoSuchUser(_))));
        users.remove("alice").unwrap();
        assert!(users.list().unwrap().is_empty());
    }
}
