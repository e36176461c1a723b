//! What `PUT /apps/{name}` takes: the app's name, its options (query parameters) and its
//! package, a gzipped tarball as `npm pack` makes it (every file under one top folder,
//! `package/`), unpacked with bounds and without leaving the target folder.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use sandbox::vm_config;

/// Longest app name.
const MAX_NAME: usize = 63;
/// Most bytes and files a package may unpack to.
const MAX_UNPACKED_BYTES: u64 = 512 << 20;
const MAX_FILES: usize = 100_000;
/// Most instances of one app, and most calls waiting for one.
const MAX_INSTANCES: usize = 64;
const MAX_QUEUE: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("app name {0:?}: use 1 to {MAX_NAME} letters, digits, '-' or '_', starting with a letter or digit")]
    Name(String),
    #[error("query parameter {name}={value:?}: {why}")]
    Option {
        name: String,
        value: String,
        why: String,
    },
    #[error("unknown query parameter {0:?} (known: memory, cpus, timeout, min, max, idle, queue)")]
    UnknownOption(String),
    #[error("the package is not a gzipped tarball (npm pack makes one)")]
    NotTarball(#[source] io::Error),
    #[error("the package entry {path:?} leaves the package folder")]
    Escapes { path: String },
    #[error("the package unpacks to more than {} MiB or {MAX_FILES} files", MAX_UNPACKED_BYTES >> 20)]
    TooLarge,
    #[error("the package has no package.json in its top folder (as npm pack makes it: package/package.json)")]
    NoManifest,
    #[error("package.json: {0}")]
    Manifest(String),
    #[error("unpacking the package into {path}")]
    Unpack {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The client's mistake, not ours.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::Unpack { .. })
    }
}

/// Checks an app name: it becomes a folder name and a metrics label.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Name(name.to_string()))
    }
}

/// How an app's instances run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub memory_mib: u32,
    pub cpus: u8,
    /// Longest a call may run before its instance is replaced.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Instances kept warm even when idle.
    pub min: usize,
    pub max: usize,
    /// How long an instance beyond `min` may stay idle before it is stopped.
    #[serde(with = "millis")]
    pub idle: Duration,
    /// Most calls waiting for an instance; beyond that, 429.
    pub queue: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            memory_mib: 256,
            cpus: 1,
            timeout: Duration::from_secs(30),
            min: 0,
            max: 2,
            idle: Duration::from_secs(300),
            queue: 64,
        }
    }
}

impl Options {
    /// The defaults with the query's `memory`, `cpus`, `timeout`, `min`, `max`, `idle` and
    /// `queue` applied.
    pub fn from_query(query: &HashMap<String, String>) -> Result<Options, Error> {
        let mut o = Options::default();
        for (name, value) in query {
            let bad = |why: String| Error::Option {
                name: name.clone(),
                value: value.clone(),
                why,
            };
            let count = |max: usize| -> Result<usize, Error> {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| bad(format!("expected a whole number from 0 to {max}")))
            };
            match name.as_str() {
                "memory" => {
                    o.memory_mib = vm_config::memory_mib(value).map_err(|e| bad(e.to_string()))?
                }
                "cpus" => o.cpus = vm_config::cpus(value).map_err(|e| bad(e.to_string()))?,
                "timeout" => o.timeout = vm_config::duration(value).map_err(bad)?,
                "idle" => o.idle = vm_config::duration(value).map_err(bad)?,
                "min" => o.min = count(MAX_INSTANCES)?,
                "max" => o.max = count(MAX_INSTANCES)?,
                "queue" => o.queue = count(MAX_QUEUE)?,
                _ => return Err(Error::UnknownOption(name.clone())),
            }
        }
        if o.max == 0 || o.min > o.max {
            return Err(Error::Option {
                name: "max".into(),
                value: o.max.to_string(),
                why: format!("must be at least 1 and at least min ({})", o.min),
            });
        }
        Ok(o)
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
}

/// What the package says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// `"nodeos": {"env": {"NAME": "value"}}` in package.json: the app's environment.
    pub env: Vec<(String, String)>,
}

