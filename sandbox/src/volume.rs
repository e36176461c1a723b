//! Host folders for the guest (`nodeos-vm run -v HOST:GUEST[:ro|:rw]`): each is packed into
//! an ext4 image on a virtio-blk disk, its files owned by the guest's user, and mounted by the
//! guest's init (`nodeos.vol=`).
//!
//! - default: the guest may write; its writes land in the throwaway image and never reach the
//!   host.
//! - `:ro`: mounted read-only.
//! - `:rw`: once the command has ended, the guest agent sends the volume's tree (its
//!   `Export`, a `contract::tree` stream); it is unpacked strictly into a scratch folder
//!   (unpack.rs) and mirrored into the host folder (mirror.rs): files written, created and
//!   deleted by the guest. The host never reads the image the guest wrote (docs/security.md).
//!   What is under `.git` stays as the host has it (git would run the hooks and commands a
//!   guest planted there), unless the volume says `:rw,git`.

mod extents;
pub(crate) mod folder;
mod mirror;
mod unpack;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use contract::disks::ROOT_DEVICE;
use contract::params;
use contract::tree::TreePath;
use vmm::vm::VolumeDisk;

use folder::Folder;
use mirror::{Git, GitRefused, MirrorError};
pub use unpack::{Budget, Refused, TreeSource, UnpackError};

/// The guest's user (`node`), who owns every file of a volume inside the guest.
const GUEST_UID: u32 = 1000;
const GUEST_GID: u32 = 1000;
/// Free space a writable volume's image gets beyond its files, for what the guest writes: room
/// for an `npm ci` (a `node_modules` of a few hundred MB and tens of thousands of files) in a
/// project that has none yet. The image is sparse and its inode tables are left unwritten (the
/// guest mounts it `noinit_itable`): room the guest does not use costs the host nothing.
const RW_HEADROOM_BYTES: u64 = 2 << 30;
/// One free inode for each this many bytes of that room (131072 for 2 GiB).
const RW_HEADROOM_BYTES_PER_INODE: u64 = 16 << 10;
/// A read-only volume's image: its files and mke2fs's own metadata.
const RO_HEADROOM_BYTES: u64 = 256 << 20;
const RO_HEADROOM_INODES: u64 = 4096;
/// The folder mke2fs makes at the top of every image.
const LOST_FOUND: &str = "lost+found";
const BLOCK: u64 = 4096;
/// How long the guest may take to send a `:rw` volume's tree.
pub const COPY_BACK_TIME: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writable in the guest, changes thrown away.
    Scratch,
    ReadOnly,
    /// Changes copied back to the host folder after the run; those under `.git` too when
    /// `git` (`:rw,git`).
    ReadWrite {
        git: bool,
    },
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
    #[error("--volume {spec:?}: {why} (expected HOST:GUEST[:ro|:rw|:rw,git], e.g. -v $PWD:/app)")]
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
    #[error("unpacking the guest's tree")]
    Unpack(#[source] UnpackError),
    #[error("{}: {what}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("volume {}:{guest}:rw: the guest's changes were not copied back; the folder is as it was", .host.display())]
    NotCopiedBack {
        host: PathBuf,
        guest: String,
        #[source]
        source: UnpackError,
    },
    #[error("volume {}:{guest}:rw: copying the guest's changes back stopped half-way; the folder is partly updated", .host.display())]
    CopyBackStopped {
        host: PathBuf,
        guest: String,
        #[source]
        source: MirrorError,
    },
}

/// A change of the guest's that was not copied back; the rest were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A symlink whose target leaves the volume.
    Symlink {
        /// Where it would have been on the host.
        path: PathBuf,
        target: String,
        why: &'static str,
    },
    /// Changes under `.git` folders (or to `.git` files) of the host folder `host`, whose
    /// volume is not `:rw,git`: how many, and the first few.
    Git { host: PathBuf, refused: GitRefused },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink { path, target, why } => write!(
                f,
                "{}: the guest's symlink to {target:?} was not copied back: its target {why}; \
                 left as it was",
                path.display()
            ),
            Refusal::Git { host, refused } => {
                let paths: Vec<String> = refused
                    .first
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                let more = refused.count - refused.first.len() as u64;
                let (changes, were) = match refused.count {
                    1 => ("change".to_string(), "was"),
                    n => (format!("{n} changes"), "were"),
                };
                write!(
                    f,
                    "{}: the guest's {changes} under .git {were} not copied back: {}{}; left as \
                     it was (git would run what a guest puts there; -v HOST:GUEST:rw,git copies \
                     them)",
                    host.display(),
                    paths.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
        }
    }
}

