//! Resource limits (setrlimit(2)) of a container's process: what the OCI runtime spec's
//! `process.rlimits` asks for, carried in an `Exec`'s container ([`crate::frame::Container`]).
//! The host (the containerd shim) checks them before anything starts; the agent checks them
//! again and sets them in the process's child, as root, before it drops to the container's user.

use std::fmt;

/// Linux's resources that have a limit, by number (the generic numbering, which x86-64 uses),
/// as the OCI runtime spec names them.
const NAMES: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// Most limits one process gets: one per resource.
pub const MAX_RLIMITS: usize = NAMES.len();
/// No limit (`RLIM_INFINITY`).
pub const UNLIMITED: u64 = u64::MAX;

/// One resource's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Rlimit {
    /// Linux's number of the resource (`RLIMIT_NOFILE` is 7).
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Why a limit is not one Linux takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RlimitError {
    /// No resource of Linux has this number.
    UnknownResource(u32),
    /// The soft limit is above the hard one.
    SoftAboveHard(Rlimit),
}

impl fmt::Display for RlimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RlimitError::UnknownResource(n) => write!(f, "no resource of Linux has the number {n}"),
            RlimitError::SoftAboveHard(limit) => {
                write!(f, "{limit}: the soft limit is above the hard one")
            }
        }
    }
}

impl std::error::Error for RlimitError {}

impl Rlimit {
    /// The number of the resource named as the OCI runtime spec does (`RLIMIT_NOFILE`).
    pub fn resource_named(name: &str) -> Option<u32> {
        NAMES.iter().position(|n| *n == name).map(|i| i as u32)
    }

    /// The resource's name, when Linux has it.
    pub fn name(&self) -> Option<&'static str> {
        NAMES.get(self.resource as usize).copied()
    }

    /// Whether setrlimit(2) would take it: a resource Linux has, soft at most hard.
    pub fn check(&self) -> Result<(), RlimitError> {
        if self.name().is_none() {
            return Err(RlimitError::UnknownResource(self.resource));
        }
        if self.soft > self.hard {
            return Err(RlimitError::SoftAboveHard(*self));
        }
        Ok(())
    }
}

/// `RLIMIT_NOFILE 1024/4096` (soft/hard; `unlimited` for no limit).
impl fmt::Display for Rlimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name)?,
            None => write!(f, "resource {}", self.resource)?,
        }
        let value = |v: u64| match v {
            UNLIMITED => "unlimited".to_string(),
            v => v.to_string(),
        };
        write!(f, " {}/{}", value(self.soft), value(self.hard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers_are_linuxs() {
        let linux: [(u32, &str); MAX_RLIMITS] = [
            (libc::RLIMIT_CPU, "RLIMIT_CPU"),
            (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
            (libc::RLIMIT_DATA, "RLIMIT_DATA"),
            (libc::RLIMIT_STACK, "RLIMIT_STACK"),
            (libc::RLIMIT_CORE, "RLIMIT_CORE"),
            (libc::RLIMIT_RSS, "RLIMIT_RSS"),
            (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
            (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
            (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
            (libc::RLIMIT_AS, "RLIMIT_AS"),
            (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
            (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
            (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
            (libc::RLIMIT_NICE, "RLIMIT_NICE"),
            (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
            (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
        ];
        for (number, name) in linux {
            assert_eq!(Rlimit::resource_named(name), Some(number), "{name}");
        }
        assert_eq!(Rlimit::resource_named("RLIMIT_BOGUS"), None);
        assert_eq!(Rlimit::resource_named("rlimit_nofile"), None);
    }

    #[test]
    fn what_linux_would_refuse_is_named() {
        let nofile = Rlimit {
            resource: 7,
            soft: 1024,
            hard: UNLIMITED,
        };
        assert_eq!(nofile.check(), Ok(()));
        assert_eq!(nofile.to_string(), "RLIMIT_NOFILE 1024/unlimited");
        let backwards = Rlimit {
            soft: 4096,
            hard: 1024,
            ..nofile
        };
        assert_eq!(
            backwards.check().unwrap_err().to_string(),
            "RLIMIT_NOFILE 4096/1024: the soft limit is above the hard one"
        );
        let unknown = Rlimit {
            resource: 16,
            ..nofile
        };
        assert_eq!(
            unknown.check().unwrap_err().to_string(),
            "no resource of Linux has the number 16"
        );
        assert_eq!(unknown.to_string(), "resource 16 1024/unlimited");
    }
}
