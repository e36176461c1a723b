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
//!   `keep` (refused symlinks);
//! - unless asked to copy them ([`Git::Copied`]), nothing named `.git` (in any case: a folder,
//!   a file, a symlink, at any depth) is created, changed or removed, nor anything under it:
//!   git runs what a repository's hooks and config name on the host. What the guest's tree
//!   would have changed there is counted ([`GitRefused`]) and left as it was; a folder the
//!   guest removed or replaced keeps the `.git` it holds (and what else is gone, is gone).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;
use std::fs::File;

use super::extents;
use super::folder::{Folder, Kind};
use super::unpack::MODE_MASK;

/// A git repository's folder (or, in a worktree or submodule, a file naming it).
const GIT: &str = ".git";
/// How many of the refused `.git` paths are kept, to be named.
const GIT_PATHS_NAMED: usize = 5;

/// Whether entries named `.git` are the guest's to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Git {
    /// Left as they are in the host folder (the default).
    Protected,
    /// Mirrored like anything else (`-v HOST:GUEST:rw,git`).
    Copied,
}

/// The changes under `.git` that were not made: how many, and the first few (relative to the
/// host folder).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GitRefused {
    pub count: u64,
    pub first: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", .path.display())]
pub struct MirrorError {
    what: &'static str,
    /// Relative to the host folder.
    pub path: PathBuf,
    #[source]
    source: io::Error,
}

/// Makes `host` hold what `scratch` holds, but for the paths in `keep` (relative, as bytes)
/// and, unless `git` says they are copied, `.git` entries; returns the changes under `.git`
/// it did not make.
pub fn mirror(
    scratch: &Folder,
    host: &Folder,
    keep: &HashSet<Vec<u8>>,
    git: Git,
) -> Result<GitRefused, MirrorError> {
    let mut mirror = Mirror {
        keep,
        git,
        refused: GitRefused::default(),
    };
    mirror.folder(scratch, host, Path::new(""))?;
    Ok(mirror.refused)
}

struct Mirror<'a> {
    keep: &'a HashSet<Vec<u8>>,
    git: Git,
    refused: GitRefused,
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
    fn folder(&mut self, src: &Folder, dst: &Folder, rel: &Path) -> Result<(), MirrorError> {
        let names = src.names().doing("listing the scratch copy of", rel)?;
        for name in &names {
            let path = rel.join(name);
            if self.protects(name) {
                self.refuse(Some(src), dst, name, &path)?;
                continue;
            }
            let st = src
                .stat(name)
                .doing("looking at the scratch copy of", &path)?
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
                .doing("looking at the scratch copy of", &path)?;
            let mut old = dst.stat(name).doing("looking at", &path)?;
            if let Some(o) = &old {
                if Kind::of(o) != Kind::of(&st) {
                    if !self.remove(dst, name, &path)? {
                        // A `.git` in it stays: the guest's entry cannot take its place.
                        continue;
                    }
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
            if names.binary_search(&name).is_ok() || self.keep.contains(path.as_os_str().as_bytes())
            {
                continue;
            }
            if self.protects(&name) {
                self.refuse(None, dst, &name, &path)?;
                continue;
            }
            match dst.stat(&name).doing("looking at", &path)? {
                Some(st) if Kind::of(&st) != Kind::Other => {
                    self.remove(dst, &name, &path)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether `name` is left as the host folder has it.
    fn protects(&self, name: &OsStr) -> bool {
        self.git == Git::Protected && name.as_bytes().eq_ignore_ascii_case(GIT.as_bytes())
    }

    /// Removes `name` from `dst`, but for the `.git` entries it holds, which stay with the
    /// folders above them (each a refused change). Whether it is gone.
    fn remove(&mut self, dst: &Folder, name: &OsStr, path: &Path) -> Result<bool, MirrorError> {
        let is_folder = dst
            .stat(name)
            .doing("looking at", path)?
            .is_some_and(|st| Kind::of(&st) == Kind::Folder);
        if self.git == Git::Copied || !is_folder {
            dst.remove(name).doing("removing", path)?;
            return Ok(true);
        }
        let folder = dst.folder(name).doing("opening", path)?;
        let mut kept = false;
        for inner in folder.names().doing("listing", path)? {
            let inner_path = path.join(&inner);
            if self.protects(&inner) {
                self.refuse(None, &folder, &inner, &inner_path)?;
                kept = true;
            } else if !self.remove(&folder, &inner, &inner_path)? {
                kept = true;
            }
        }
        if !kept {
            dst.remove(name).doing("removing", path)?;
        }
        Ok(!kept)
    }

    /// Counts, without making any, the changes the guest's `name` (in `src`; `None`: the guest
    /// has none) would make to the host folder's (in `dst`), at `path` and below.
    fn refuse(
        &mut self,
        src: Option<&Folder>,
        dst: &Folder,
        name: &OsStr,
        path: &Path,
    ) -> Result<(), MirrorError> {
        let new = match src {
            Some(src) => src
                .stat(name)
                .doing("looking at the scratch copy of", path)?,
            None => None,
        };
        let old = dst.stat(name).doing("looking at", path)?;
        let changed = match (src.zip(new), old) {
            (None, None) => false,
            (Some((src, new)), Some(old)) if Kind::of(&new) == Kind::of(&old) => {
                match Kind::of(&new) {
                    Kind::Folder => {
                        let from = src
                            .folder(name)
                            .doing("opening the scratch copy of", path)?;
                        let to = dst.folder(name).doing("opening", path)?;
                        let mut names = from.names().doing("listing the scratch copy of", path)?;
                        names.extend(to.names().doing("listing", path)?);
                        names.sort();
                        names.dedup();
                        for inner in names {
                            self.refuse(Some(&from), &to, &inner, &path.join(&inner))?;
                        }
                        old.st_mode & MODE_MASK != new.st_mode & 0o7777
                    }
                    Kind::File => {
                        let from = src
                            .file(name, false)
                            .doing("opening the scratch copy of", path)?;
                        let to = dst.file(name, false).doing("opening", path)?;
                        unchanged(&from, &to, &new, &old).doing("comparing", path)? != (true, true)
                    }
                    Kind::Symlink => {
                        src.read_link(name)
                            .doing("reading the scratch copy of", path)?
                            != dst.read_link(name).doing("reading", path)?
                    }
                    // The scratch tree has none.
                    Kind::Other => false,
                }
            }
            _ => true,
        };
        if changed {
            self.refused.count += 1;
            if self.refused.first.len() < GIT_PATHS_NAMED {
                self.refused.first.push(path.to_path_buf());
            }
        }
        Ok(())
    }

    fn subfolder(
        &mut self,
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
        let (same, same_mode) = unchanged(&from, &to, st, old).doing("comparing", path)?;
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

/// Whether the host's file `to` (`old`) holds the same bytes as the scratch file `from`
/// (`new`), and whether its mode agrees with the scratch one under [`MODE_MASK`].
fn unchanged(from: &File, to: &File, new: &FileStat, old: &FileStat) -> io::Result<(bool, bool)> {
    let size = new.st_size as u64;
    let same = old.st_size as u64 == size && extents::same(from, to, size)?;
    Ok((same, old.st_mode & MODE_MASK == new.st_mode & 0o7777))
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