impl Volume {
    /// Parses `HOST:GUEST[:ro|:rw|:rw,git]`; the host folder must exist, the guest path be
    /// absolute.
    pub fn parse(spec: &str) -> Result<Volume, Error> {
        let bad = |why| Error::Syntax {
            spec: spec.to_string(),
            why,
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let mode = match parts[..] {
            [_, _] => Mode::Scratch,
            [_, _, options] => mode(options).map_err(bad)?,
            _ => return Err(bad("HOST and GUEST must not contain ':'")),
        };
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

    /// Packs the host folder into a fresh ext4 image at `image`; what a copy-back of it may
    /// take ([`copy_back_budget`]).
    pub fn pack(&self, image: &Path) -> Result<Budget, Error> {
        let usage = Usage::of(&self.host)?;
        let (headroom, free_inodes) = match self.mode {
            Mode::ReadOnly => (RO_HEADROOM_BYTES, RO_HEADROOM_INODES),
            _ => (
                RW_HEADROOM_BYTES,
                RW_HEADROOM_BYTES / RW_HEADROOM_BYTES_PER_INODE,
            ),
        };
        let owner = (GUEST_UID, GUEST_GID);
        let (mut command, inodes) = mke2fs(&self.host, image, &usage, owner, headroom, free_inodes);
        // The files must belong to the guest's user: mke2fs copies owners from what stat(2)
        // says, so run it where our own uid reads as the guest's.
        as_guest_owner(&mut command);
        run_tool(command, format!("packing {} (mke2fs)", self.host.display()))?;
        match_top(&self.host, image)?;
        copy_back_budget(image, inodes)
    }

    /// Copies the guest's changes back: unpacks the tree `source` sends into `scratch`, an
    /// empty folder, within `budget`, then mirrors it into the host folder (writes what
    /// differs, creates what is new, deletes what the guest deleted), `.git` entries only when
    /// the volume is `:rw,git`. Returns the changes it refused: the symlinks whose place in the
    /// host folder holds something else, and those under `.git` (each left as it was).
    pub fn copy_back(
        &self,
        budget: &Budget,
        source: &mut dyn TreeSource,
        scratch: &Path,
    ) -> Result<Vec<Refusal>, Error> {
        let open = |path: &Path, what| {
            Folder::open(path).map_err(|source| Error::Io {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let unpacked = open(scratch, "opening the scratch folder")?;
        let refused =
            unpack::unpack(source, &unpacked, budget).map_err(|source| Error::NotCopiedBack {
                host: self.host.clone(),
                guest: self.guest.clone(),
                source,
            })?;
        let host = open(&self.host, "opening the volume's host folder")?;
        let keep: HashSet<Vec<u8>> = refused.iter().map(|r| r.path.as_bytes().to_vec()).collect();
        let git = match self.mode {
            Mode::ReadWrite { git: true } => Git::Copied,
            _ => Git::Protected,
        };
        let git_refused = mirror::mirror(&unpacked, &host, &keep, git).map_err(|source| {
            Error::CopyBackStopped {
                host: self.host.clone(),
                guest: self.guest.clone(),
                source,
            }
        })?;
        let mut refusals: Vec<Refusal> = refused
            .into_iter()
            .filter(|r| read_link(&host, &r.path).as_deref() != Some(r.target.as_slice()))
            .map(|r| Refusal::Symlink {
                path: self.host.join(OsStr::from_bytes(r.path.as_bytes())),
                target: String::from_utf8_lossy(&r.target).into_owned(),
                why: r.why,
            })
            .collect();
        if git_refused.count > 0 {
            refusals.push(Refusal::Git {
                host: self.host.clone(),
                refused: git_refused,
            });
        }
        Ok(refusals)
    }
}

/// The mode of `-v HOST:GUEST:MODE`: `ro`, `rw`, or `rw,git` (options in any order, docker's
/// way).
fn mode(options: &str) -> Result<Mode, &'static str> {
    let (mut access, mut git) = (None, false);
    for option in options.split(',') {
        match option {
            "ro" | "rw" if access.is_none() => access = Some(option),
            "git" if !git => git = true,
            "ro" | "rw" | "git" => return Err("an option is given twice, or both ro and rw"),
            _ => return Err("the mode must be ro or rw (and git only with rw: rw,git)"),
        }
    }
    match (access, git) {
        (Some("ro"), false) => Ok(Mode::ReadOnly),
        (Some("rw"), git) => Ok(Mode::ReadWrite { git }),
        (Some(_), true) => Err("git is an option of rw volumes only (rw,git)"),
        _ => Err("the mode must be ro or rw (and git only with rw: rw,git)"),
    }
}

/// The target of the symlink at `path` in `folder`, if there is one.
fn read_link(folder: &Folder, path: &TreePath) -> Option<Vec<u8>> {
    let (parent, name) = path.split_last();
    let mut inner = None;
    for component in parent.into_iter().flat_map(|p| p.split(|&b| b == b'/')) {
        let next = inner
            .as_ref()
            .unwrap_or(folder)
            .folder(OsStr::from_bytes(component));
        inner = Some(next.ok()?);
    }
    let target = inner
        .as_ref()
        .unwrap_or(folder)
        .read_link(OsStr::from_bytes(name));
    target.ok().map(|t| t.as_bytes().to_vec())
}

/// Unpacks the tree `source` sends into the empty folder `scratch`, as strictly as a `:rw`
/// volume's (unpack.rs): how `nodeos-vm cp` takes a folder out of a VM. The symlinks it
/// refused.
pub fn unpack_tree(
    source: &mut dyn TreeSource,
    scratch: &Path,
    budget: &Budget,
) -> Result<Vec<Refused>, Error> {
    let folder = Folder::open(scratch).map_err(|source| Error::Io {
        what: "opening the scratch folder",
        path: scratch.to_path_buf(),
        source,
    })?;
    unpack::unpack(source, &folder, budget).map_err(Error::Unpack)
}

/// What a copy-back of the image at `image`, made with `inodes` inodes, may take: the image's
/// size (the guest's whole disk) and twice the inodes (mke2fs rounds them up to fill its
/// groups).
fn copy_back_budget(image: &Path, inodes: u64) -> Result<Budget, Error> {
    let image_len = fs::metadata(image).map_err(|source| Error::Io {
        what: "looking at the packed image",
        path: image.to_path_buf(),
        source,
    })?;
    Ok(Budget {
        bytes: image_len.len(),
        entries: inodes * 2,
        time: COPY_BACK_TIME,
    })
}

/// Packs the folder `tree` into a fresh ext4 image at `image` as it is (owners, modes, times,
/// device nodes as the host has them: a container's root file system), with `headroom` bytes
/// and one inode per 16 KiB of it free for what the guest writes (sparse: unused room costs
/// the host nothing); what a copy-back of a folder in it may take.
pub fn pack_as_is(tree: &Path, image: &Path, headroom: u64) -> Result<Budget, Error> {
    let usage = Usage::of(tree)?;
    let free_inodes = headroom / RW_HEADROOM_BYTES_PER_INODE;
    // The top folder too keeps its owner, not mke2fs's.
    let top = fs::metadata(tree).map_err(|source| Error::Io {
        what: "looking at",
        path: tree.to_path_buf(),
        source,
    })?;
    let owner = (top.uid(), top.gid());
    let (command, inodes) = mke2fs(tree, image, &usage, owner, headroom, free_inodes);
    run_tool(command, format!("packing {} (mke2fs)", tree.display()))?;
    match_top(tree, image)?;
    copy_back_budget(image, inodes)
}

/// Makes a fresh, empty ext4 file system of `size_bytes` (sparse) at `disk`, labelled
/// `label`, with a journal (so a VM killed mid-write comes back consistent); the file appears
/// at `disk` only once it is whole.
pub fn create_empty(disk: &Path, size_bytes: u64, label: &str) -> Result<(), Error> {
    let part = disk.with_extension("ext4.part");
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let file = fs::File::create(&part).map_err(io_err("creating", &part))?;
    file.set_len(size_bytes).map_err(io_err("sizing", &part))?;
    drop(file);
    let mut mke2fs = Command::new("mke2fs");
    mke2fs
        .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", label])
        // The file is new and sparse, so its unwritten blocks already read as zeros.
        .args([
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        ])
        .arg(&part);
    run_tool(mke2fs, format!("creating {} (mke2fs)", disk.display()))?;
    fs::rename(&part, disk).map_err(io_err("renaming", &part))
}

/// Makes the image's top folder the host folder's: mke2fs leaves its own `lost+found`
/// there (unless the host folder has one, whose files it holds then) and gives the top
/// folder its own mode and time, where everything below has the host's. Done with
/// debugfs on the image mke2fs just made, before any guest has seen it.
fn match_top(tree: &Path, image: &Path) -> Result<(), Error> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let top = fs::metadata(tree).map_err(io("looking at", tree))?;
    let mut requests = String::new();
    let lost_found = tree.join(LOST_FOUND);
    if fs::symlink_metadata(&lost_found).is_err() {
        requests.push_str(&format!("rmdir {LOST_FOUND}\n"));
    }
    requests.push_str(&format!(
        "set_inode_field / mode 0{:o}\nset_inode_field / mtime @{}\n",
        libc::S_IFDIR | (top.mode() & 0o7777),
        top.mtime(),
    ));
    let file = image.with_extension("debugfs");
    fs::write(&file, requests).map_err(io("writing", &file))?;
    let mut command = Command::new("debugfs");
    command.arg("-w").arg("-f").arg(&file).arg(image);
    let done = run_tool(command, format!("packing {} (debugfs)", tree.display()));
    let _ = fs::remove_file(&file);
    done
}

/// The mke2fs command that packs `tree` (which takes `usage`) into `image`, its top folder
/// owned by `root_owner`, with `headroom` bytes and `free_inodes` inodes to spare; and the
/// inodes it asks for.
fn mke2fs(
    tree: &Path,
    image: &Path,
    usage: &Usage,
    (uid, gid): (u32, u32),
    headroom: u64,
    free_inodes: u64,
) -> (Command, u64) {
    let size_blocks = (usage.bytes + headroom) / BLOCK;
    let inodes = usage.entries * 2 + free_inodes;
    let mut command = Command::new("mke2fs");
    command
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0"])
        // No journal: the guest syncs before the VM ends.
        .args(["-O", "^has_journal"])
        .args(["-N", &inodes.to_string()])
        .args(["-E", &format!("root_owner={uid}:{gid}")])
        .arg("-d")
        .arg(tree)
        .arg(image)
        .arg(size_blocks.to_string());
    (command, inodes)
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
    check_tool(
        &output,
        &command.get_program().to_string_lossy(),
        &[0],
        what,
    )
}

/// Whether the e2fsprogs tool `program` (its name) did `what`, as its `output` says: ended with
/// one of the `fine` exit statuses, and complained of nothing.
pub(crate) fn check_tool(
    output: &Output,
    program: &str,
    fine: &[i32],
    what: String,
) -> Result<(), Error> {
    // e2fsprogs tools print their banner ("e2fsck 1.47.0 (5-Feb-2023)") on stderr; anything
    // else there is a complaint, even with a status of 0.
    let banner = format!("{program} ");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with(&banner) && !l.trim().is_empty())
        .collect();
    let status_fine = output.status.code().is_some_and(|c| fine.contains(&c));
    if !status_fine || !complaints.is_empty() {
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

#[cfg(test)]
mod tests;
