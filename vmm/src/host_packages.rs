//! Host programs we need (QEMU): found on PATH, or installed with apt when we can, so that a
//! fresh Debian machine needs no set-up step before `nodeos-vm start`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum HostPackageError {
    #[error("{program} is not installed; install it with `sudo apt-get install {package}`")]
    Missing {
        program: &'static str,
        package: &'static str,
    },
    #[error("`apt-get install {package}` failed; install {program} by hand")]
    InstallFailed {
        program: &'static str,
        package: &'static str,
    },
}

/// Where `program` is on PATH.
pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Makes sure `program` is on PATH, installing Debian's `package` when we are root; returns
/// where it is.
pub fn ensure(program: &'static str, package: &'static str) -> Result<PathBuf, HostPackageError> {
    if let Some(path) = on_path(program) {
        return Ok(path);
    }
    let can_install = nix::unistd::geteuid().is_root() && Path::new("/usr/bin/apt-get").exists();
    if !can_install {
        return Err(HostPackageError::Missing { program, package });
    }
    eprintln!("nodeos-vm: {program} is missing; installing {package} with apt-get (once)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have no package lists yet.
    let installed = install()
        || (Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && install());
    match on_path(program) {
        Some(path) if installed => Ok(path),
        _ => Err(HostPackageError::InstallFailed { program, package }),
    }
}
