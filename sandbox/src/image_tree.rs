//! Recognising the root image in a container's root file system ([`is_image`]). The image's
//! layer ([`crate::oci_image`]) carries one file the image has not, [`MARK`]: the SHA-256 of
//! the squashfs image it was read from. A folder is the image when its mark is the image's
//! hash (read first, without following a symlink: any other image stops there, unwalked) and
//! a digest of its tree — every entry by path, kind, permissions, owner, a file's size and
//! time, a symlink's target (device nodes and other special files left out, as the layer
//! leaves them) — is the image's own: nothing added or taken away (an older build's export
//! differs by its mark, even where sizes and times are the same). The containerd shim then
//! runs the container on the guest's own root instead of packing a copy of it into a disk. A
//! layer made to pass for the image, mark and all, gets the image itself: nothing it did not
//! ask for.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use backhand::{FilesystemReader, InnerNode};
use sha2::{Digest, Sha256};

use crate::volume::folder::Folder;

/// The file next to a cached root image that holds its hash and tree digest; its name changes
/// whenever what it holds does, so that nothing of another kind is ever read back.
const IDENTITY_FILE: &str = "tree-3.sha256";
/// A mark is 64 hex digits and a newline; more is not a mark.
const MARK_MAX: u64 = 128;
/// The layer's one file of its own: the SHA-256 (hex) of the squashfs image it was read from.
pub const MARK: &str = "usr/lib/nodeos/image.sha256";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the root image {0}: {1}")]
    Image(PathBuf, #[source] backhand::BackhandError),
    #[error("reading {0}: {1}")]
    Io(PathBuf, #[source] io::Error),
}

/// One entry of a tree, as the digest takes it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    path: Vec<u8>,
    /// `d`, `f` or `l`, then what the kind adds: a file's size and time, a link's target.
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn digest(mut entries: Vec<Entry>) -> String {
    entries.sort();
    let mut hash = Sha256::new();
    for e in &entries {
        hash.update(&e.path);
        hash.update(format!(
            "\0{}\0{:o}\0{}\0{}\n",
            e.kind, e.mode, e.uid, e.gid
        ));
    }
    hex::encode(hash.finalize())
}

/// Whether the folder `root` holds exactly the squashfs image `rootfs`, as its export unpacks.
pub fn is_image(root: &Path, rootfs: &Path) -> Result<bool, Error> {
    let Some(mark) = read_mark(root) else {
        return Ok(false);
    };
    let (hash, tree) = identity(rootfs)?;
    Ok(mark == hash && of_folder(root)? == tree)
}

/// The [`MARK`] in the folder `root`: a regular file reached through no symlink, read up to
/// [`MARK_MAX`] bytes (a container's image may put anything in its place).
fn read_mark(root: &Path) -> Option<String> {
    let file = Folder::open(root)
        .and_then(|folder| folder.file(std::ffi::OsStr::new(MARK), false))
        .ok()?;
    let mut mark = String::new();
    io::Read::read_to_string(&mut io::Read::take(file, MARK_MAX), &mut mark).ok()?;
    Some(mark.trim().to_string())
}

/// The image `rootfs`'s SHA-256 and tree digest, kept beside it once computed (the image of a
/// cache folder never changes; one given by path is read each time).
fn identity(rootfs: &Path) -> Result<(String, String), Error> {
    let kept = rootfs.with_file_name(IDENTITY_FILE);
    let cached_build = rootfs.parent().is_some_and(|dir| {
        dir.file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"rootfs.img-"))
    });
    if cached_build {
        let text = fs::read_to_string(&kept).unwrap_or_default();
        if let Some((hash, tree)) = text.trim().split_once(' ') {
            return Ok((hash.into(), tree.into()));
        }
    }
    let hash = file_sha256(rootfs).map_err(|e| Error::Io(rootfs.into(), e))?;
    let tree = of_image(rootfs)?;
    if cached_build {
        // A cache that cannot be written costs the next shim the same reading.
        let _ = write_atomically(&kept, &format!("{hash} {tree}\n"));
    }
    Ok((hash, tree))
}

