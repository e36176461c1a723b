//! Where nodeos-vm keeps what outlives its processes, each folder named by one variable of
//! ours or else in the user's base folder of its kind (`dirs`: the XDG variable when it is an
//! absolute path, else under the home folder):
//! - data — deployed apps (`apps/`), users' writable layers (`users/`):
//!   `${NODEOS_VM_DATA:-${XDG_DATA_HOME:-~/.local/share}/nodeos-vm}`;
//! - cache — the kernel and root image, built once:
//!   `${NODEOS_VM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/nodeos-vm}`.
//!
//! The cache keeps what newer builds replace only for a while: [`beyond_newest`] names what
//! its owners remove, [`remove_older`] removes the older builds of one kind.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// Free bytes for an unprivileged writer in `folder`'s file system.
pub fn free_space(folder: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(folder)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Of `paths`, those beyond the `keep` last modified (the most recent first kept), oldest
/// last; a path that cannot be read counts as the oldest.
pub fn beyond_newest(paths: impl IntoIterator<Item = PathBuf>, keep: usize) -> Vec<PathBuf> {
    let mut dated: Vec<(SystemTime, PathBuf)> = paths
        .into_iter()
        .map(|p| {
            let modified = p.metadata().and_then(|m| m.modified());
            (modified.unwrap_or(SystemTime::UNIX_EPOCH), p)
        })
        .collect();
    dated.sort_by_key(|d| std::cmp::Reverse(d.0));
    dated.into_iter().skip(keep).map(|(_, p)| p).collect()
}

/// Removes the folders in `dir` whose names start with `prefix`, `current` aside, beyond the
/// `keep` last modified (logged; one that cannot be removed is left).
pub fn remove_older(dir: &Path, prefix: &str, current: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let others = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p != current);
    for old in beyond_newest(others, keep) {
        tracing::info!("removing the older build {}", old.display());
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!("removing {}: {e}", old.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_child;

    #[test]
    fn beyond_the_newest_are_the_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let paths: Vec<PathBuf> = (0..4u32)
            .map(|age| {
                let path = dir.path().join(format!("aged-{age}"));
                let file = std::fs::File::create(&path).unwrap();
                file.set_modified(SystemTime::now() - day * age).unwrap();
                path
            })
            .collect();
        let gone = dir.path().join("gone");
        let all = || paths.iter().cloned().rev().chain([gone.clone()]);
        assert_eq!(
            beyond_newest(all(), 2),
            vec![paths[2].clone(), paths[3].clone(), gone.clone()]
        );
        assert!(beyond_newest(all(), 5).is_empty());
        assert_eq!(beyond_newest(all(), 0).len(), 5);
    }

    #[test]
    fn older_folders_of_one_prefix_are_removed_but_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        for (age, name) in ["vmm-a", "vmm-b", "vmm-c", "vmm-d", "kernel-e"]
            .iter()
            .enumerate()
        {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            file.set_modified(SystemTime::now() - day * age as u32)
                .unwrap();
        }
        std::fs::write(dir.path().join("vmm-file"), "").unwrap();
        remove_older(dir.path(), "vmm-", &dir.path().join("vmm-d"), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["kernel-e", "vmm-a", "vmm-d", "vmm-file"]);
    }

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
