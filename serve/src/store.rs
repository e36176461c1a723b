//! Deployed apps on disk, so that `serve` comes back with them after a restart:
//! `${NODEOS_VM_DATA:-${XDG_DATA_HOME:-~/.local/share}/nodeos-vm}/apps/<name>/` holds the
//! package as it was uploaded (`package.tgz`) and what was decided at deploy (`meta.json`).

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::instance::Exports;
use super::package::Options;

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
}

/// What a deployment was, beside its package.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub version: u64,
    pub deployed_at_ms: u64,
    pub options: Options,
    pub exports: Exports,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in the data folder the environment names.
    pub fn from_env() -> Result<Store, Error> {
        Ok(Store {
            dir: sandbox::folders::data_dir()?.join("apps"),
        })
    }

    /// Saves app `name`, replacing what was saved: each file whole or not at all.
    pub fn save(&self, name: &str, package: &[u8], meta: &Meta) -> Result<(), Error> {
        let dir = self.dir.join(name);
        let write = |file: &str, data: &[u8]| {
            let path = dir.join(file);
            let tmp = dir.join(format!("{file}.tmp"));
            fs::create_dir_all(&dir)
                .and_then(|()| fs::write(&tmp, data))
                .and_then(|()| fs::rename(&tmp, &path))
                .map_err(|source| Error::Write { path, source })
        };
        write("package.tgz", package)?;
        write(
            "meta.json",
            &serde_json::to_vec_pretty(meta).expect("meta serializes"),
        )
    }

    pub fn remove(&self, name: &str) {
        let dir = self.dir.join(name);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!("removing {}: {e}", dir.display());
        }
    }

    /// Every saved app: (name, package, meta). What cannot be read is skipped with a warning.
    pub fn load(&self) -> Vec<(String, Vec<u8>, Meta)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut apps = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
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
