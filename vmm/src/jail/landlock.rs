//! Landlock, where the kernel has it (5.13 and later; 6.12 for the scopes): once in its jail,
//! the process may reach, by path, only the entries of its layout, each as its access says —
//! reading the kernel, reading and writing its disks and `/dev/kvm` (with the device's ioctls),
//! reading and executing programs — and nothing else: no file created, removed, renamed or
//! linked, no other file opened, not even in its own root. It can neither connect to an abstract
//! Unix socket nor signal a process outside its domain. This holds even were the namespaces
//! around it gone, and it is kept across `execve` (QEMU's jail).
//!
//! On a kernel without Landlock, or with an older version of it, the jail does without what
//! that kernel lacks (best effort), and says so at info level.

use ::landlock::{
    Access as _, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

use super::layout::{Access, Entry};
use super::Error;

/// The Landlock version whose rights the jail handles (tested on Linux 6.18).
const VERSION: ABI = ABI::V6;

/// What the jailed process may do with the entry `access` describes.
fn rights(access: Access, is_dir: bool) -> BitFlags<AccessFs> {
    let rights = match access {
        Access::ReadOnly => AccessFs::ReadFile | AccessFs::ReadDir,
        Access::ReadWrite => AccessFs::ReadFile | AccessFs::WriteFile,
        Access::Device => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
        Access::Programs => AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
    };
    if is_dir {
        rights
    } else {
        rights & AccessFs::from_file(VERSION)
    }
}

/// Restricts this process (and what it starts) to `entries`, at their paths in the jail.
pub(super) fn restrict(entries: &[Entry]) -> Result<(), Error> {
    let failed = |e: ::landlock::RulesetError| Error::Step {
        step: "Landlock".into(),
        source: std::io::Error::other(e),
    };
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(VERSION))
        .and_then(|r| r.scope(Scope::from_all(VERSION)))
        .and_then(|r| r.create())
        .map_err(failed)?;
    for entry in entries {
        let Entry::Bind { target, access, .. } = entry else {
            continue;
        };
        let fd = PathFd::new(target).map_err(|e| Error::Step {
            step: format!("opening {} for Landlock", target.display()),
            source: std::io::Error::other(e),
        })?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, rights(*access, target.is_dir())))
            .map_err(failed)?;
    }
    let status = ruleset.restrict_self().map_err(failed)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => tracing::debug!("Landlock: fully enforced"),
        RulesetStatus::PartiallyEnforced => {
            tracing::info!("Landlock: partly enforced (this kernel has an older version)")
        }
        RulesetStatus::NotEnforced => {
            tracing::info!("Landlock: not enforced (this kernel does not have it)")
        }
    }
    Ok(())
}
