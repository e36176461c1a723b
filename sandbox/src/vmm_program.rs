//! The VMM program, `nodeos-vmm`: the vmm crate's binary, which runs one VM of our own backend
//! jailed and filtered. build.rs builds it with this crate and nodeos-vm carries it, so one
//! binary is all there is to run or install; it is written once into the cache, in a folder
//! named by its hash, and run from there.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vmm::backend::process::VmmProgram;
use vmm::backend::{qemu, Backend};
use vmm::jail::Jail;

use crate::folders;

/// The program of this very build.
const VMM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nodeos-vmm"));
/// Its SHA-256 (build.rs), which names its folder in the cache.
const VMM_SHA256: &str = env!("NODEOS_VMM_SHA256");
/// Names another VMM program to run instead (debugging a VMM built on its own).
const VMM_PATH_ENV: &str = "NODEOS_VMM";
/// How many programs of other builds the cache keeps (each 2 MB; nodeos-vm of another build
/// writes its own again when it is gone).
const KEPT_OTHERS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cache directory for the VMM program: set NODEOS_VM_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("writing the VMM program to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The backend that runs VMs with this build's VMM program: our VMM on KVM (`accel` none) or
/// QEMU with `accel` (which that program jails), confined by `jail` unless it is none.
pub fn backend(accel: Option<qemu::Accel>, jail: Option<Jail>) -> Result<Backend, Error> {
    let vmm = program()?;
    Ok(match accel {
        None => Backend::Kvm { jail, vmm },
        Some(accel) => Backend::Qemu { accel, jail, vmm },
    })
}

/// The VMM program to run: `$NODEOS_VMM`, else the one this build carries, written into the
/// cache when it is not there yet.
pub fn program() -> Result<VmmProgram, Error> {
    if let Some(path) = std::env::var_os(VMM_PATH_ENV).filter(|p| !p.is_empty()) {
        return Ok(VmmProgram::new(PathBuf::from(path), Vec::new(), Vec::new()));
    }
    let cache = folders::cache_dir().ok_or(Error::NoCacheDir)?;
    let dir = cache.join(format!("vmm-{}", &VMM_SHA256[..16]));
    let path = dir.join("nodeos-vmm");
    if !is_ours(&path) {
        install(&dir, &path).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        folders::remove_older(&cache, "vmm-", &dir, KEPT_OTHERS);
    }
    Ok(VmmProgram::new(path, Vec::new(), Vec::new()))
}

/// Whether `path` holds this build's program (same size: its folder names its hash, and a
/// file cut short by a crash is written again).
fn is_ours(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.len() == VMM.len() as u64)
}

/// Writes the program at `path`, whole or not at all (through a file of its own: two threads
/// may install it at once). The file is closed before it takes its name: a program that is
/// open for writing cannot be executed (ETXTBSY), and another nodeos-vm may run it as soon as
/// it is there.
fn install(dir: &Path, path: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(".nodeos-vmm.")
        .tempfile_in(dir)?;
    file.write_all(VMM)?;
    file.as_file().sync_all()?;
    fs::set_permissions(file.path(), fs::Permissions::from_mode(0o755))?;
    file.into_temp_path().persist(path).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carried_program_is_the_vmm() {
        assert_eq!(&VMM[..4], b"\x7fELF");
        assert_eq!(VMM_SHA256.len(), 64);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm-x/nodeos-vmm");
        install(&dir.path().join("vmm-x"), &path).unwrap();
        assert!(is_ours(&path));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        fs::write(&path, b"cut short").unwrap();
        assert!(!is_ours(&path));
    }
}
