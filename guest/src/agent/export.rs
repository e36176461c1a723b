//! `Export`: the tree of a guest folder (a `:rw` volume's mount point), sent to the host as a
//! [`contract::tree`] stream, so that the host never reads the file system the guest wrote
//! (docs/security.md).
//!
//! The walk goes from folder descriptor to folder descriptor and never follows a symlink
//! (dir.rs); a folder comes before what is in it, names in byte order. Regular files travel as
//! their data extents (`SEEK_DATA`/`SEEK_HOLE`): a sparse file sends its data only. FIFOs,
//! sockets and devices are left out (the host packs a volume without ext4's `lost+found`, so
//! a `lost+found` here is the user's). An entry that disappears during the walk is left out;
//! one that changes kind is an error.

mod dir;

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use contract::frame::MAX_CHUNK;
use contract::tree::{Record, TreeEncoder, TreePath, MAX_DATA};

use crate::error::{Context, Error};
use dir::Dir;

/// Why an export stopped.
#[derive(Debug)]
pub enum Failure {
    /// The tree could not be read: the host is told why.
    Read(Error),
    /// A chunk could not be sent: the host has gone.
    Send(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Read(e)
    }
}

/// Walks `root` and hands its stream to `send`, in chunks of at most [`MAX_CHUNK`] bytes.
pub fn export(root: &Path, send: &mut dyn FnMut(Vec<u8>) -> io::Result<()>) -> Result<(), Failure> {
    let dir = Dir::open(root).context(|| format!("open {}", root.display()))?;
    let mut walk = Walk {
        out: TreeEncoder::new(),
        send,
        buf: vec![0; MAX_DATA],
        root,
    };
    walk.dir(&dir, None)?;
    walk.out.put(&Record::End);
    walk.send_while(1)
}

struct Walk<'a> {
    out: TreeEncoder,
    send: &'a mut dyn FnMut(Vec<u8>) -> io::Result<()>,
    /// One data record's bytes.
    buf: Vec<u8>,
    root: &'a Path,
}

impl Walk<'_> {
    fn put(&mut self, record: &Record<'_>) -> Result<(), Failure> {
        self.out.put(record);
        self.send_while(MAX_CHUNK)
    }

    /// Sends chunks while at least `pending` bytes wait.
    fn send_while(&mut self, pending: usize) -> Result<(), Failure> {
        while self.out.pending() >= pending {
            (self.send)(self.out.take(MAX_CHUNK)).map_err(Failure::Send)?;
        }
        Ok(())
    }

    /// `path` as the guest names it, for error messages.
    fn shown(&self, path: &TreePath) -> String {
        format!("{}/{path}", self.root.display())
    }

    /// Sends what is in `dir`, the folder at `path` (the root when `None`).
    fn dir(&mut self, dir: &Dir, path: Option<&TreePath>) -> Result<(), Failure> {
        let mut names = dir.names().context(|| match path {
            Some(path) => format!("list {}", self.shown(path)),
            None => format!("list {}", self.root.display()),
        })?;
        names.sort();
        for name in names {
            let child = TreePath::child(path, name.to_bytes())
                .map_err(|e| Error::invalid(format!("{}/...", self.root.display()), e))?;
            self.entry(dir, &name, child)?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &Dir, name: &CStr, path: TreePath) -> Result<(), Failure> {
        let st = match dir.stat(name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            st => st.context(|| format!("stat {}", self.shown(&path)))?,
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let (sub, st) = dir
                    .open_dir(name)
                    .context(|| format!("open {}", self.shown(&path)))?;
                self.put(&Record::Dir {
                    path: path.clone(),
                    mode: st.st_mode & 0o7777,
                })?;
                self.dir(&sub, Some(&path))
            }
            libc::S_IFREG => {
                let (file, st) = dir
                    .open_file(name)
                    .context(|| format!("open {}", self.shown(&path)))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    let shown = self.shown(&path);
                    return Err(Error::invalid(shown, "stopped being a regular file").into());
                }
                self.file(file.as_fd(), path, &st)
            }
            libc::S_IFLNK => {
                let target = dir
                    .read_link(name)
                    .context(|| format!("read the symlink {}", self.shown(&path)))?;
                self.put(&Record::Symlink {
                    path,
                    target: &target,
                })
            }
            _ => Ok(()),
        }
    }

    /// A regular file: its record, then its data extents up to the size it had when opened.
    fn file(&mut self, fd: BorrowedFd<'_>, path: TreePath, st: &libc::stat) -> Result<(), Failure> {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let shown = self.shown(&path);
        self.put(&Record::File {
            path,
            mode: st.st_mode & 0o7777,
            size,
        })?;
        let what = || format!("read {shown}");
        let mut at = 0;
        while at < size {
            let Some(data) = dir::seek(fd, at, libc::SEEK_DATA).context(what)? else {
                break;
            };
            if data >= size {
                break;
            }
            let hole = dir::seek(fd, data, libc::SEEK_HOLE)
                .context(what)?
                .unwrap_or(size)
                .min(size);
            let mut pos = data;
            while pos < hole {
                let want = (hole - pos).min(MAX_DATA as u64) as usize;
                let n = dir::pread(fd, &mut self.buf[..want], pos).context(what)?;
                if n == 0 {
                    // It shrank while it was read: what is there has been sent.
                    return Ok(());
                }
                self.out.put(&Record::Data {
                    offset: pos,
                    data: &self.buf[..n],
                });
                self.send_while(MAX_CHUNK)?;
                pos += n as u64;
            }
            // A hole that moved under us must not keep the walk in place.
            at = hole.max(data + 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