/// Unpacks `tgz` (an npm pack tarball) into the empty folder `dest`, dropping the top folder
/// (`package/`). Links and special files are skipped; nothing lands outside `dest`.
pub fn unpack(tgz: &[u8], dest: &Path) -> Result<Manifest, Error> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let (mut bytes, mut files) = (0u64, 0usize);
    let unpack_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Unpack { path, source }
    };
    for entry in archive.entries().map_err(Error::NotTarball)? {
        let mut entry = entry.map_err(Error::NotTarball)?;
        let raw = entry.path().map_err(Error::NotTarball)?.into_owned();
        let mut parts = raw.components();
        if !raw
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(Error::Escapes {
                path: raw.display().to_string(),
            });
        }
        // The top folder, whatever its name (npm uses `package`).
        parts.next();
        let relative: PathBuf = parts.filter(|c| *c != Component::CurDir).collect();
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        files += 1;
        if files > MAX_FILES {
            return Err(Error::TooLarge);
        }
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(unpack_err(&target))?;
        } else if kind.is_file() {
            bytes += entry.size();
            if bytes > MAX_UNPACKED_BYTES {
                return Err(Error::TooLarge);
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(unpack_err(parent))?;
            }
            let executable = entry.header().mode().unwrap_or(0o644) & 0o111 != 0;
            let mut data = Vec::with_capacity(entry.size() as usize);
            // A size that lies is a broken tarball.
            entry
                .by_ref()
                .take(MAX_UNPACKED_BYTES)
                .read_to_end(&mut data)
                .map_err(Error::NotTarball)?;
            fs::write(&target, &data).map_err(unpack_err(&target))?;
            let mode = if executable { 0o755 } else { 0o644 };
            fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(unpack_err(&target))?;
        }
    }
    let manifest = fs::read(dest.join("package.json")).map_err(|_| Error::NoManifest)?;
    parse_manifest(&manifest)
}

fn parse_manifest(text: &[u8]) -> Result<Manifest, Error> {
    let json: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| Error::Manifest(e.to_string()))?;
    let mut manifest = Manifest::default();
    match json.pointer("/nodeos/env") {
        None => {}
        Some(serde_json::Value::Object(env)) => {
            for (name, value) in env {
                let serde_json::Value::String(value) = value else {
                    return Err(Error::Manifest(format!(
                        "nodeos.env.{name} must be a string"
                    )));
                };
                if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                    return Err(Error::Manifest(format!(
                        "nodeos.env: {name:?} is not a valid variable"
                    )));
                }
                manifest.env.push((name.clone(), value.clone()));
            }
        }
        Some(_) => {
            return Err(Error::Manifest(
                "nodeos.env must be an object of strings".into(),
            ))
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzipped tarball of `entries` (path, contents), paths written as given.
    fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name as a hostile tarball would.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn names() {
        for good in ["a", "hello-world_2", "X9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "..", ".", "a/b", "a..b", "-a", "a b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unpacks_an_npm_pack_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = unpack(
            &tgz(&[
                (
                    "package/package.json",
                    br#"{"nodeos": {"env": {"A": "b"}}}"#,
                ),
                ("package/lib/x.js", b"x"),
            ]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(manifest.env, vec![("A".to_string(), "b".to_string())]);
        assert_eq!(fs::read(dir.path().join("lib/x.js")).unwrap(), b"x");
    }

    #[test]
    fn refuses_escapes_garbage_and_missing_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let escape = tgz(&[("package/../../evil", b"x")]);
        assert!(matches!(
            unpack(&escape, dir.path()),
            Err(Error::Escapes { .. })
        ));
        assert!(matches!(
            unpack(b"nope", dir.path()),
            Err(Error::NotTarball(_))
        ));
        let bare = tgz(&[("package/index.js", b"x")]);
        assert!(matches!(unpack(&bare, dir.path()), Err(Error::NoManifest)));
        let env = tgz(&[("package/package.json", br#"{"nodeos": {"env": {"A": 1}}}"#)]);
        assert!(matches!(unpack(&env, dir.path()), Err(Error::Manifest(_))));
    }

    #[test]
    fn options_from_the_query() {
        let q = |pairs: &[(&str, &str)]| {
            Options::from_query(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let o = q(&[
            ("memory", "512M"),
            ("timeout", "2s"),
            ("min", "1"),
            ("max", "3"),
        ])
        .unwrap();
        assert_eq!(
            (o.memory_mib, o.timeout, o.min, o.max),
            (512, Duration::from_secs(2), 1, 3)
        );
        for bad in [
            &[("max", "0")][..],
            &[("min", "3"), ("max", "2")],
            &[("cpus", "0")],
            &[("idle", "soon")],
            &[("colour", "red")],
        ] {
            assert!(q(bad).is_err(), "{bad:?}");
        }
    }
}
