//! Where nodeos-vm keeps what outlives its processes, each folder named by one variable of
//! ours or else in the user's base folder of its kind (`dirs`: the XDG variable when it is an
//! absolute path, else under the home folder):
//! - data — deployed apps (`apps/`), users' writable layers (`users/`):
//!   `${NODEOS_VM_DATA:-${XDG_DATA_HOME:-~/.local/share}/nodeos-vm}`;
//! - cache — the kernel and root image, built once:
//!   `${NODEOS_VM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/nodeos-vm}`.

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("no folder for nodeos-vm's data: set NODEOS_VM_DATA, XDG_DATA_HOME or HOME")]
pub struct NoDataDir;

/// The data folder the environment names (not created here).
pub fn data_dir() -> Result<PathBuf, NoDataDir> {
    ours(std::env::var_os("NODEOS_VM_DATA"), dirs::data_dir()).ok_or(NoDataDir)
}

/// The cache folder the environment names (not created here).
pub fn cache_dir() -> Option<PathBuf> {
    ours(std::env::var_os("NODEOS_VM_CACHE"), dirs::cache_dir())
}

/// `named` when set, else `nodeos-vm` in the base folder `base`.
fn ours(named: Option<OsString>, base: Option<PathBuf>) -> Option<PathBuf> {
    named
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| base.map(|b| b.join("nodeos-vm")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_child;

    #[test]
    fn our_variable_wins_unless_empty() {
        let base = || Some(PathBuf::from("/base"));
        assert_eq!(ours(Some("/mine".into()), base()), Some("/mine".into()));
        assert_eq!(
            ours(Some("".into()), base()),
            Some("/base/nodeos-vm".into())
        );
        assert_eq!(ours(None, base()), Some("/base/nodeos-vm".into()));
        assert_eq!(ours(None, None), None);
    }

    /// Run alone in a child, which may change its own environment.
    #[test]
    fn child_resolves_folders() {
        if !test_child::is_child() {
            return;
        }
        for name in [
            "NODEOS_VM_DATA",
            "NODEOS_VM_CACHE",
            "XDG_DATA_HOME",
            "XDG_CACHE_HOME",
        ] {
            std::env::remove_var(name);
        }
        std::env::set_var("HOME", "/home/u");
        let both = || (data_dir().unwrap(), cache_dir().unwrap());
        assert_eq!(
            both(),
            (
                "/home/u/.local/share/nodeos-vm".into(),
                "/home/u/.cache/nodeos-vm".into()
            )
        );
        // XDG base folders are absolute; a relative one is ignored.
        std::env::set_var("XDG_DATA_HOME", "data");
        std::env::set_var("XDG_CACHE_HOME", "");
        assert_eq!(
            both(),
            (
                "/home/u/.local/share/nodeos-vm".into(),
                "/home/u/.cache/nodeos-vm".into()
            )
        );
        std::env::set_var("XDG_DATA_HOME", "/xdg/data");
        std::env::set_var("XDG_CACHE_HOME", "/xdg/cache");
        assert_eq!(
            both(),
            ("/xdg/data/nodeos-vm".into(), "/xdg/cache/nodeos-vm".into())
        );
        std::env::set_var("NODEOS_VM_DATA", "/d");
        std::env::set_var("NODEOS_VM_CACHE", "/c");
        assert_eq!(both(), ("/d".into(), "/c".into()));
    }

    #[test]
    fn folders_follow_the_environment() {
        let out = test_child::command("folders::tests::child_resolves_folders")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
