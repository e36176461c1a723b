//! Deployed apps on disk, so that `serve` comes back with them after a restart:
//! `${NODEOS_VM_DATA:-${XDG_DATA_HOME:-~/.local/share}/nodeos-vm}/apps/<name>/` holds the
//! package as it was uploaded (`package.tgz`) and what was decided at deploy (`meta.json`).
//! A deploy writes both into a staging folder beside it (`.staging-*`) while it has no lock,
//! and swaps that folder in with one rename under the lock: a reader (or a restart after a
//! crash) sees the old version or the new one, whole.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use serde::{Deserialize, Serialize};

use super::instance::Exports;
use super::package::Options;

/// How staging folders' names start (never an app's name: `package::check_name`).
const STAGING_PREFIX: &str = ".staging-";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    NoDataDir(#[from] sandbox::folders::NoDataDir),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("swapping the saved app {path} for its new version")]
    Swap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a deployment was, beside its package.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub version: u64,
    pub deployed_at_ms: u64,
    pub options: Options,
    pub exports: Exports,
}

#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A version of an app written aside (its package, not yet its meta), until `commit` makes it
/// the saved one; removed when dropped uncommitted.
pub struct Staged {
    name: String,
    apps: PathBuf,
    /// After `commit`, the folder of the version it replaced, removed with it.
    folder: tempfile::TempDir,
}

impl Store {
    /// The store in the data folder the environment names.
    pub fn from_env() -> Result<Store, Error> {
        Ok(Store {
            dir: sandbox::folders::data_dir()?.join("apps"),
        })
    }

    /// Writes `package` as app `name`'s next version, in a staging folder of the store.
    pub fn stage(&self, name: &str, package: &[u8]) -> Result<Staged, Error> {
        let write = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(write(&self.dir))?;
        let folder = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(write(&self.dir))?;
        let path = folder.path().join("package.tgz");
        fs::write(&path, package).map_err(write(&path))?;
        Ok(Staged {
            name: name.to_string(),
            apps: self.dir.clone(),
            folder,
        })
    }

    pub fn remove(&self, name: &str) {
        let dir = self.dir.join(name);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!("removing {}: {e}", dir.display());
        }
    }

    /// Every saved app: (name, package, meta). What cannot be read is skipped with a warning;
    /// what a deploy left staged when serve stopped is removed.
    pub fn load(&self) -> Vec<(String, Vec<u8>, Meta)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut apps = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if name.starts_with(STAGING_PREFIX) {
                if let Err(e) = fs::remove_dir_all(&dir) {
                    tracing::warn!("removing {}: {e}", dir.display());
                }
                continue;
            }
            let read = || -> Result<(Vec<u8>, Meta), String> {
                let package = fs::read(dir.join("package.tgz")).map_err(|e| e.to_string())?;
                let meta = fs::read(dir.join("meta.json")).map_err(|e| e.to_string())?;
                let meta = serde_json::from_slice(&meta).map_err(|e| e.to_string())?;
                Ok((package, meta))
            };
            match read() {
                Ok((package, meta)) => apps.push((name, package, meta)),
                Err(e) => eprintln!(
                    "nodeos-vm serve: skipping the saved app in {}: {e}",
                    dir.display()
                ),
            }
        }
        apps
    }
}

impl Staged {
    /// Makes this version, with `meta`, the saved one of its app: its meta written beside its
    /// package, then its folder swapped for the app's in one rename (`RENAME_EXCHANGE`; a plain
    /// rename for a first version). Where the file system cannot exchange (NFS, some FUSE
    /// file systems), the old folder is moved aside first: for a moment none is saved.
    pub fn commit(self, meta: &Meta) -> Result<(), Error> {
        let meta_path = self.folder.path().join("meta.json");
        fs::write(
            &meta_path,
            serde_json::to_vec_pretty(meta).expect("meta serializes"),
        )
        .map_err(|source| Error::Write {
            path: meta_path,
            source,
        })?;
        let target = self.apps.join(&self.name);
        let staged = self.folder.path();
        let swap = |source| Error::Swap {
            path: target.clone(),
            source,
        };
        match renameat2(None, staged, None, &target, RenameFlags::RENAME_EXCHANGE) {
            // `folder` now holds the old version, removed when it drops.
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) => fs::rename(staged, &target).map_err(swap),
            Err(Errno::EINVAL | Errno::ENOSYS) => {
                // The old version goes into a folder of its own, removed when it drops.
                let aside = tempfile::Builder::new()
                    .prefix(STAGING_PREFIX)
                    .tempdir_in(&self.apps)
                    .map_err(swap)?;
                let old = aside.path().join(&self.name);
                fs::rename(&target, &old).map_err(swap)?;
                fs::rename(staged, &target).map_err(|e| {
                    // The old version back: nothing changes on an error.
                    let _ = fs::rename(&old, &target);
                    swap(e)
                })
            }
            Err(errno) => Err(swap(io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u64) -> Meta {
        Meta {
            version,
            deployed_at_ms: 0,
            options: Options::default(),
            exports: Exports {
                handler: true,
                fetch: false,
            },
        }
    }

    #[test]
    fn a_staged_version_is_saved_only_when_committed_and_replaces_the_old_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            dir: dir.path().join("apps"),
        };
        // Left staged, as by a serve that was killed: not an app, and removed.
        std::mem::forget(store.stage("app", b"v0").unwrap());
        assert!(store.load().is_empty());
        store.stage("app", b"v1").unwrap().commit(&meta(1)).unwrap();
        let second = store.stage("app", b"v2").unwrap();
        drop(store.stage("app", b"refused").unwrap());
        second.commit(&meta(2)).unwrap();
        let apps = store.load();
        assert_eq!(apps.len(), 1);
        let (name, package, saved) = &apps[0];
        assert_eq!(
            (name.as_str(), package.as_slice(), saved.version),
            ("app", &b"v2"[..], 2)
        );
        // Nothing else is left: no staging folder, no old version.
        let names = |dir: &Path| {
            let mut names: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&store.dir), ["app"]);
        assert_eq!(names(&store.dir.join("app")), ["meta.json", "package.tgz"]);
    }
}
