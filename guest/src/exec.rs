//! execvpe: run a program found through a given PATH, with a given environment.
//!
//! Used by the supervisor (for the shim's command) and by `env`: both must search the PATH of
//! the environment the program gets, not their own, as libuv and GNU env do.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;

/// PATH when the environment has none (glibc's execvp default).
pub const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The directories to try for `file`, in order: none if `file` contains a slash.
pub fn candidates(file: &[u8], env: &[CString]) -> Vec<Vec<u8>> {
    if file.contains(&b'/') {
        return vec![file.to_vec()];
    }
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH.as_bytes());
    path.split(|&b| b == b':')
        .map(|dir| {
            // An empty entry means the current directory.
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let mut full = dir.to_vec();
            if !full.ends_with(b"/") {
                full.push(b'/');
            }
            full.extend_from_slice(file);
            full
        })
        .collect()
}

/// Replaces this process with `file` (searched in the PATH of `env`). Returns only on failure,
/// with the errno execvp would give: EACCES if some candidate was not executable, ENOENT if
/// none was found, or the first other error.
pub fn execvpe(file: &CStr, argv: &[CString], env: &[CString]) -> io::Error {
    if file.to_bytes().is_empty() {
        return io::Error::from_raw_os_error(libc::ENOENT);
    }
    let argv_ptrs = null_terminated(argv);
    let env_ptrs = null_terminated(env);
    let mut saw_eacces = false;
    for candidate in candidates(file.to_bytes(), env) {
        let Ok(path) = CString::new(candidate) else {
            continue;
        };
        // SAFETY: path, argv_ptrs and env_ptrs are NUL-terminated strings / NULL-terminated
        // arrays of them, all alive until execve returns (it only returns on failure).
        unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EACCES) => saw_eacces = true,
            Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT) => {}
            _ => return err,
        }
    }
    io::Error::from_raw_os_error(if saw_eacces {
        libc::EACCES
    } else {
        libc::ENOENT
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `NAME=value` entries of this process's environment.
pub fn current_env() -> Vec<CString> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            CString::new(entry).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(path: &str) -> Vec<CString> {
        vec![
            CString::new("HOME=/h").unwrap(),
            CString::new(format!("PATH={path}")).unwrap(),
        ]
    }

    #[test]
    fn a_path_with_a_slash_is_used_as_is() {
        assert_eq!(candidates(b"./x", &env("/bin")), vec![b"./x".to_vec()]);
        assert_eq!(
            candidates(b"/usr/bin/node", &[]),
            vec![b"/usr/bin/node".to_vec()]
        );
    }

    #[test]
    fn a_bare_name_is_searched_in_the_given_path() {
        assert_eq!(
            candidates(b"node", &env("/a:/b/::/c")),
            vec![
                b"/a/node".to_vec(),
                b"/b/node".to_vec(),
                b"./node".to_vec(),
                b"/c/node".to_vec()
            ]
        );
        assert_eq!(
            candidates(b"node", &[]),
            vec![b"/bin/node".to_vec(), b"/usr/bin/node".to_vec()]
        );
    }

    #[test]
    fn missing_programs_give_enoent() {
        let argv = [CString::new("x").unwrap()];
        let file = CString::new("nodeos-no-such-program").unwrap();
        assert_eq!(
            execvpe(&file, &argv, &env("/nonexistent:/also-not")).raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(execvpe(c"", &argv, &[]).raw_os_error(), Some(libc::ENOENT));
    }
}
