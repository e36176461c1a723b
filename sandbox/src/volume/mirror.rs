//! The unpacked tree mirrored into the host folder: what differs is written, what is new
//! created, what the guest deleted removed. Everything goes through [`Folder`]s, one name at
//! a time, so the mirror never follows a symlink, in the host folder or in the scratch one,
//! and never writes outside the host folder:
//!
//! - an entry whose kind changed is removed (a symlink itself, never what it points to) and
//!   made again;
//! - files are compared in chunks and copied by their data extents (holes stay holes); a file
//!   with one link is rewritten in place (it keeps its owner), one with more links (a hard link
//!   to a file elsewhere, such as pnpm's store) is replaced, so the other names keep their
//!   contents and mode;
//! - modes come from the scratch tree (already masked); an unchanged entry whose mode agrees
//!   with it under [`MODE_MASK`] keeps its own (a group-writable file stays so);
//! - FIFOs, sockets and devices of the host folder are left alone, and so are the names in
//!   `keep` (refused symlinks) and the top's `lost+found`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;

use super::extents;
use super::folder::{Folder, Kind};
use super::unpack::MODE_MASK;

/// ext4 makes it; no file of the user's.
const LOST_FOUND: &str = "lost+found";

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", .path.display())]
pub struct MirrorError {
    what: &'static str,
    /// Relative to the host folder.
    pub path: PathBuf,
    #[source]
    source: io::Error,
}

/// Makes `host` hold what `scratch` holds, but for the paths in `keep` (relative, as bytes).
pub fn mirror(scratch: &Folder, host: &Folder, keep: &HashSet<Vec<u8>>) -> Result<(), MirrorError> {
    Mirror { keep }.folder(scratch, host, Path::new(""))
}

struct Mirror<'a> {
    keep: &'a HashSet<Vec<u8>>,
}

/// Adds what was being done, and to what, to an `io::Result`.
trait Doing<T> {
    fn doing(self, what: &'static str, path: &Path) -> Result<T, MirrorError>;
}

impl<T> Doing<T> for io::Result<T> {
    fn doing(self, what: &'static str, path: &Path) -> Result<T, MirrorError> {
        self.map_err(|source| MirrorError {
            what,
            path: path.to_path_buf(),
            source,
        })
    }
}

impl Mirror<'_> {
    fn folder(&self, src: &Folder, dst: &Folder, rel: &Path) -> Result<(), MirrorError> {
        let names = src.names().doing("listing the scratch copy of", rel)?;
        for name in &names {
            let path = rel.join(name);
            let st = src
                .stat(name)
                .doing("looking at the scratch copy of", &path)?
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
                .doing("looking at the scratch copy of", &path)?;
            let mut old = dst.stat(name).doing("looking at", &path)?;
            if let Some(o) = &old {
                if Kind::of(o) != Kind::of(&st) {
                    dst.remove(name).doing("removing", &path)?;
                    old = None;
                }
            }
            match Kind::of(&st) {
                Kind::Folder => self.subfolder(src, dst, name, &path, &st, old.is_none())?,
                Kind::File => file(src, dst, name, &path, &st, old.as_ref())?,
                Kind::Symlink => symlink(src, dst, name, &path, old.is_some())?,
                // The scratch tree has none: unpack makes folders, files and symlinks only.
                Kind::Other => {}
            }
        }
        for name in dst.names().doing("listing", rel)? {
            let path = rel.join(&name);
            if names.binary_search(&name).is_ok()
                || (rel.as_os_str().is_empty() && name == LOST_FOUND)
                || self.keep.contains(path.as_os_str().as_bytes())
            {
                continue;
            }
            match dst.stat(&name).doing("looking at", &path)? {
                Some(st) if Kind::of(&st) != Kind::Other => {
                    dst.remove(&name).doing("removing", &path)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn subfolder(
        &self,
        src: &Folder,
        dst: &Folder,
        name: &OsStr,
        path: &Path,
        st: &FileStat,
        new: bool,
    ) -> Result<(), MirrorError> {
        let to = if new {
            dst.create_folder(name).doing("creating", path)?
        } else {
            dst.folder(name).doing("opening", path)?
        };
        let from = src
            .folder(name)
            .doing("opening the scratch copy of", path)?;
        self.folder(&from, &to, path)?;
        let mode = st.st_mode & 0o7777;
        let old = to.mode().doing("looking at", path)?;
        if new || old & MODE_MASK != mode {
            to.set_mode(mode).doing("setting the mode of", path)?;
        }
        Ok(())
    }
}

fn file(
    src: &Folder,
    dst: &Folder,
    name: &OsStr,
    path: &Path,
    st: &FileStat,
    old: Option<&FileStat>,
) -> Result<(), MirrorError> {
    let from = src
        .file(name, false)
        .doing("opening the scratch copy of", path)?;
    let size = st.st_size as u64;
    let mode = st.st_mode & 0o7777;
    let permissions = std::fs::Permissions::from_mode(mode);
    if let Some(old) = old {
        let in_place = old.st_nlink == 1;
        let to = dst.file(name, in_place).doing("opening", path)?;
        let same = old.st_size as u64 == size
            && extents::same(&from, &to, size).doing("comparing", path)?;
        let same_mode = old.st_mode & MODE_MASK == mode;
        match (same, same_mode, in_place) {
            (true, true, _) => return Ok(()),
            (true, false, true) => {
                return to
                    .set_permissions(permissions)
                    .doing("setting the mode of", path)
            }
            (false, _, true) => {
                extents::copy(&from, &to, size).doing("writing", path)?;
                return to
                    .set_permissions(permissions)
                    .doing("setting the mode of", path);
            }
            // Linked elsewhere too: a new file of its own, the other names untouched.
            (_, _, false) => dst.remove(name).doing("replacing", path)?,
        }
    }
    let to = dst.create_file(name, mode).doing("creating", path)?;
    extents::copy(&from, &to, size).doing("writing", path)
}

fn symlink(
    src: &Folder,
    dst: &Folder,
    name: &OsStr,
    path: &Path,
    exists: bool,
) -> Result<(), MirrorError> {
    let target = src
        .read_link(name)
        .doing("reading the scratch copy of", path)?;
    if exists {
        if dst.read_link(name).doing("reading", path)? == target {
            return Ok(());
        }
        dst.remove(name).doing("replacing", path)?;
    }
    dst.symlink(&target, name).doing("creating", path)
}

#[cfg(test)]
mod tests;
