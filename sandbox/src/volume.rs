//! Host folders for the guest (`nodeos-vm run -v HOST:GUEST[:ro|:rw]`): each is packed into
//! an ext4 image on a virtio-blk disk, its files owned by the guest's user, and mounted by the
//! guest's init (`nodeos.vol=`).
//!
//! - default: the guest may write; its writes land in the throwaway image and never reach the
//!   host.
//! - `:ro`: mounted read-only.
//! - `:rw`: after the run the image's tree is mirrored back into the host folder (files
//!   written, created and deleted by the guest).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use contract::disks::ROOT_DEVICE;
use contract::params;
use vmm::vm::VolumeDisk;

/// The guest's user (`node`), who owns every file of a volume inside the guest.
const GUEST_UID: u32 = 1000;
const GUEST_GID: u32 = 1000;
/// Free space an image gets beyond its files, for what the guest writes.
const HEADROOM_BYTES: u64 = 256 << 20;
const BLOCK: u64 = 4096;
/// ext4 creates it; it is no file of the user's.
const LOST_FOUND: &str = "lost+found";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writable in the guest, changes thrown away.
    Scratch,
    ReadOnly,
    /// Changes copied back to the host folder after the run.
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    /// Where the guest mounts it: absolute, normalized, not `/`.
    pub guest: String,
    pub mode: Mode,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--volume {spec:?}: {why} (expected HOST:GUEST[:ro|:rw], e.g. -v $PWD:/app)")]
    Syntax { spec: String, why: &'static str },
    #[error("--volume {spec:?}: the guest cannot mount there")]
    GuestPath {
        spec: String,
        #[source]
        source: params::ParamError,
    },
    #[error("--volume {spec:?}: host folder {path}: {source}")]
    HostFolder {
        spec: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--volume {spec:?}: {path} is not a folder (only folders can be mounted)")]
    NotAFolder { spec: String, path: PathBuf },
    #[error("reading {path} to pack it")]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} (is e2fsprogs installed? apt-get install e2fsprogs)")]
    Tool {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed: {stderr}")]
    ToolFailed { what: String, stderr: String },
    #[error("copying the guest's changes back to {path}")]
    CopyBack {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Volume {
    /// Parses `HOST:GUEST[:ro|:rw]`; the host folder must exist, the guest path be absolute.
    pub fn parse(spec: &str) -> Result<Volume, Error> {
        let bad = |why| Error::Syntax {
            spec: spec.to_string(),
            why,
        };
        let mut parts: Vec<&str> = spec.split(':').collect();
        let mode = match parts.last().copied() {
            Some("ro") if parts.len() == 3 => Mode::ReadOnly,
            Some("rw") if parts.len() == 3 => Mode::ReadWrite,
            _ if parts.len() == 2 => Mode::Scratch,
            _ if parts.len() == 3 => return Err(bad("the mode must be ro or rw")),
            _ => return Err(bad("HOST and GUEST must not contain ':'")),
        };
        parts.truncate(2);
        let (host, guest) = (parts[0], parts[1]);
        if host.is_empty() {
            return Err(bad("the host folder is empty"));
        }
        let guest = Path::new(guest);
        if !guest.is_absolute() {
            return Err(bad("the guest path must be absolute"));
        }
        if guest
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(bad("the guest path must not contain '.' or '..'"));
        }
        if guest.components().count() < 2 {
            return Err(bad("the guest path cannot be /"));
        }
        let guest: PathBuf = guest.components().collect();
        let Some(guest) = guest.to_str().map(str::to_string) else {
            return Err(bad("the guest path must be UTF-8 text"));
        };
        // Whatever else the guest refuses in a mount point (a NUL byte, ...), refused here too:
        // the same check as the guest's.
        params::Volume::new(ROOT_DEVICE, guest.as_str(), false).map_err(|source| {
            Error::GuestPath {
                spec: spec.to_string(),
                source,
            }
        })?;
        let folder_err = |source| Error::HostFolder {
            spec: spec.to_string(),
            path: PathBuf::from(host),
            source,
        };
        let host = fs::canonicalize(host).map_err(folder_err)?;
        if !fs::metadata(&host).map_err(folder_err)?.is_dir() {
            return Err(Error::NotAFolder {
                spec: spec.to_string(),
                path: host,
            });
        }
        Ok(Volume { host, guest, mode })
    }

    /// The disk the guest mounts it from: `image`, packed by [`Volume::pack`].
    pub fn disk(&self, image: PathBuf) -> VolumeDisk {
        VolumeDisk {
            image,
            mount_point: self.guest.clone(),
            read_only: self.mode == Mode::ReadOnly,
        }
    }

    /// Packs the host folder into a fresh ext4 image at `image`.
    pub fn pack(&self, image: &Path) -> Result<(), Error> {
        let usage = Usage::of(&self.host)?;
        let size_blocks = (usage.bytes + HEADROOM_BYTES) / BLOCK;
        let inodes = usage.entries * 2 + 4096;
        let mut command = Command::new("mke2fs");
        command
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0"])
            // No journal: the guest syncs before the VM ends, and copy-back reads the image
            // with debugfs, which does not replay journals.
            .args(["-O", "^has_journal"])
            .args(["-N", &inodes.to_string()])
            .args(["-E", &format!("root_owner={GUEST_UID}:{GUEST_GID}")])
            .arg("-d")
            .arg(&self.host)
            .arg(image)
            .arg(size_blocks.to_string());
        // The files must belong to the guest's user: mke2fs copies owners from what stat(2)
        // says, so run it where our own uid reads as the guest's.
        as_guest_owner(&mut command);
        run_tool(command, format!("packing {} (mke2fs)", self.host.display()))
    }

    /// Mirrors the tree in `image` into the host folder: writes what differs, creates what is
    /// new, deletes what the guest deleted. `scratch` is an empty folder to unpack into.
    pub fn copy_back(&self, image: &Path, scratch: &Path) -> Result<(), Error> {
        let mut command = Command::new("debugfs");
        command
            .arg("-R")
            .arg(OsString::from(format!("rdump / {}", scratch.display())))
            .arg(image);
        run_tool(
            command,
            format!("reading the volume image of {}", self.host.display()),
        )?;
        mirror(scratch, &self.host, true).map_err(|source| Error::CopyBack {
            path: self.host.clone(),
            source,
        })
    }
}

/// Bytes (whole blocks) and entries a tree takes.
struct Usage {
    bytes: u64,
    entries: u64,
}

impl Usage {
    fn of(root: &Path) -> Result<Usage, Error> {
        let mut usage = Usage {
            bytes: 0,
            entries: 0,
        };
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let walk_err = |source| Error::Walk {
                path: dir.clone(),
                source,
            };
            for entry in fs::read_dir(&dir).map_err(walk_err)? {
                let entry = entry.map_err(walk_err)?;
                let meta = entry.metadata().map_err(walk_err)?;
                usage.entries += 1;
                usage.bytes += meta.len().div_ceil(BLOCK) * BLOCK + BLOCK;
                if meta.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        Ok(usage)
    }
}

/// Runs `command` in a user namespace of its own where the caller's uid and gid read as the
/// guest user's: what the caller owns is packed as owned by `node`.
fn as_guest_owner(command: &mut Command) {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let uid_map = format!("{GUEST_UID} {uid} 1\0");
    let gid_map = format!("{GUEST_GID} {gid} 1\0");
    // SAFETY: the closure runs in the forked child, which has a single thread, before exec;
    // it only makes raw system calls (unshare, open, write, close) on buffers prepared before
    // the fork, allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            write_proc(c"/proc/self/setgroups", b"deny")?;
            write_proc(
                c"/proc/self/uid_map",
                &uid_map.as_bytes()[..uid_map.len() - 1],
            )?;
            write_proc(
                c"/proc/self/gid_map",
                &gid_map.as_bytes()[..gid_map.len() - 1],
            )?;
            Ok(())
        });
    }
}

/// Writes `data` to a /proc file with raw system calls (safe between fork and exec).
fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: path is NUL-terminated; open has no other memory arguments.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: data is valid for data.len() bytes; fd is the descriptor just opened.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if n != data.len() as isize {
        return Err(err);
    }
    Ok(())
}

