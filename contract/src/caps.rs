//! Capabilities of a container's process (capabilities(7)): what the OCI runtime spec's
//! `process.capabilities` asks for, carried in an `Exec`'s container
//! ([`crate::frame::Container`]). The agent drops the bounding set to them as root, switches
//! to the container's user keeping its capabilities, then sets the effective, permitted and
//! inheritable sets and raises the ambient ones — as runc does. Without them, a container's
//! process has the capabilities of its uid (all of them for uid 0, in the guest).

use std::fmt;

/// Linux's capabilities, by number, as the OCI runtime spec names them.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Every capability bit Linux has.
pub const ALL: u64 = (1 << NAMES.len()) - 1;

/// A process's capability sets, as masks of capability bits (`1 << number`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// What it and its children may ever have.
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    /// Kept across an `execve` of a program without file capabilities.
    pub ambient: u64,
}

/// Only sets the decoder takes: within the capabilities Linux has.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Capabilities {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut mask = || Ok(u64::arbitrary(u)? & ALL);
        Ok(Capabilities {
            bounding: mask()?,
            effective: mask()?,
            permitted: mask()?,
            inheritable: mask()?,
            ambient: mask()?,
        })
    }
}

/// A set of capabilities that cannot be set: it names bits Linux has no capability for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsError {
    pub set: &'static str,
    pub mask: u64,
}

impl fmt::Display for CapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} capabilities {:#x} name bits Linux has no capability for",
            self.set, self.mask
        )
    }
}

impl std::error::Error for CapsError {}

/// The number of the capability the OCI runtime spec calls `name` (`CAP_SYS_ADMIN` is 21).
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|n| n as u32)
}

/// The mask of the capabilities named, or the first name that is not one.
pub fn mask<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<u64, &'a str> {
    names
        .into_iter()
        .try_fold(0, |mask, name| Ok(mask | 1 << number(name).ok_or(name)?))
}

impl Capabilities {
    /// Every set within the capabilities Linux has.
    pub fn check(&self) -> Result<(), CapsError> {
        for (set, mask) in [
            ("bounding", self.bounding),
            ("effective", self.effective),
            ("permitted", self.permitted),
            ("inheritable", self.inheritable),
            ("ambient", self.ambient),
        ] {
            if mask & !ALL != 0 {
                return Err(CapsError { set, mask });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_linuxs_numbers() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        assert_eq!(number("chown"), None);
        // containerd's (and Docker's) default set.
        let default = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        assert_eq!(mask(default), Ok(0xa80425fb));
        assert_eq!(mask(["CAP_KILL", "CAP_BOGUS"]), Err("CAP_BOGUS"));
        assert_eq!(mask(NAMES), Ok(ALL));
    }

    #[test]
    fn sets_beyond_linuxs_capabilities_are_refused() {
        let caps = Capabilities {
            bounding: ALL,
            effective: 1,
            ..Capabilities::default()
        };
        assert_eq!(caps.check(), Ok(()));
        let err = Capabilities {
            ambient: 1 << 41,
            ..caps
        }
        .check()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the ambient capabilities 0x20000000000 name bits Linux has no capability for"
        );
    }
}
