//! The file systems of a container's own (the OCI runtime spec's `mounts`, as the containerd
//! shim carries them), in an `Exec`'s container ([`crate::frame::Container`]): binds of guest
//! files and folders (the shim's copies of host ones) and fresh `tmpfs`es, and the spec's
//! masked and read-only paths, mounted in the process's view, in order, before it becomes its
//! root. The host checks each before anything
//! starts; the agent checks them again as it decodes them.

use std::fmt;

/// Most mounts one container has.
pub const MAX_MOUNTS: usize = 64;
/// Longest path (a destination or a bind's source), in bytes: Linux's `PATH_MAX` less its NUL.
pub const MAX_PATH: usize = 4095;
/// Longest `tmpfs` options.
pub const MAX_TMPFS_OPTIONS: usize = 256;
/// The `tmpfs` options a container's `tmpfs` may have (each `NAME=VALUE`).
pub const TMPFS_OPTIONS: [&str; 5] = ["size", "nr_inodes", "mode", "uid", "gid"];

/// One file system mounted in a container's view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    /// Where, in the container's root: an absolute path other than `/`, without `.`, `..` or
    /// empty components. Symlinks on the way resolve inside the root; what is missing is made
    /// (a folder, or an empty file for a file's bind).
    pub destination: Vec<u8>,
    pub kind: MountKind,
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MountKind {
    /// The guest file or folder `source` (absolute, as a destination is), bound there.
    Bind { source: Vec<u8> },
    /// A fresh `tmpfs` with these options: comma-separated `NAME=VALUE`, each name one of
    /// [`TMPFS_OPTIONS`], each value letters, digits and `%` (`size=1m,mode=1777`); may be
    /// empty.
    Tmpfs { options: Vec<u8> },
    /// What is at the destination hidden (the spec's `linux.maskedPaths`): a folder under an
    /// empty read-only `tmpfs`, anything else under `/dev/null`. Nothing when the destination
    /// does not exist (a path the guest's kernel does not have).
    Mask,
    /// What is at the destination made read-only (the spec's `linux.readonlyPaths`): bound
    /// onto itself read-only. Nothing when the destination does not exist.
    ReadOnly,
}

impl Default for MountKind {
    fn default() -> Self {
        MountKind::Tmpfs {
            options: Vec::new(),
        }
    }
}

/// Why a mount is not one a container may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    /// The field: `destination`, `source` or `tmpfs options`.
    pub field: &'static str,
    /// Its value, lossily as text.
    pub value: String,
    pub why: &'static str,
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the mount's {} {:?} {}",
            self.field, self.value, self.why
        )
    }
}

impl std::error::Error for MountError {}

/// Valid mounts only, as the shim sends them (the agent's decoding refuses the others).
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Mount {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let mount = Mount {
            destination: u.arbitrary()?,
            kind: u.arbitrary()?,
            read_only: u.arbitrary()?,
            nosuid: u.arbitrary()?,
            nodev: u.arbitrary()?,
            noexec: u.arbitrary()?,
        };
        mount
            .check()
            .map_err(|_| arbitrary::Error::IncorrectFormat)?;
        Ok(mount)
    }
}

impl Mount {
    /// Whether both sides take it: its paths plain and absolute, its `tmpfs` options known.
    pub fn check(&self) -> Result<(), MountError> {
        check_path("destination", &self.destination)?;
        match &self.kind {
            MountKind::Bind { source } => check_path("source", source),
            MountKind::Tmpfs { options } => check_tmpfs_options(options),
            MountKind::Mask | MountKind::ReadOnly => Ok(()),
        }
    }

    /// The flags byte it travels with.
    pub(crate) fn flags(&self) -> u8 {
        u8::from(self.read_only)
            | u8::from(self.nosuid) << 1
            | u8::from(self.nodev) << 2
            | u8::from(self.noexec) << 3
    }

    /// Sets the flags of a flags byte; `false` when it has bits that mean nothing.
    pub(crate) fn set_flags(&mut self, flags: u8) -> bool {
        self.read_only = flags & 1 != 0;
        self.nosuid = flags & 2 != 0;
        self.nodev = flags & 4 != 0;
        self.noexec = flags & 8 != 0;
        flags & !0xf == 0
    }
}

