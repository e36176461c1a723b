//! A `:rw` volume's tree as the guest sends it (a [`contract::tree`] stream), unpacked into a
//! fresh scratch folder, strictly. The host never reads the file system the guest wrote; what
//! it gets instead is checked here entry by entry:
//!
//! - paths are normal components only (the decoder refuses `..`, absolute paths, NUL, ...);
//! - each entry's folder is a folder the stream created, still being filled (depth first),
//!   held by its descriptor; every create is one name relative to it ([`Folder`]: `openat2`
//!   with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW`, `O_EXCL`);
//! - no name twice (a refused symlink's name included);
//! - modes masked with [`MODE_MASK`] (no setuid, setgid or sticky bit, nothing group- or
//!   world-writable), the owner keeping read (and search on folders) so copy-back can read
//!   them;
//! - a symlink only where its target, resolved from the link's folder, stays inside the
//!   volume: relative, and its `..` components leading and fewer than the folders above the
//!   link; others are refused ([`Refused`]), not made;
//! - files sized with `ftruncate` and their data written where it goes: holes stay holes;
//! - at most [`Budget::bytes`] of file data and [`Budget::entries`] entries (what the volume's
//!   disk held), within [`Budget::time`].

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use contract::tree::{Record, TreeDecoder, TreeError, TreePath};

use super::folder::Folder;
use crate::agent;

/// Permission bits a copied-back entry may have at most.
pub const MODE_MASK: u32 = 0o755;

/// What one volume's copy-back may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of file data: the size of the volume's disk.
    pub bytes: u64,
    /// Folders, files and symlinks: as many as the volume's disk has inodes, at most.
    pub entries: u64,
    /// How long the guest may take to send its tree.
    pub time: Duration,
}

/// Where a volume's tree comes from: the guest agent ([`agent::TreeExport`]), or a test.
pub trait TreeSource {
    /// The next chunk of the stream; `None` once it is complete. Gives up at `deadline`
    /// ([`agent::Error::Deadline`]).
    fn next_chunk(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, agent::Error>;
}

/// A symlink that was not made: its target leaves the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub path: TreePath,
    pub target: Vec<u8>,
    pub why: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("asking the guest agent for it: {0}")]
    Agent(#[source] agent::Error),
    #[error("the guest sent a malformed tree: {0}")]
    Stream(#[from] TreeError),
    #[error(
        "the guest did not send its tree within {} s; the time allowed ran out",
        .limit.as_secs()
    )]
    TooSlow { limit: Duration },
    #[error(
        "the guest sent more than {max} bytes of file data, more than the volume's disk holds"
    )]
    TooManyBytes { max: u64 },
    #[error("the guest sent more than {max} entries, more than the volume's disk holds")]
    TooManyEntries { max: u64 },
    #[error("the guest sent {path} twice")]
    Duplicate { path: TreePath },
    #[error(
        "the guest sent {path} outside a folder it had sent (a folder's entries must follow it)"
    )]
    NoFolder { path: TreePath },
    #[error("{what} {path} in the scratch folder: {source}")]
    Write {
        what: &'static str,
        path: TreePath,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the stream `source` sends into the empty folder `scratch`; the symlinks it refused.
pub fn unpack(
    source: &mut dyn TreeSource,
    scratch: &Folder,
    budget: &Budget,
) -> Result<Vec<Refused>, UnpackError> {
    let deadline = Instant::now() + budget.time;
    let too_slow = UnpackError::TooSlow { limit: budget.time };
    let mut decoder = TreeDecoder::new();
    let mut unpacker = Unpacker {
        root: scratch,
        budget,
        open: Vec::new(),
        file: None,
        refused: Vec::new(),
        refused_paths: HashSet::new(),
        entries: 0,
        bytes: 0,
    };
    loop {
        let chunk = match source.next_chunk(deadline) {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(agent::Error::Deadline) => return Err(too_slow),
            Err(e) => return Err(UnpackError::Agent(e)),
        };
        if Instant::now() >= deadline {
            return Err(too_slow);
        }
        decoder.push(&chunk)?;
        while let Some(record) = decoder.next_record()? {
            unpacker.record(record)?;
        }
    }
    decoder.finish()?;
    unpacker.close_folders(None)?;
    Ok(unpacker.refused)
}

struct Unpacker<'a> {
    root: &'a Folder,
    budget: &'a Budget,
    /// The folders being filled, outermost first, with the mode each gets once full.
    open: Vec<(TreePath, Folder, u32)>,
    /// The file `Data` records go to.
    file: Option<(TreePath, File)>,
    refused: Vec<Refused>,
    refused_paths: HashSet<TreePath>,
    entries: u64,
    bytes: u64,
}

