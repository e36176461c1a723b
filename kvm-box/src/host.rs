//! Host tools the box needs: running commands with readable errors, installing programs.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use crate::apt::Apt;
use crate::platform::Platform;
use crate::BoxError;

/// Runs `cmd`, returning its output if it exited 0.
pub(crate) fn output(cmd: &mut Command) -> Result<Output, BoxError> {
    let line = describe(cmd);
    tracing::debug!(cmd = %line, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BoxError::Spawn {
            cmd: line.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(BoxError::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

pub(crate) fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The host QEMU that runs `platform`'s L1: its environment variable's value, or its program
/// from PATH (installed with apt if missing and we are root).
pub(crate) fn qemu(platform: &Platform) -> Result<PathBuf, BoxError> {
    match std::env::var_os(platform.qemu_env) {
        Some(q) => Ok(PathBuf::from(q)),
        None => program(platform.qemu, platform.qemu_package),
    }
}

/// The host program `name` on PATH, installed from Debian's `package` with apt if missing and
/// we are root (otherwise the error names the command to run).
pub fn program(name: &str, package: &str) -> Result<PathBuf, BoxError> {
    if let Some(path) = in_path(name) {
        return Ok(path);
    }
    apt_install(package)?;
    in_path(name)
        .ok_or_else(|| BoxError::Assets(format!("{package} installed but {name} is not in PATH")))
}

/// apt-get install, serialised within this process (apt holds a lock; parallel tests would fail).
pub(crate) fn apt_install(package: &str) -> Result<(), BoxError> {
    static APT: Mutex<()> = Mutex::new(());
    let _guard = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return Err(BoxError::Assets(format!(
            "{package} is needed: run `apt-get install -y {package}` as root"
        )));
    }
    tracing::info!(package, "apt-get install");
    let install = || {
        output(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        Apt::host().update()?;
        install()?;
    }
    Ok(())
}

fn is_root() -> bool {
    // The owner of /proc/self is our effective uid; avoids a libc dependency for geteuid().
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
