//! Where running VMs keep their sockets and state: `nodeos-vm` in the user's runtime folder
//! (`dirs`: `$XDG_RUNTIME_DIR` when it is an absolute path), or `/tmp/nodeos-vm-<uid>` (mode
//! 0700) where there is none. Paths stay short: Unix socket paths are limited to 107 bytes.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the runtime folder {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the runtime folder {path} belongs to uid {owner}, not to us (uid {uid}); remove it or set XDG_RUNTIME_DIR")]
    NotOurs { path: PathBuf, owner: u32, uid: u32 },
}

/// The runtime folder of user `uid` (not created here).
fn path(uid: u32) -> PathBuf {
    dirs::runtime_dir()
        .map(|dir| dir.join("nodeos-vm"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/nodeos-vm-{uid}")))
}

/// The runtime folder, created (0700) when missing.
pub fn base() -> Result<PathBuf, Error> {
    let uid = nix::unistd::getuid().as_raw();
    let path = path(uid);
    let create = |source| Error::Create {
        path: path.clone(),
        source,
    };
    match fs::DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(create(e)),
    }
    // In a shared /tmp someone else may have made it first.
    let meta = fs::symlink_metadata(&path).map_err(create)?;
    if meta.uid() != uid || !meta.is_dir() {
        return Err(Error::NotOurs {
            path,
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(create)?;
    }
    Ok(path)
}

/// An empty, read-only file in `dir` (a VM's own folder, where its agent socket is): the
/// backing of the VM's unused disk slots (disks of capacity 0, which a snapshot's VMs fill on
/// restore). Gone with the folder.
pub fn empty_disk(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join("empty-disk");
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => return Ok(path),
        Ok(_) => fs::remove_file(&path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)?;
    Ok(path)
}

/// A fresh folder in the runtime folder, removed with everything in it when dropped.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, Error> {
    let base = base()?;
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(&base)
        .map_err(|source| Error::Create { path: base, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD_ENV: &str = "NODEOS_VM_RUNTIME_CHILD";

    /// Run alone in a child, which may change its own environment.
    #[test]
    fn child_resolves_the_runtime_folder() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        std::env::set_var("XDG_RUNTIME_DIR", "/run/user/7");
        assert_eq!(path(7), PathBuf::from("/run/user/7/nodeos-vm"));
        // None, empty or relative: there is no runtime folder.
        for value in [None, Some(""), Some("run")] {
            match value {
                Some(v) => std::env::set_var("XDG_RUNTIME_DIR", v),
                None => std::env::remove_var("XDG_RUNTIME_DIR"),
            }
            assert_eq!(path(7), PathBuf::from("/tmp/nodeos-vm-7"), "{value:?}");
        }
    }

    #[test]
    fn the_runtime_folder_follows_the_environment() {
        let out = crate::seccomp::tests::run_child(
            "runtime::tests::child_resolves_the_runtime_folder",
            (CHILD_ENV, "1"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_runtime_folder_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::seccomp::tests::run_child(
            "runtime::tests::child_makes_the_runtime_folder",
            (CHILD_ENV, dir.path().to_str().unwrap()),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = fs::metadata(dir.path().join("nodeos-vm")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
    }

    /// Run alone in a child: makes the runtime folder in the one `CHILD_ENV` names.
    #[test]
    fn child_makes_the_runtime_folder() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        assert_eq!(base().unwrap(), PathBuf::from(dir).join("nodeos-vm"));
    }
}