impl Unpacker<'_> {
    fn record(&mut self, record: Record<'_>) -> Result<(), UnpackError> {
        let path = match &record {
            Record::Data { offset, data } => return self.data(*offset, data),
            Record::End => return Ok(()),
            Record::Dir { path, .. } | Record::File { path, .. } | Record::Symlink { path, .. } => {
                path.clone()
            }
        };
        self.file = None;
        self.entries += 1;
        if self.entries > self.budget.entries {
            return Err(UnpackError::TooManyEntries {
                max: self.budget.entries,
            });
        }
        if self.refused_paths.contains(&path) {
            return Err(UnpackError::Duplicate { path });
        }
        let (folder, name) = path.split_last();
        self.close_folders(folder)?;
        let parent = match (folder, self.open.last()) {
            (None, _) => self.root,
            (Some(_), Some((_, parent, _))) => parent,
            (Some(_), None) => return Err(UnpackError::NoFolder { path }),
        };
        let name = OsStr::from_bytes(name);
        let write = |what| {
            let path = path.clone();
            move |source: io::Error| match source.raw_os_error() {
                Some(libc::EEXIST) => UnpackError::Duplicate { path },
                _ => UnpackError::Write { what, path, source },
            }
        };
        match record {
            Record::Dir { mode, .. } => {
                let folder = parent
                    .create_folder(name)
                    .map_err(write("creating the folder"))?;
                self.open
                    .push((path.clone(), folder, mode & MODE_MASK | 0o500));
            }
            Record::File { mode, size, .. } => {
                let file = parent
                    .create_file(name, mode & MODE_MASK | 0o400)
                    .map_err(write("creating the file"))?;
                file.set_len(size)
                    .map_err(write("setting the size of the file"))?;
                self.file = Some((path.clone(), file));
            }
            Record::Symlink { target, .. } => match stays_inside(&path, target) {
                Ok(()) => parent
                    .symlink(OsStr::from_bytes(target), name)
                    .map_err(write("creating the symlink"))?,
                Err(why) => {
                    if parent.stat(name).map_err(write("looking at"))?.is_some() {
                        return Err(UnpackError::Duplicate { path });
                    }
                    self.refused_paths.insert(path.clone());
                    self.refused.push(Refused {
                        path: path.clone(),
                        target: target.to_vec(),
                        why,
                    });
                }
            },
            Record::Data { .. } | Record::End => {}
        }
        Ok(())
    }

    fn data(&mut self, offset: u64, data: &[u8]) -> Result<(), UnpackError> {
        self.bytes += data.len() as u64;
        if self.bytes > self.budget.bytes {
            return Err(UnpackError::TooManyBytes {
                max: self.budget.bytes,
            });
        }
        // The decoder lets `Data` follow only a `File`, which set `file`.
        let Some((path, file)) = &self.file else {
            return Ok(());
        };
        file.write_all_at(data, offset)
            .map_err(|source| UnpackError::Write {
                what: "writing",
                path: path.clone(),
                source,
            })
    }

    /// Gives its mode to each folder being filled that is not `folder` or above it: the stream
    /// has left it for good. `None`: every folder.
    fn close_folders(&mut self, folder: Option<&[u8]>) -> Result<(), UnpackError> {
        while let Some((path, _, _)) = self.open.last() {
            if Some(path.as_bytes()) == folder {
                break;
            }
            let (path, folder, mode) = self.open.pop().expect("a folder is open");
            folder.set_mode(mode).map_err(|source| UnpackError::Write {
                what: "setting the mode of",
                path,
                source,
            })?;
        }
        Ok(())
    }
}

/// Whether the symlink `link` to `target` stays inside the volume, wherever it is resolved
/// from: its target must be relative, and its `..` components must all come first and be
/// fewer than the folders above the link (after a name, a `..` could climb back through a
/// symlink).
pub fn stays_inside(link: &TreePath, target: &[u8]) -> Result<(), &'static str> {
    if target.starts_with(b"/") {
        return Err("is absolute");
    }
    let mut depth = link.components().count() - 1;
    let mut named = false;
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if named => return Err("has '..' after a name"),
            b".." if depth == 0 => return Err("leads out of the volume"),
            b".." => depth -= 1,
            _ => named = true,
        }
    }
    Ok(())
}
