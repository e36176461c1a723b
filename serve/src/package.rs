//! What `PUT /apps/{name}` takes: the app's name, its options (query parameters) and its
//! package, a gzipped tarball as `npm pack` makes it (every file under one top folder,
//! `package/`), unpacked with bounds and without leaving the target folder.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use sandbox::vm_config;

/// Longest app name.
const MAX_NAME: usize = 63;
/// Most bytes a package's tar stream may decompress to: file data, headers, long names and the
/// data of entries that are never unpacked all count.
const MAX_UNPACKED_BYTES: u64 = 512 << 20;
/// Most entries a package may have, of every kind: files, folders, links and any other.
const MAX_ENTRIES: usize = 100_000;
/// How much of a file is copied at a time.
const COPY_CHUNK: usize = 64 << 10;
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
    #[error("the package unpacks to more than {} MiB (its tar stream, headers included)", MAX_UNPACKED_BYTES >> 20)]
    TooLarge,
    #[error("the package has more than {MAX_ENTRIES} entries (files, folders, links and every other kind count)")]
    TooManyEntries,
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
    /// A VM kept booted for the app without a runner (its package mounted), so that a cold
    /// start only starts the runner; booted again after each use.
    #[serde(default = "standby_default")]
    pub standby: bool,
}

fn standby_default() -> bool {
    true
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
            standby: standby_default(),
        }
    }
}

impl Options {
    /// The defaults with the query's `memory`, `cpus`, `timeout`, `min`, `max`, `idle`,
    /// `queue` and `standby` applied.
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
                "standby" => {
                    o.standby = value
                        .parse()
                        .map_err(|_| bad("expected true or false".into()))?
                }
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
/// (`package/`). Links and special files are skipped; nothing lands outside `dest`. Every
/// entry counts against `MAX_ENTRIES` and every byte of the tar stream against
/// `MAX_UNPACKED_BYTES`, whether it is unpacked or not.
pub fn unpack(tgz: &[u8], dest: &Path) -> Result<Manifest, Error> {
    let over = Cell::new(false);
    let stream = Capped {
        inner: flate2::read::GzDecoder::new(tgz),
        left: MAX_UNPACKED_BYTES,
        over: &over,
    };
    let mut archive = tar::Archive::new(stream);
    // A read that fails where the stream was cut is the cap's doing, not a broken tarball.
    let broken = |e: io::Error| {
        if over.get() {
            Error::TooLarge
        } else {
            Error::NotTarball(e)
        }
    };
    let unpack_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Unpack { path, source }
    };
    let mut entries = 0usize;
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(Error::TooManyEntries);
        }
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
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(unpack_err(&target))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(unpack_err(parent))?;
            }
            let executable = entry.header().mode().unwrap_or(0o644) & 0o111 != 0;
            let mut file = fs::File::create(&target).map_err(unpack_err(&target))?;
            let mut chunk = vec![0u8; COPY_CHUNK];
            loop {
                let n = entry.read(&mut chunk).map_err(broken)?;
                if n == 0 {
                    break;
                }
                file.write_all(&chunk[..n]).map_err(unpack_err(&target))?;
            }
            let mode = if executable { 0o755 } else { 0o644 };
            fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(unpack_err(&target))?;
        }
    }
    let manifest = fs::read(dest.join("package.json")).map_err(|_| Error::NoManifest)?;
    parse_manifest(&manifest)
}

/// A decompressed tar stream cut at `left` bytes: whatever the tar parser reads counts, the
/// long names and extension records it keeps in memory and the data of the entries it skips
/// included. A read past the cut fails and sets `over`.
struct Capped<'a, R> {
    inner: R,
    left: u64,
    over: &'a Cell<bool>,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // A stream of exactly the cap ends here; one byte more is over it.
            if self.inner.read(&mut [0u8; 1])? == 0 {
                return Ok(0);
            }
            self.over.set(true);
            return Err(io::Error::other(Error::TooLarge));
        }
        let room = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
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

    /// A gzipped tarball of `headers`, each with `size` bytes of zeros as its data.
    fn tgz_of(headers: impl IntoIterator<Item = (tar::Header, u64)>) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (header, size) in headers {
            builder.append(&header, io::repeat(0).take(size)).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    /// A header of `kind` for `path`, saying its data is `size` bytes.
    fn header(kind: tar::EntryType, path: &str, size: u64) -> (tar::Header, u64) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_path(path).unwrap();
        header.set_mode(0o755);
        header.set_size(size);
        if kind.is_symlink() {
            header.set_link_name("package").unwrap();
        }
        header.set_cksum();
        (header, size)
    }

    /// `count` empty folders and symlinks, half each, in the top folder where nothing is
    /// unpacked, beside a valid package.
    fn folders_and_links(count: usize) -> Vec<u8> {
        let manifest = header(tar::EntryType::Regular, "package/package.json", 0);
        let others = (0..count - 1).map(|i| {
            if i % 2 == 0 {
                header(tar::EntryType::Directory, &format!("d{i}/"), 0)
            } else {
                header(tar::EntryType::Symlink, &format!("l{i}"), 0)
            }
        });
        tgz_of(std::iter::once(manifest).chain(others))
    }

    #[test]
    fn entries_of_every_kind_count_against_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        // An empty package.json fails to parse: what matters is that it got that far.
        assert!(matches!(
            unpack(&folders_and_links(MAX_ENTRIES), dir.path()),
            Err(Error::Manifest(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(&folders_and_links(MAX_ENTRIES + 1), dir.path()),
            Err(Error::TooManyEntries)
        ));
    }

    #[test]
    fn data_never_unpacked_counts_against_the_byte_cap() {
        let over = MAX_UNPACKED_BYTES + (1 << 20);
        for kind in [tar::EntryType::Directory, tar::EntryType::GNULongName] {
            let dir = tempfile::tempdir().unwrap();
            let package = tgz_of([
                header(kind, "package/big/", over),
                header(tar::EntryType::Directory, "package/after/", 0),
            ]);
            let result = unpack(&package, dir.path());
            assert!(
                matches!(result, Err(Error::TooLarge)),
                "{kind:?}: {result:?}"
            );
        }
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
            (o.memory_mib, o.timeout, o.min, o.max, o.standby),
            (512, Duration::from_secs(2), 1, 3, true)
        );
        assert!(!q(&[("standby", "false")]).unwrap().standby);
        for bad in [
            &[("max", "0")][..],
            &[("min", "3"), ("max", "2")],
            &[("cpus", "0")],
            &[("idle", "soon")],
            &[("standby", "1")],
            &[("colour", "red")],
        ] {
            assert!(q(bad).is_err(), "{bad:?}");
        }
    }
}
