//! The root image as an OCI image (`nodeos-vm image export`), for containerd (`ctr image
//! import`), Docker and Podman (`load`): one layer holding the image's tree as its squashfs has
//! it (owners, modes, times; no device nodes: a container runtime makes /dev), a configuration
//! that runs the Node.js REPL as user `node`, in one archive that is both an OCI image layout
//! (`index.json`) and `docker load`'s format (`manifest.json`), as `docker save` writes them.
//!
//! The archive is written under a temporary name beside its destination and renamed when
//! whole: a failed export leaves what was there before.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use backhand::{FilesystemReader, InnerNode};
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::image_tree;

/// What the image runs, as the VM's REPL does.
const USER: &str = "node";
const HOME: &str = "/home/node";
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not an image name: give one like nodeos:latest (lower-case letters, digits, '.', '_', '-', '/'; a tag after ':')")]
    BadName(String),
    #[error("reading the root image {0}")]
    OpenImage(PathBuf, #[source] io::Error),
    #[error("reading the root image {0}")]
    ReadImage(PathBuf, #[source] backhand::BackhandError),
    #[error("reading {0} in the root image")]
    ReadFile(PathBuf, #[source] io::Error),
    #[error("writing the image archive {0}")]
    Write(PathBuf, #[source] io::Error),
}

/// An image name as Docker and containerd spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    repository: String,
    tag: String,
}

impl ImageName {
    /// `repository[:tag]` (the tag `latest` when none is given).
    pub fn parse(name: &str) -> Result<ImageName, Error> {
        let bad = || Error::BadName(name.to_string());
        let (repository, tag) = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (name, "latest"),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !tag.starts_with(['.', '-']);
        let mut components = repository.split('/').peekable();
        if repository.contains('/') {
            components.next_if(|first| is_registry(first));
        }
        if !components.all(component_ok) || !tag_ok {
            return Err(bad());
        }
        Ok(ImageName {
            repository: repository.into(),
            tag: tag.into(),
        })
    }

    /// `repository:tag`, as `docker load` tags it.
    pub fn short(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The full name containerd gives it (`docker.io/library/nodeos:latest`).
    pub fn full(&self) -> String {
        let first = self.repository.split('/').next().unwrap_or_default();
        let has_registry = self.repository.contains('/') && is_registry(first);
        match (has_registry, self.repository.contains('/')) {
            (true, _) => self.short(),
            (false, true) => format!("docker.io/{}", self.short()),
            (false, false) => format!("docker.io/library/{}", self.short()),
        }
    }
}

/// Whether the first component of a name is a registry's host (`host.name[:port]`,
/// `localhost`), as Docker tells them.
fn is_registry(first: &str) -> bool {
    let (host, port) = first.split_once(':').unwrap_or((first, "1"));
    (host.contains('.') || first.contains(':') || host == "localhost")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The manifest's digest (`sha256:...`): the image's identity.
    pub digest: String,
    /// The layer's size, compressed.
    pub layer_bytes: u64,
    /// The archive's size.
    pub archive_bytes: u64,
}

/// Writes the root image `rootfs` (squashfs) as the image `name` to the archive `to`.
pub fn export(rootfs: &Path, name: &ImageName, to: &Path) -> Result<Exported, Error> {
    let write_err = |e| Error::Write(to.to_path_buf(), e);
    let file = File::open(rootfs).map_err(|e| Error::OpenImage(rootfs.into(), e))?;
    let image = FilesystemReader::from_reader(BufReader::new(file))
        .map_err(|e| Error::ReadImage(rootfs.into(), e))?;
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut layer = tempfile::tempfile_in(dir).map_err(write_err)?;
    let mark = image_tree::file_sha256(rootfs).map_err(|e| Error::ReadFile(rootfs.into(), e))?;
    let Layer {
        diff_id,
        digest: layer_digest,
        bytes: layer_bytes,
    } = write_layer(&image, &mark, &mut layer).map_err(|e| match e {
        LayerError::Read(path, e) => Error::ReadFile(path, e),
        LayerError::Write(e) => write_err(e),
    })?;
    layer.rewind().map_err(write_err)?;

    let created = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(image.mod_time.into()),
    )
    .to_string();
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": USER,
            "Env": [format!("PATH={PATH}"), format!("HOME={HOME}")],
            "WorkingDir": HOME,
            "Cmd": ["node"],
            "Labels": {"org.opencontainers.image.title": "NodeOS"},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "nodeos-vm image export"}],
    });
    let config = serde_json::to_vec(&config).expect("JSON of strings");
    let config_digest = digest(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_bytes}],
    });
    let manifest = serde_json::to_vec(&manifest).expect("JSON of strings");
    let manifest_digest = digest(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name.full(),
                "org.opencontainers.image.ref.name": name.tag,
            },
        }],
    });
    let docker = json!([{
        "Config": blob_path(&config_digest),
        "RepoTags": [name.short()],
        "Layers": [blob_path(&layer_digest)],
    }]);

    let mut archive = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    {
        let mut tar = tar::Builder::new(BufWriter::new(archive.as_file_mut()));
        let mtime = u64::from(image.mod_time);
        let mut add = |path: &str, size: u64, data: &mut dyn io::Read| {
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            let (mode, kind) = if path.ends_with('/') {
                (0o755, tar::EntryType::Directory)
            } else {
                (0o644, tar::EntryType::Regular)
            };
            header.set_mode(mode);
            header.set_entry_type(kind);
            header.set_mtime(mtime);
            tar.append_data(&mut header, path, data)
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        add("oci-layout", layout.len() as u64, &mut &layout[..]).map_err(write_err)?;
        add("blobs/", 0, &mut io::empty()).map_err(write_err)?;
        add("blobs/sha256/", 0, &mut io::empty()).map_err(write_err)?;
        add(&blob_path(&layer_digest), layer_bytes, &mut layer).map_err(write_err)?;
        add(
            &blob_path(&config_digest),
            config.len() as u64,
            &mut &config[..],
        )
        .map_err(write_err)?;
        add(
            &blob_path(&manifest_digest),
            manifest.len() as u64,
            &mut &manifest[..],
        )
        .map_err(write_err)?;
        for (path, value) in [("index.json", index), ("manifest.json", docker)] {
            let bytes = serde_json::to_vec(&value).expect("JSON of strings");
            add(path, bytes.len() as u64, &mut &bytes[..]).map_err(write_err)?;
        }
        tar.into_inner()
            .and_then(|w| w.into_inner().map_err(io::IntoInnerError::into_error))
            .and_then(|f| f.sync_all())
            .map_err(write_err)?;
    }
    let archive_bytes = archive.as_file().metadata().map_err(write_err)?.len();
    archive.persist(to).map_err(|e| write_err(e.error))?;
    Ok(Exported {
        digest: manifest_digest,
        layer_bytes,
        archive_bytes,
    })
}

