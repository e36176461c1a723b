//! A folder held open by its descriptor, and what the export does relative to it: list it,
//! look at an entry, open an entry, read a symlink. Nothing here follows a symlink: entries are
//! looked at with `AT_SYMLINK_NOFOLLOW` and opened with `O_NOFOLLOW`, so a name the guest's
//! user swaps for a symlink mid-walk is refused instead of leading elsewhere.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys::{cvt, cvt_size, retry};

/// An open folder.
pub struct Dir(OwnedFd);

/// Flags of every open here.
const OPEN: libc::c_int = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;

impl Dir {
    /// Opens the folder at `path` (its last component must not be a symlink).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: path is NUL-terminated and outlives the call.
        let fd = retry(|| cvt(unsafe { libc::open(path.as_ptr(), OPEN | libc::O_DIRECTORY) }))?;
        // SAFETY: open succeeded: a fresh descriptor nobody else owns.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The names in it, but `.` and `..`, in no particular order.
    pub fn names(&self) -> io::Result<Vec<CString>> {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor of an open one.
        let dup = cvt(unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: dup is ours; on success fdopendir owns it (closedir closes it).
        let stream = unsafe { libc::fdopendir(dup) };
        if stream.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so dup is still ours to close.
            unsafe { libc::close(dup) };
            return Err(err);
        }
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; readdir reports an error only through it.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: stream is an open directory stream, used by this thread only.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                break match err.raw_os_error() {
                    Some(0) => Ok(()),
                    _ => Err(err),
                };
            }
            // SAFETY: readdir returned an entry whose d_name is NUL-terminated and valid until
            // the next readdir on this stream; it is copied at once.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        };
        // SAFETY: stream came from fdopendir and is closed once.
        unsafe { libc::closedir(stream) };
        result.map(|()| names)
    }

    /// What `name` is, without following it if it is a symlink.
    pub fn stat(&self, name: &CStr) -> io::Result<libc::stat> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: name is NUL-terminated, st has room for a stat structure.
        cvt(unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: fstatat succeeded and filled st.
        Ok(unsafe { st.assume_init() })
    }

    /// Opens the folder `name` in this one.
    pub fn open_dir(&self, name: &CStr) -> io::Result<(Dir, libc::stat)> {
        let fd = self.open_at(name, libc::O_DIRECTORY)?;
        let st = fstat(fd.as_fd())?;
        Ok((Dir(fd), st))
    }

    /// Opens the entry `name` for reading (without blocking on a FIFO swapped in for it), and
    /// what it is now.
    pub fn open_file(&self, name: &CStr) -> io::Result<(OwnedFd, libc::stat)> {
        let fd = self.open_at(name, libc::O_NONBLOCK)?;
        let st = fstat(fd.as_fd())?;
        Ok((fd, st))
    }

    /// The target of the symlink `name`.
    pub fn read_link(&self, name: &CStr) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: name is NUL-terminated; buf is writable for buf.len() bytes.
        let n = cvt_size(unsafe {
            libc::readlinkat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        buf.truncate(n);
        Ok(buf)
    }

    fn open_at(&self, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        let fd = retry(|| {
            // SAFETY: name is NUL-terminated and outlives the call.
            cvt(unsafe { libc::openat(self.0.as_raw_fd(), name.as_ptr(), OPEN | flags) })
        })?;
        // SAFETY: openat succeeded: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// What an open descriptor is.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st has room for a stat structure.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled st.
    Ok(unsafe { st.assume_init() })
}

/// The next offset from `offset` where the file has data (`SEEK_DATA`) or a hole
/// (`SEEK_HOLE`); `None` when there is none before its end.
pub fn seek(fd: BorrowedFd<'_>, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return Ok(None);
    };
    // SAFETY: lseek has no memory arguments.
    match unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) } {
        -1 => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            e => Err(e),
        },
        at => Ok(Some(at as u64)),
    }
}

/// Reads at `offset` into `buf`; fewer bytes at the end of the file.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    retry(|| {
        // SAFETY: buf is writable for buf.len() bytes.
        cvt_size(unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) })
    })
}
