//! Files between the host and a running VM, through its agent (`nodeos-vm cp`).
//!
//! - **Into the VM**: a tar archive of the host's file or folder (its symlinks kept as links,
//!   never followed), extracted by the guest's user ([`guest_files`]: that user's permissions,
//!   no guest path through a symlink).
//! - **Out of the VM**: a folder comes as the agent's tree stream (`Export`, the one `:rw`
//!   volumes come back in) and is unpacked strictly into a fresh scratch folder beside the
//!   destination (`volume::unpack_tree`: nothing written outside it, symlinks that would leave
//!   it refused), then renamed into place; a file comes as its bytes, read by the guest's user,
//!   into a new file. The host parses nothing else the guest wrote.
//!
//! Nothing on the host is overwritten: the destination must not exist, or be a folder to copy
//! into (as `cp` and `docker cp` do) where the name does not exist yet. The rename into place
//! refuses to replace what appeared meanwhile.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::agent::{self, Command, Event, Input, Session, TreeExport, Wake};
use crate::guest_files::{self, Op, Refusal};
use crate::volume::{self, Budget, Refused};

/// How long a copy may take, either way.
const COPY_TIME: Duration = Duration::from_secs(3600);
/// Most entries a folder copied out may have.
const MAX_ENTRIES: u64 = 1_000_000;
/// Largest answer of a guest query (its kind).
const MAX_ANSWER: usize = 64;
/// How much of a failed operation's stderr is kept for its error.
const MAX_STDERR: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Guest(#[from] Refusal),
    #[error("talking to the guest agent")]
    Agent(#[from] agent::Error),
    #[error("{0} does not exist in the guest")]
    NoSuchGuestPath(String),
    #[error("{0} is a symlink or a special file in the guest: copy what it points to")]
    NotCopyable(String),
    #[error("the guest folder cannot be copied onto the file {0}")]
    FolderOntoFile(String),
    #[error("{} exists already: nodeos-vm cp does not overwrite; remove it first or give a new name", .0.display())]
    Exists(PathBuf),
    #[error("{}: no such folder on the host to copy into", .0.display())]
    NoHostFolder(PathBuf),
    #[error("{}: no such file or folder on the host", .0.display())]
    NoHostPath(PathBuf),
    #[error("{} has no name to give its copy (name the destination in full)", .0.display())]
    NoName(PathBuf),
    #[error("the guest's root folder cannot be copied as a whole: name a folder below it")]
    WholeRoot,
    #[error("copying the guest's folder {guest} out")]
    Unpack {
        guest: String,
        #[source]
        source: Box<volume::Error>,
    },
    #[error("the guest's {0} is larger than the free space on the host")]
    NoSpace(String),
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a copy out made: the host path, and the guest's symlinks it did not make.
#[derive(Debug)]
pub struct CopiedOut {
    pub path: PathBuf,
    pub refused: Vec<Refused>,
}

/// What is at a guest path, as its user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestKind {
    Dir,
    File,
    Other,
    None,
}

/// Copies the host's file or folder `host` into the VM behind `socket` at `guest` (into it,
/// when it is a folder); the guest path it made.
pub fn copy_in(socket: &Path, host: &Path, guest: &str) -> Result<String, Error> {
    let guest = guest_files::check_path(guest)?;
    let meta = std::fs::symlink_metadata(host).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NoHostPath(host.to_path_buf()),
        _ => io_error("reading", host)(e),
    })?;
    // `.` or `dir/..` name the folder they resolve to.
    let name: OsString = match host.file_name() {
        Some(name) => name.to_owned(),
        None => host
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(OsStr::to_owned))
            .ok_or_else(|| Error::NoName(host.to_path_buf()))?,
    };
    let target = match kind(socket, guest)? {
        GuestKind::Dir => format!("{}/{}", guest.trim_end_matches('/'), name.to_string_lossy()),
        GuestKind::File | GuestKind::Other if meta.is_dir() => {
            return Err(Error::FolderOntoFile(guest.to_string()))
        }
        _ => guest.to_string(),
    };
    let target = guest_files::check_path(&target)?.to_string();
    let (folder, entry) = split(&target);
    let (host, entry_name) = (host.to_path_buf(), entry.to_string());
    let command = guest_files::command(Op::TarIn, folder);
    tar_into(socket, &command, |tar| {
        if std::fs::symlink_metadata(&host)?.is_dir() {
            tar.append_dir_all(&entry_name, &host)
        } else {
            tar.append_path_with_name(&host, &entry_name)
        }
    })
    .map_err(|e| match e {
        TarInError::Guest(e) => e,
        TarInError::Pack(e) => io_error("packing", Path::new(&target))(e),
    })?;
    Ok(target)
}

