//! Where running VMs keep their sockets and state: `$XDG_RUNTIME_DIR/nodeos-vm`, or
//! `/tmp/nodeos-vm-<uid>` (mode 0700) where there is no runtime dir. Paths stay short: Unix
//! socket paths are limited to 107 bytes.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

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

/// The runtime folder, created (0700) when missing.
pub fn base() -> Result<PathBuf, Error> {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let path = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("nodeos-vm"),
        _ => PathBuf::from(format!("/tmp/nodeos-vm-{uid}")),
    };
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

/// A fresh folder in the runtime folder, removed with everything in it when dropped.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, Error> {
    let base = base()?;
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(&base)
        .map_err(|source| Error::Create { path: base, source })
}