pub(crate) fn run_tool(mut command: Command, what: String) -> Result<(), Error> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Tool {
            what: what.clone(),
            source,
        })?;
    // debugfs reports failures on stderr but exits 0; e2fsprogs tools print their banner
    // ("debugfs 1.47.0 (5-Feb-2023)") there too.
    let banner = format!("{} ", command.get_program().to_string_lossy());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with(&banner) && !l.trim().is_empty())
        .collect();
    if !output.status.success() || !complaints.is_empty() {
        return Err(Error::ToolFailed {
            what,
            stderr: if complaints.is_empty() {
                output.status.to_string()
            } else {
                complaints.join("; ")
            },
        });
    }
    Ok(())
}

/// Makes `dst` hold what `src` holds. `top`: skip ext4's lost+found.
fn mirror(src: &Path, dst: &Path, top: bool) -> io::Result<()> {
    let mut names = std::collections::HashSet::new();
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && name == LOST_FOUND {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        names.insert(name);
        let meta = fs::symlink_metadata(&from)?;
        let existing = fs::symlink_metadata(&to).ok();
        let kind = meta.file_type();
        if let Some(old) = &existing {
            let same_kind = old.file_type().is_dir() == kind.is_dir()
                && old.file_type().is_symlink() == kind.is_symlink();
            if !same_kind {
                remove(&to, old)?;
            }
        }
        let existing = fs::symlink_metadata(&to).ok();
        if kind.is_dir() {
            if existing.is_none() {
                fs::create_dir(&to)?;
            }
            mirror(&from, &to, false)?;
            set_mode(&to, &meta)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&from)?;
            if existing.is_none() || fs::read_link(&to)? != target {
                if existing.is_some() {
                    fs::remove_file(&to)?;
                }
                std::os::unix::fs::symlink(&target, &to)?;
            }
        } else if kind.is_file() {
            let changed = match &existing {
                None => true,
                Some(old) => old.len() != meta.len() || fs::read(&to)? != fs::read(&from)?,
            };
            if changed {
                // In place: the host file keeps its owner and links.
                fs::copy(&from, &to)?;
            }
            set_mode(&to, &meta)?;
        }
    }
    for entry in fs::read_dir(dst)? {
        let entry = entry?;
        if !names.contains(&entry.file_name()) {
            remove(&entry.path(), &entry.metadata()?)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let mode = meta.mode() & 0o7777;
    if fs::metadata(path)?.mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn remove(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// `%XX` for every byte outside `[A-Za-z0-9/._-]` (the guest decodes it).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_str().unwrap();
        let v = Volume::parse(&format!("{host}:/app")).unwrap();
        assert_eq!(v.guest, "/app");
        assert_eq!(v.mode, Mode::Scratch);
        assert_eq!(v.host, fs::canonicalize(host).unwrap());
        assert_eq!(
            Volume::parse(&format!("{host}:/a/b/:ro")).unwrap().guest,
            "/a/b"
        );
        assert_eq!(
            Volume::parse(&format!("{host}:/app:rw")).unwrap().mode,
            Mode::ReadWrite
        );
        for bad in [
            host.to_string(),
            format!("{host}:app"),
            format!("{host}:/"),
            format!("{host}:/a/../b"),
            format!("{host}:/app:rx"),
            format!("{host}:/a:b:ro"),
            format!("{host}:/a\0b"),
            ":/app".to_string(),
            "/nonexistent/x:/app".to_string(),
        ] {
            let err = Volume::parse(&bad).unwrap_err().to_string();
            assert!(err.starts_with("--volume "), "{err}");
        }
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        assert!(matches!(
            Volume::parse(&format!("{}:/app", file.display())),
            Err(Error::NotAFolder { .. })
        ));
    }

    fn tree(root: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let m = fs::symlink_metadata(e.path()).unwrap();
                let what = if m.is_symlink() {
                    format!("-> {}", fs::read_link(e.path()).unwrap().display())
                } else if m.is_dir() {
                    stack.push(e.path());
                    format!("dir {:o}", m.mode() & 0o777)
                } else {
                    format!(
                        "{:o} {}",
                        m.mode() & 0o777,
                        String::from_utf8_lossy(&fs::read(e.path()).unwrap())
                    )
                };
                out.push((rel, what));
            }
        }
        out.sort();
        out
    }

    /// Packs with the real mke2fs, checks owners and contents with debugfs, and mirrors a
    /// changed tree back.
    #[test]
    fn pack_and_copy_back_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("project");
        fs::create_dir_all(host.join("src/deep")).unwrap();
        fs::write(host.join("package.json"), "{}").unwrap();
        fs::write(host.join("src/a.js"), "a").unwrap();
        fs::write(host.join("src/deep/b.js"), "b").unwrap();
        fs::set_permissions(host.join("src/a.js"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("a.js", host.join("src/link")).unwrap();
        let before = tree(&host);

        let v = Volume::parse(&format!("{}:/app:rw", host.display())).unwrap();
        let image = dir.path().join("vol.img");
        v.pack(&image).unwrap();
        let listing = Command::new("debugfs")
            .args(["-R", "ls -l /src"])
            .arg(&image)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        let a = listing.lines().find(|l| l.ends_with(" a.js")).unwrap();
        assert!(a.contains(" 1000   1000 "), "{listing}");

        // Unchanged image: the mirror changes nothing.
        let scratch = dir.path().join("s1");
        fs::create_dir(&scratch).unwrap();
        v.copy_back(&image, &scratch).unwrap();
        assert_eq!(tree(&host), before);

        // Edit the image the way a guest would, through debugfs: delete, create, overwrite.
        let new_file = dir.path().join("new.txt");
        fs::write(&new_file, "new").unwrap();
        let script = format!(
            "rm /src/deep/b.js\nrmdir /src/deep\nrm /package.json\nwrite {} /package.json\nmkdir /out\nwrite {} /out/n.txt\n",
            new_file.display(),
            new_file.display()
        );
        let script_path = dir.path().join("edit");
        fs::write(&script_path, script).unwrap();
        let st = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(&image)
            .output()
            .unwrap();
        assert!(st.status.success());
        let scratch = dir.path().join("s2");
        fs::create_dir(&scratch).unwrap();
        v.copy_back(&image, &scratch).unwrap();
        let after = tree(&host);
        let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
        assert!(!names.contains(&"src/deep"), "{after:?}");
        assert!(names.contains(&"out/n.txt"), "{after:?}");
        assert!(!names.contains(&"lost+found"), "{after:?}");
        let pkg = after.iter().find(|(n, _)| n == "package.json").unwrap();
        assert!(pkg.1.ends_with(" new"), "{pkg:?}");
        let link = after.iter().find(|(n, _)| n == "src/link").unwrap();
        assert_eq!(link.1, "-> a.js");
        let a = after.iter().find(|(n, _)| n == "src/a.js").unwrap();
        assert_eq!(a.1, "600 a");
    }
}
