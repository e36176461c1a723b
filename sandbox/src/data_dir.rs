//! Where nodeos-vm keeps what must outlive its processes — deployed apps (`apps/`), users'
//! writable layers (`users/`): `${NODEOS_VM_DATA:-${XDG_DATA_HOME:-~/.local/share}/nodeos-vm}`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("no folder for nodeos-vm's data: set NODEOS_VM_DATA, XDG_DATA_HOME or HOME")]
pub struct NoDataDir;

/// The data folder the environment names (not created here).
pub fn data_dir() -> Result<PathBuf, NoDataDir> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    match (var("NODEOS_VM_DATA"), var("XDG_DATA_HOME"), var("HOME")) {
        (Some(dir), _, _) => Ok(PathBuf::from(dir)),
        (None, Some(dir), _) => Ok(PathBuf::from(dir).join("nodeos-vm")),
        (None, None, Some(home)) => Ok(PathBuf::from(home).join(".local/share/nodeos-vm")),
        (None, None, None) => Err(NoDataDir),
    }
}
