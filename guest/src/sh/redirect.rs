//! Redirections: worked out in the shell first (files opened, `2>&1` resolved), then either
//! consulted by a builtin running in the shell, or installed on descriptors 0, 1, 2, ... in a
//! child (or in the shell itself, before `exec`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

use super::parse::RedirOp;
use crate::error::errno_text;
use crate::sys::cvt;

/// The lowest descriptor used to set sources aside while installing.
const FIRST_SPARE_FD: RawFd = 10;

/// Where each redirected descriptor of a command comes from.
#[derive(Default)]
pub struct Plan {
    /// Target descriptor → source descriptor in the shell, or `None` for closed (`>&-`).
    map: BTreeMap<RawFd, Option<RawFd>>,
    /// Files opened for the command (closed once it has them).
    opened: Vec<OwnedFd>,
}

impl Plan {
    /// Makes `target` a copy of the shell's `source` (a pipe end for a pipeline stage).
    pub fn set(&mut self, target: RawFd, source: RawFd) {
        self.map.insert(target, Some(source));
    }

    /// The shell descriptor that the command's descriptor `fd` is, if it is open.
    pub fn fd(&self, fd: RawFd) -> Option<RawFd> {
        let source = self.map.get(&fd).copied().unwrap_or(Some(fd))?;
        // SAFETY: F_GETFD only reads the descriptor flags; it fails for a closed descriptor.
        cvt(unsafe { libc::fcntl(source, libc::F_GETFD) }).ok()?;
        Some(source)
    }

    /// Adds one redirection, `fd op target`, with `target` expanded.
    pub fn redirect(&mut self, fd: RawFd, op: RedirOp, target: &[u8]) -> Result<(), String> {
        let mut options = OpenOptions::new();
        options.mode(0o666);
        match op {
            RedirOp::Read => options.read(true),
            RedirOp::Write => options.write(true).create(true).truncate(true),
            RedirOp::Append => options.append(true).create(true),
            RedirOp::Dup => {
                let text = String::from_utf8_lossy(target);
                if target == b"-" {
                    self.map.insert(fd, None);
                    return Ok(());
                }
                let source = text
                    .parse::<RawFd>()
                    .ok()
                    .filter(|n| (0..FIRST_SPARE_FD).contains(n))
                    .ok_or_else(|| format!("{text}: not a descriptor number"))?;
                let source = self
                    .fd(source)
                    .ok_or_else(|| format!("{text}: Bad file descriptor"))?;
                self.map.insert(fd, Some(source));
                return Ok(());
            }
        };
        let file = options.open(OsStr::from_bytes(target)).map_err(|e| {
            format!(
                "cannot open {}: {}",
                String::from_utf8_lossy(target),
                errno_text(&e)
            )
        })?;
        let file = OwnedFd::from(file);
        self.map.insert(fd, Some(file.as_raw_fd()));
        self.opened.push(file);
        Ok(())
    }

    /// Puts the plan in place on this process's descriptors.
    pub fn install(self) -> io::Result<()> {
        // Every source is set aside first, so that `3>&1 1>&2 2>&3` sees the original ones.
        let mut staged = Vec::new();
        for (&target, &source) in &self.map {
            let spare = match source {
                // SAFETY: F_DUPFD_CLOEXEC only duplicates the descriptor; the copy is owned here.
                Some(source) => Some(unsafe {
                    OwnedFd::from_raw_fd(cvt(libc::fcntl(
                        source,
                        libc::F_DUPFD_CLOEXEC,
                        FIRST_SPARE_FD,
                    ))?)
                }),
                None => None,
            };
            staged.push((target, spare));
        }
        for (target, spare) in staged {
            match spare {
                // SAFETY: dup2 only changes the descriptor table; target is a small number the
                // script names, which the command is to have.
                Some(spare) => cvt(unsafe { libc::dup2(spare.as_raw_fd(), target) }).map(drop)?,
                // SAFETY: closing a descriptor the script asked to close; EBADF is harmless.
                None => drop(unsafe { libc::close(target) }),
            }
        }
        // A file opened into a free slot that is also a target is now that target: keep it.
        for file in self.opened {
            if self.map.contains_key(&file.as_raw_fd()) {
                let _ = file.into_raw_fd();
            }
        }
        Ok(())
    }
}