/// The tree digest of the squashfs image `rootfs`.
fn of_image(rootfs: &Path) -> Result<String, Error> {
    let file = fs::File::open(rootfs).map_err(|e| Error::Io(rootfs.into(), e))?;
    let image = FilesystemReader::from_reader(io::BufReader::new(file))
        .map_err(|e| Error::Image(rootfs.into(), e))?;
    let mut entries = Vec::new();
    for node in image.files() {
        let Ok(path) = node.fullpath.strip_prefix("/") else {
            continue;
        };
        let kind = match &node.inner {
            InnerNode::Dir(_) => "d".to_string(),
            InnerNode::File(file) => format!("f{} {}", file.file_len(), node.header.mtime),
            InnerNode::Symlink(link) => {
                format!(
                    "l{}",
                    String::from_utf8_lossy(link.link.as_os_str().as_bytes())
                )
            }
            _ => continue,
        };
        if path.as_os_str().is_empty() {
            continue;
        }
        entries.push(Entry {
            path: path.as_os_str().as_bytes().to_vec(),
            kind,
            mode: u32::from(node.header.permissions) & 0o7777,
            uid: node.header.uid,
            gid: node.header.gid,
        });
    }
    Ok(digest(entries))
}

/// The SHA-256 of a file's bytes, in hex: the mark of the image `path`.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut hash = Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hash)?;
    Ok(hex::encode(hash.finalize()))
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut file, text.as_bytes())?;
    file.persist(path).map(drop).map_err(|e| e.error)
}

/// The tree digest of the folder `root`, its [`MARK`] left out (not following symlinks).
fn of_folder(root: &Path) -> Result<String, Error> {
    let mut entries = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let dir = root.join(&relative);
        let read = fs::read_dir(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
        for entry in read {
            let entry = entry.map_err(|e| Error::Io(dir.clone(), e))?;
            let path = relative.join(entry.file_name());
            if path == Path::new(MARK) {
                continue;
            }
            let meta = entry.metadata().map_err(|e| Error::Io(entry.path(), e))?;
            let kind = if meta.is_dir() {
                stack.push(path.clone());
                "d".to_string()
            } else if meta.is_file() {
                format!("f{} {}", meta.len(), meta.mtime())
            } else if meta.is_symlink() {
                let target = fs::read_link(entry.path()).map_err(|e| Error::Io(entry.path(), e))?;
                format!(
                    "l{}",
                    String::from_utf8_lossy(target.as_os_str().as_bytes())
                )
            } else {
                continue;
            };
            entries.push(Entry {
                path: path.as_os_str().as_bytes().to_vec(),
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    Ok(digest(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A squashfs image of `tree`, made by squashfs-tools (as a root image is built).
    fn squashfs_of(tree: &Path, image: &Path) {
        let mksquashfs = vmm::host_packages::ensure("mksquashfs", "squashfs-tools").unwrap();
        let made = std::process::Command::new(mksquashfs)
            .arg(tree)
            .arg(image)
            .args(["-noappend", "-quiet", "-no-progress"])
            .status()
            .unwrap();
        assert!(made.success());
    }

    #[test]
    fn a_folder_is_the_image_with_its_mark_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("usr/lib/nodeos")).unwrap();
        fs::create_dir_all(tree.join("home/node")).unwrap();
        fs::write(tree.join("usr/lib/nodeos/repl.js"), "repl").unwrap();
        std::os::unix::fs::symlink("/usr/lib", tree.join("lib")).unwrap();
        let image = dir.path().join("rootfs.img");
        squashfs_of(&tree, &image);

        // Unpacked with its mark: the image.
        let mark = tree.join(MARK);
        fs::write(&mark, format!("{}\n", file_sha256(&image).unwrap())).unwrap();
        assert!(is_image(&tree, &image).unwrap());
        // Without its mark, with another's, as a symlink to it, or with a file more: not the
        // image.
        fs::write(&mark, "0".repeat(64)).unwrap();
        assert!(!is_image(&tree, &image).unwrap());
        fs::remove_file(&mark).unwrap();
        assert!(!is_image(&tree, &image).unwrap());
        let elsewhere = dir.path().join("mark-elsewhere");
        fs::write(&elsewhere, file_sha256(&image).unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &mark).unwrap();
        assert!(!is_image(&tree, &image).unwrap());
        fs::remove_file(&mark).unwrap();
        fs::write(&mark, file_sha256(&image).unwrap()).unwrap();
        fs::write(tree.join("home/node/extra"), "x").unwrap();
        assert!(!is_image(&tree, &image).unwrap());
        fs::remove_file(tree.join("home/node/extra")).unwrap();
        assert!(is_image(&tree, &image).unwrap());
        // Another mode is another tree.
        fs::set_permissions(
            tree.join("usr/lib/nodeos/repl.js"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(!is_image(&tree, &image).unwrap());
    }
}