/// A tar archive into a VM that failed: in the guest, or in what the host packed.
#[derive(Debug, thiserror::Error)]
pub enum TarInError {
    #[error(transparent)]
    Guest(#[from] Error),
    #[error("packing the archive")]
    Pack(#[source] io::Error),
}

/// Extracts the tar archive that `pack` appends to into the guest folder `folder` of the VM
/// behind `socket`, as the guest's root: owners, modes and special files as the archive has
/// them. For what the host itself puts into a VM (a pod member's root file system), never
/// for what a user names: [`copy_in`] extracts as the guest's user.
pub fn extract_as_root<F>(socket: &Path, folder: &str, pack: F) -> Result<(), TarInError>
where
    F: FnOnce(&mut tar::Builder<InputWriter>) -> io::Result<()> + Send,
{
    let folder = guest_files::check_path(folder).map_err(Error::from)?;
    let argv = [
        "tar",
        "-x",
        "-p",
        "--numeric-owner",
        "-f",
        "-",
        "-C",
        folder,
    ];
    tar_into(socket, &as_root(&argv, folder, true), pack)
}

/// Removes the guest's `path` and all in it, as the guest's root (what
/// [`extract_as_root`] made).
pub fn remove_as_root(socket: &Path, path: &str) -> Result<(), Error> {
    let path = guest_files::check_path(path)?;
    let (folder, _) = split(path);
    let mut session = start(socket, &as_root(&["rm", "-rf", path], folder, false))?;
    finish(&mut session, MAX_ANSWER).map(drop)
}

/// The guest's root running `argv` in the guest's own tree, with the guest folder `folder`
/// in its view (a container of the guest's root sees none of the guest's mounts but those it
/// is given).
fn as_root(argv: &[&str], folder: &str, stdin: bool) -> Command {
    let folder = folder.as_bytes().to_vec();
    Command {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: Vec::new(),
        cwd: None,
        stdin,
        timeout: Some(COPY_TIME),
        container: Some(contract::frame::Container {
            root: b"/".to_vec(),
            uid: 0,
            gid: 0,
            mounts: vec![contract::mount::Mount {
                destination: folder.clone(),
                kind: contract::mount::MountKind::Bind { source: folder },
                ..contract::mount::Mount::default()
            }],
            ..contract::frame::Container::default()
        }),
        tty: None,
    }
}

/// Runs `command` (a guest `tar -x` reading its stdin) with the archive `pack` appends to
/// (symlinks kept as links, owners, modes and times kept) as its input.
fn tar_into<F>(socket: &Path, command: &Command, pack: F) -> Result<(), TarInError>
where
    F: FnOnce(&mut tar::Builder<InputWriter>) -> io::Result<()> + Send,
{
    let mut session = start(socket, command)?;
    let input = session.input();
    let (ended, packed) = std::thread::scope(|scope| {
        let packer = scope.spawn(|| {
            let mut tar = tar::Builder::new(InputWriter(input.clone()));
            tar.follow_symlinks(false);
            tar.mode(tar::HeaderMode::Complete);
            let packed = pack(&mut tar).and_then(|()| tar.into_inner()?.flush());
            // The end of the archive, or of what could be sent: the guest sees it either way.
            let _ = input.close();
            packed
        });
        // tar -x writes nothing on stdout: a guest that does is bounded like any answer.
        let ended = finish(&mut session, MAX_ANSWER);
        let packed = packer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the packing thread panicked")));
        (ended, packed)
    });
    ended?;
    packed.map_err(TarInError::Pack)
}

/// A command's stdin as a writer.
pub struct InputWriter(Input);

impl Write for InputWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies the guest's file or folder `guest`, in the VM behind `socket`, to `host` (into it,
/// when it is a folder).
pub fn copy_out(socket: &Path, guest: &str, host: &Path) -> Result<CopiedOut, Error> {
    let guest = guest_files::check_path(guest)?;
    if guest == "/" {
        return Err(Error::WholeRoot);
    }
    let kind = kind(socket, guest)?;
    let (_, name) = split(guest);
    let target = match std::fs::symlink_metadata(host) {
        Ok(meta) if meta.is_dir() => host.join(name),
        Ok(_) => return Err(Error::Exists(host.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => host.to_path_buf(),
        Err(e) => return Err(io_error("reading", host)(e)),
    };
    if target.symlink_metadata().is_ok() {
        return Err(Error::Exists(target));
    }
    let parent = match target.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(Error::NoName(target)),
    };
    if !parent.is_dir() {
        return Err(Error::NoHostFolder(parent.to_path_buf()));
    }
    let space = crate::folders::free_space(parent)
        .map_err(io_error("reading the free space of", parent))?;
    match kind {
        GuestKind::None => Err(Error::NoSuchGuestPath(guest.to_string())),
        GuestKind::Other => Err(Error::NotCopyable(guest.to_string())),
        GuestKind::Dir => {
            let scratch = tempfile::Builder::new()
                .prefix(".nodeos-cp-")
                .tempdir_in(parent)
                .map_err(io_error("making a scratch folder in", parent))?;
            let budget = Budget {
                bytes: space,
                entries: MAX_ENTRIES,
                time: COPY_TIME,
            };
            let mut export = TreeExport::new(socket, guest);
            let refused =
                volume::unpack_tree(&mut export, scratch.path(), &budget).map_err(|source| {
                    Error::Unpack {
                        guest: guest.to_string(),
                        source: Box::new(source),
                    }
                })?;
            let mode = 0o777 & !umask();
            std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(mode))
                .map_err(io_error("setting the mode of", scratch.path()))?;
            rename_new(&scratch.keep(), &target)?;
            Ok(CopiedOut {
                path: target,
                refused,
            })
        }
        GuestKind::File => {
            let mut file = tempfile::Builder::new()
                .prefix(".nodeos-cp-")
                .permissions(std::fs::Permissions::from_mode(0o666 & !umask()))
                .tempfile_in(parent)
                .map_err(io_error("making a file in", parent))?;
            let mut session = start(socket, &guest_files::command(Op::Read, guest))?;
            let mut written = 0u64;
            read_all(&mut session, |data| {
                written += data.len() as u64;
                if written > space {
                    return Err(Error::NoSpace(guest.to_string()));
                }
                file.write_all(data).map_err(io_error("writing", &target))
            })?;
            file.as_file()
                .sync_all()
                .map_err(io_error("writing", &target))?;
            let (_, kept) = file
                .keep()
                .map_err(|e| io_error("keeping", &target)(e.error))?;
            rename_new(&kept, &target).inspect_err(|_| {
                let _ = std::fs::remove_file(&kept);
            })?;
            Ok(CopiedOut {
                path: target,
                refused: Vec::new(),
            })
        }
    }
}

/// `path`'s folder and name (`/` for a path right below the root).
fn split(path: &str) -> (&str, &str) {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    (if folder.is_empty() { "/" } else { folder }, name)
}

/// Renames `from` to `to`, which must not exist (not even as a dangling symlink).
fn rename_new(from: &Path, to: &Path) -> Result<(), Error> {
    nix::fcntl::renameat2(
        None,
        from,
        None,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| match e {
        nix::errno::Errno::EEXIST => Error::Exists(to.to_path_buf()),
        e => io_error("renaming into", to)(e.into()),
    })
}

fn umask() -> u32 {
    // The process's umask, read by setting it and back (no other thread changes it).
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

/// What the guest's user sees at `path`.
fn kind(socket: &Path, path: &str) -> Result<GuestKind, Error> {
    let mut session = start(socket, &guest_files::command(Op::Kind, path))?;
    let answer = finish(&mut session, MAX_ANSWER)?;
    Ok(match answer.trim_ascii() {
        b"dir" => GuestKind::Dir,
        b"file" => GuestKind::File,
        b"none" => GuestKind::None,
        _ => GuestKind::Other,
    })
}

/// Starts `command` in the VM behind `socket`, whose end is seen as the connection closing.
fn start(socket: &Path, command: &Command) -> Result<Session, Error> {
    let never = EventFd::new(libc::EFD_NONBLOCK).map_err(agent::Error::Connect)?;
    Ok(Session::start(socket, command, &never, None)?)
}

/// Waits for the end of a guest operation; its stdout, at most `limit` bytes (more is an
/// error).
fn finish(session: &mut Session, limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    read_all(session, |data| {
        if out.len() + data.len() > limit {
            return Err(Error::Guest(Refusal::Failed(format!(
                "the guest answered more than {limit} bytes"
            ))));
        }
        out.extend_from_slice(data);
        Ok(())
    })?;
    Ok(out)
}

/// Passes the operation's stdout to `take` until its end, which must be a success.
fn read_all(
    session: &mut Session,
    mut take: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let never = EventFd::new(libc::EFD_NONBLOCK).map_err(agent::Error::Connect)?;
    let deadline = Instant::now() + COPY_TIME;
    let mut stderr = Vec::new();
    loop {
        match session.next(&never, &[], Some(deadline))? {
            Wake::Event(Event::Stdout(data)) => take(&data)?,
            Wake::Event(Event::Stderr(data)) => {
                let room = MAX_STDERR.saturating_sub(stderr.len());
                stderr.extend_from_slice(&data[..data.len().min(room)]);
            }
            Wake::Event(Event::Started(_)) | Wake::Extra(_) => {}
            Wake::Event(Event::Ended(outcome)) => {
                return Ok(guest_files::outcome(&outcome, &stderr)?);
            }
        }
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_folder_and_name() {
        assert_eq!(split("/home/node/a.txt"), ("/home/node", "a.txt"));
        assert_eq!(split("/tmp"), ("/", "tmp"));
    }
}