fn check_path(field: &'static str, path: &[u8]) -> Result<(), MountError> {
    let err = |why| MountError {
        field,
        value: String::from_utf8_lossy(path).into_owned(),
        why,
    };
    if path.len() > MAX_PATH {
        return Err(err("is longer than 4095 bytes"));
    }
    if path.contains(&0) {
        return Err(err("contains a NUL byte"));
    }
    let Some(rest) = path.strip_prefix(b"/") else {
        return Err(err("is not an absolute path"));
    };
    if rest.is_empty() {
        return Err(err("is the root"));
    }
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    if rest
        .split(|&b| b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return Err(err("has a '.', '..' or empty component"));
    }
    Ok(())
}

fn check_tmpfs_options(options: &[u8]) -> Result<(), MountError> {
    let err = |why| MountError {
        field: "tmpfs options",
        value: String::from_utf8_lossy(options).into_owned(),
        why,
    };
    if options.len() > MAX_TMPFS_OPTIONS {
        return Err(err("are longer than 256 bytes"));
    }
    if options.is_empty() {
        return Ok(());
    }
    for option in options.split(|&b| b == b',') {
        let (name, value) = match option.iter().position(|&b| b == b'=') {
            Some(i) => (&option[..i], &option[i + 1..]),
            None => return Err(err("have an option that is not NAME=VALUE")),
        };
        if !TMPFS_OPTIONS.iter().any(|known| known.as_bytes() == name) {
            return Err(err(
                "have an option other than size, nr_inodes, mode, uid and gid",
            ));
        }
        if value.is_empty()
            || !value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'%')
        {
            return Err(err("have a value other than letters, digits and %"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfs(destination: &str, options: &str) -> Mount {
        Mount {
            destination: destination.into(),
            kind: MountKind::Tmpfs {
                options: options.into(),
            },
            ..Mount::default()
        }
    }

    #[test]
    fn plain_absolute_paths_and_known_tmpfs_options_pass() {
        tmpfs("/scratch", "size=1m,mode=1777").check().unwrap();
        tmpfs("/a/b/", "").check().unwrap();
        tmpfs("/dev/x", "size=50%,nr_inodes=4k,uid=0,gid=0")
            .check()
            .unwrap();
        let bind = Mount {
            destination: b"/etc/hosts".to_vec(),
            kind: MountKind::Bind {
                source: b"/run/container-mounts/0/hosts".to_vec(),
            },
            read_only: true,
            ..Mount::default()
        };
        bind.check().unwrap();
    }

    #[test]
    fn anything_else_is_refused_naming_it() {
        for (mount, why) in [
            (tmpfs("relative", ""), "is not an absolute path"),
            (tmpfs("/", ""), "is the root"),
            (tmpfs("/a/../b", ""), "has a '.', '..' or empty component"),
            (tmpfs("/a//b", ""), "has a '.', '..' or empty component"),
            (tmpfs("/a/./b", ""), "has a '.', '..' or empty component"),
            (tmpfs("/a\0b", ""), "contains a NUL byte"),
            (
                tmpfs("/s", "size=1m,context=x"),
                "have an option other than size, nr_inodes, mode, uid and gid",
            ),
            (
                tmpfs("/s", "size=1m,mode=1777,huge=always"),
                "have an option other than size, nr_inodes, mode, uid and gid",
            ),
            (tmpfs("/s", "ro"), "have an option that is not NAME=VALUE"),
            (
                tmpfs("/s", "size=1m,,mode=1"),
                "have an option that is not NAME=VALUE",
            ),
            (
                tmpfs("/s", "mode=1,size=x y"),
                "have a value other than letters, digits and %",
            ),
        ] {
            assert_eq!(mount.check().unwrap_err().why, why, "{mount:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert!(tmpfs(&long, "").check().is_err());
        let err = Mount {
            destination: b"/data".to_vec(),
            kind: MountKind::Bind {
                source: b"../x".to_vec(),
            },
            ..Mount::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the mount's source \"../x\" is not an absolute path"
        );
    }

    #[test]
    fn flags_round_trip_and_unknown_bits_are_refused() {
        let mut mount = Mount::default();
        for flags in 0..16 {
            assert!(mount.set_flags(flags));
            assert_eq!(mount.flags(), flags);
        }
        assert!(!mount.set_flags(0x10));
    }
}
