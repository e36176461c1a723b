//! The one error type of the guest: what failed, and the errno that says why.
//!
//! Boot failures are printed as `nodeos-init: <what>: <why>` (see docs/guest-contract.md), so
//! `Display` gives exactly `<what>: <why>`, with the C library's text for the errno and no
//! `(os error N)` suffix.

use std::ffi::CStr;
use std::fmt;
use std::io;

/// Something the guest tried to do, and why it failed.
///
/// (`Display`/`Error` are written out instead of derived with thiserror: the guest is built
/// with `-C target-feature=+crt-static` in RUSTFLAGS and no `--target`, which cannot build
/// proc-macro crates.)
#[derive(Debug)]
pub enum Error {
    /// A system call failed.
    Sys { what: String, source: io::Error },
    /// A value (the kernel command line, /etc/passwd, a message from a peer) is not what it must be.
    Invalid { what: String, why: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sys { what, source } => write!(f, "{what}: {}", errno_text(source)),
            Error::Invalid { what, why } => write!(f, "{what}: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sys { source, .. } => Some(source),
            Error::Invalid { .. } => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn sys(what: impl Into<String>, source: io::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, why: impl fmt::Display) -> Self {
        Error::Invalid {
            what: what.into(),
            why: why.to_string(),
        }
    }

    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Sys { source, .. } => source.raw_os_error(),
            Error::Invalid { .. } => None,
        }
    }
}

/// Adds "what was being done" to an `io::Result`.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

/// The C library's message for an errno ("No such file or directory").
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated string that stays valid until the
    // next strerror call on this thread; it is copied at once. The guest binary is single-threaded
    // where this is called, and glibc's strerror is thread-safe for known errnos anyway.
    let text = unsafe { CStr::from_ptr(libc::strerror(errno)) };
    text.to_string_lossy().into_owned()
}

/// An `io::Error` as text, without Rust's `(os error N)` suffix.
pub fn errno_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => strerror(errno),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_what_colon_errno_text() {
        let err = Error::sys(
            "mount /dev/vdb on /run/upper",
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(
            err.to_string(),
            "mount /dev/vdb on /run/upper: No such file or directory"
        );
        assert_eq!(err.errno(), Some(libc::ENOENT));
    }

    #[test]
    fn invalid_names_the_value() {
        let err = Error::invalid("nodeos.console=foo", "must be tty or pipe");
        assert_eq!(err.to_string(), "nodeos.console=foo: must be tty or pipe");
        assert_eq!(err.errno(), None);
    }
}
