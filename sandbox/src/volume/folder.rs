//! A folder held by its descriptor, and everything copy-back does in it. Every name is one
//! component, opened relative to the folder's descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` and `O_NOFOLLOW`; creates are `O_EXCL` (`mkdirat`, `symlinkat` fail on
//! an existing name too); entries are looked at with `AT_SYMLINK_NOFOLLOW` and removed with
//! `unlinkat`, folders emptied through their own descriptors. So nothing here follows a
//! symlink or reaches outside the folder it started from, whatever the names and whatever is
//! already there.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{self, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Folder,
    File,
    Symlink,
    /// A FIFO, socket or device: copy-back neither makes nor removes one.
    Other,
}

impl Kind {
    pub fn of(st: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => Kind::Folder,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// An open folder.
#[derive(Debug)]
pub struct Folder(OwnedFd);

impl Folder {
    /// Opens the folder at `path`, a path of the host's own (the volume's host folder, a
    /// scratch folder); its last component must not be a symlink.
    pub fn open(path: &Path) -> io::Result<Folder> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = fcntl::open(path, flags, Mode::empty())?;
        // SAFETY: open succeeded: a fresh descriptor nobody else owns.
        Ok(Folder(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens `name` below this folder: never through a symlink, never outside.
    fn open_beneath(&self, name: &OsStr, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = fcntl::openat2(self.0.as_raw_fd(), name, how)?;
        // SAFETY: openat2 succeeded: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The folder `name` in this one.
    pub fn folder(&self, name: &OsStr) -> io::Result<Folder> {
        self.open_beneath(name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map(Folder)
    }

    /// The regular file `name`, for reading, or for reading and writing.
    pub fn file(&self, name: &OsStr, write: bool) -> io::Result<File> {
        let access = if write {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        // O_NONBLOCK: a FIFO put there since it was looked at does not block the open.
        let fd = self.open_beneath(name, access | OFlag::O_NONBLOCK, Mode::empty())?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// Creates the regular file `name` (it must not exist), with `mode`, for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = self.open_beneath(name, flags, Mode::from_bits_truncate(mode))?;
        let file = File::from(fd);
        stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))?;
        Ok(file)
    }

    /// Creates the folder `name` (it must not exist) and opens it; its mode is set later.
    pub fn create_folder(&self, name: &OsStr) -> io::Result<Folder> {
        stat::mkdirat(Some(self.0.as_raw_fd()), name, Mode::S_IRWXU)?;
        self.folder(name)
    }

    /// Creates the symlink `name` (it must not exist) to `target`.
    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        Ok(unistd::symlinkat(target, Some(self.0.as_raw_fd()), name)?)
    }

    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        Ok(fcntl::readlinkat(Some(self.0.as_raw_fd()), name)?)
    }

    /// What `name` is (a symlink itself, not what it points to); `None` when nothing is there.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match stat::fstatat(Some(self.0.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The names in it, but `.` and `..`, sorted.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(Some(self.0.as_raw_fd()), ".", flags, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(std::os::unix::ffi::OsStringExt::from_vec(name));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes `name`, a folder with everything in it; a symlink is removed, not followed.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let Some(st) = self.stat(name)? else {
            return Ok(());
        };
        let how = if Kind::of(&st) == Kind::Folder {
            let folder = self.folder(name)?;
            for inner in folder.names()? {
                folder.remove(&inner)?;
            }
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        Ok(unistd::unlinkat(Some(self.0.as_raw_fd()), name, how)?)
    }

    /// This folder's permission bits.
    pub fn mode(&self) -> io::Result<u32> {
        Ok(stat::fstat(self.0.as_raw_fd())?.st_mode & 0o7777)
    }

    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        Ok(stat::fchmod(
            self.0.as_fd().as_raw_fd(),
            Mode::from_bits_truncate(mode),
        )?)
    }
}