enum LayerError {
    Read(PathBuf, io::Error),
    Write(io::Error),
}

/// A layer as written: the digest of its tar (`diff_id`), and the digest and size of the
/// gzipped tar (its blob).
struct Layer {
    diff_id: String,
    digest: String,
    bytes: u64,
}

/// Writes the image's tree as a gzipped tar into `to`, hashing both streams as they pass,
/// with the image's `mark` ([`image_tree::MARK`]) last.
fn write_layer(image: &FilesystemReader, mark: &str, to: &mut File) -> Result<Layer, LayerError> {
    let gz = GzEncoder::new(
        Hashing::new(BufWriter::new(to)),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(Hashing::new(gz));
    for node in image.files() {
        let Ok(path) = node.fullpath.strip_prefix("/") else {
            continue;
        };
        if path.as_os_str().is_empty() {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(u32::from(node.header.permissions) & 0o7777);
        header.set_uid(node.header.uid.into());
        header.set_gid(node.header.gid.into());
        header.set_mtime(node.header.mtime.into());
        let appended = match &node.inner {
            InnerNode::Dir(_) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, path, io::empty())
            }
            InnerNode::File(file) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(file.file_len() as u64);
                let mut data = ReadErrors {
                    inner: image.file(file).reader(),
                    failed: None,
                };
                let appended = tar.append_data(&mut header, path, &mut data);
                if let Some(e) = data.failed {
                    return Err(LayerError::Read(node.fullpath.clone(), e));
                }
                appended
            }
            InnerNode::Symlink(link) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, path, &link.link)
            }
            // A container runtime makes /dev; nothing else of these kinds is in the image.
            InnerNode::CharacterDevice(_)
            | InnerNode::BlockDevice(_)
            | InnerNode::NamedPipe
            | InnerNode::Socket => continue,
        };
        appended.map_err(LayerError::Write)?;
    }
    let mark = format!("{mark}\n");
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_mtime(image.mod_time.into());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(mark.len() as u64);
    tar.append_data(&mut header, image_tree::MARK, mark.as_bytes())
        .map_err(LayerError::Write)?;
    let (gz, diff_id, _) = tar.into_inner().map_err(LayerError::Write)?.finish();
    let compressed = gz.finish().map_err(LayerError::Write)?;
    let (buffered, digest, bytes) = compressed.finish();
    buffered
        .into_inner()
        .map_err(|e| LayerError::Write(e.into_error()))?;
    Ok(Layer {
        diff_id,
        digest,
        bytes,
    })
}

/// A reader that remembers its error, to tell a damaged image from a failed write.
struct ReadErrors<R> {
    inner: R,
    failed: Option<io::Error>,
}

impl<R: io::Read> io::Read for ReadErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer back, with the digest (`sha256:...`) and size of what was written.
    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.bytes)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Where a blob of `digest` lies in the layout.
fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_docker_and_containerd_spell_them() {
        let name = ImageName::parse("nodeos").unwrap();
        assert_eq!(name.short(), "nodeos:latest");
        assert_eq!(name.full(), "docker.io/library/nodeos:latest");
        let name = ImageName::parse("acme/nodeos:v1.2").unwrap();
        assert_eq!(name.full(), "docker.io/acme/nodeos:v1.2");
        let name = ImageName::parse("registry.local:5000/team/nodeos:22").unwrap();
        assert_eq!(name.short(), "registry.local:5000/team/nodeos:22");
        assert_eq!(name.full(), "registry.local:5000/team/nodeos:22");
        let name = ImageName::parse("localhost/nodeos").unwrap();
        assert_eq!(name.full(), "localhost/nodeos:latest");
        for bad in [
            "",
            "NodeOS",
            "nodeos:",
            "nodeos:-x",
            "a//b",
            "-a",
            "nodeos:a b",
            "host:x/a",
            "a/",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_blob_lies_under_its_algorithm() {
        assert_eq!(blob_path("sha256:ab12"), "blobs/sha256/ab12");
    }
}
