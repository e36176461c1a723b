//! What L1 is made of, fetched once with apt and cached: Debian's cloud kernel with its
//! modules, and a static busybox.
//!
//! Layout: `<cache>/kvm-box/<package>_<version>/` holding the files and a `complete` marker. A
//! version is staged in a temporary directory beside it and renamed into place, so parallel
//! runs sharing a cache never see half a download. `<cache>/kvm-box/current` names the
//! versions in use; delete it to look for newer packages at once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::host;
use crate::BoxError;

/// The metapackage whose dependency is the current cloud kernel.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
const COMPLETE: &str = "complete";

/// Bumped when what a cached kernel directory holds changes.
const KERNEL_LAYOUT: &str = "box2";

#[derive(Debug, Clone)]
pub struct Assets {
    /// The L1 kernel (bzImage).
    pub vmlinuz: PathBuf,
    /// The kernel's `lib/modules/<version>` tree.
    pub module_dir: PathBuf,
    /// Where compressed modules are decompressed to when used.
    pub plain_module_dir: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
    /// The names of busybox's applets (`sh`, `mount`, ...).
    pub applets: Vec<String>,
    /// For logs and reports: `linux-image-6.1.0-56-cloud-amd64_6.1.192-2`.
    pub kernel_version: String,
    pub busybox_version: String,
}

/// Which package versions the cache last resolved to; reused for [`RESOLVE_EVERY`] so that a
/// box does not wait on apt (about 1.5 s) each time.
const CURRENT: &str = "current";
const RESOLVE_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Makes sure the assets are in `cache_dir`, downloading them the first time.
pub fn ensure(cache_dir: &Path) -> Result<Assets, BoxError> {
    let root = cache_dir.join("kvm-box");
    fs::create_dir_all(&root).map_err(BoxError::io("creating", &root))?;
    let current = root.join(CURRENT);
    let fresh = fs::metadata(&current)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default() < RESOLVE_EVERY)
        .unwrap_or(false);
    if fresh {
        if let Some(assets) = fs::read_to_string(&current)
            .ok()
            .and_then(|keys| load(&root, &keys))
        {
            return Ok(assets);
        }
    }
    let assets = match fetch(&root) {
        Ok(assets) => assets,
        Err(err) => {
            // Offline, or apt broken: a stale cache still makes a working box.
            match fs::read_to_string(&current)
                .ok()
                .and_then(|keys| load(&root, &keys))
            {
                Some(assets) => {
                    tracing::warn!(error = %err, "could not refresh the KVM box assets; using the cached ones");
                    return Ok(assets);
                }
                None => return Err(err),
            }
        }
    };
    let keys = format!("{}\n{}\n", assets.kernel_version, assets.busybox_version);
    let tmp = root.join(format!(".{CURRENT}.{}", std::process::id()));
    fs::write(&tmp, keys).map_err(BoxError::io("writing", &tmp))?;
    fs::rename(&tmp, &current).map_err(BoxError::io("writing", &current))?;
    Ok(assets)
}

/// The assets named by a `current` file (kernel key, busybox key), if complete.
fn load(root: &Path, keys: &str) -> Option<Assets> {
    let mut lines = keys.lines();
    let (kernel_key, busybox_key) = (lines.next()?, lines.next()?);
    let (kernel_dir, busybox_dir) = (root.join(kernel_key), root.join(busybox_key));
    if !kernel_dir.join(COMPLETE).exists() || !busybox_dir.join(COMPLETE).exists() {
        return None;
    }
    let applets = fs::read_to_string(busybox_dir.join("applets")).ok()?;
    Some(Assets {
        vmlinuz: kernel_dir.join("vmlinuz"),
        module_dir: kernel_dir.join("modules"),
        plain_module_dir: kernel_dir.join("plain-modules"),
        busybox: busybox_dir.join("busybox"),
        applets: applets
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        kernel_version: kernel_key.to_string(),
        busybox_version: busybox_key.to_string(),
    })
}

/// Resolves the current packages with apt and downloads what the cache lacks.
fn fetch(root: &Path) -> Result<Assets, BoxError> {
    let (kernel_pkg, kernel_ver) = resolve(KERNEL_METAPACKAGE, true)?;
    let kernel_key = format!("{}-{KERNEL_LAYOUT}", cache_key(&kernel_pkg, &kernel_ver));
    cached(root, &kernel_key, |stage| {
        let deb = host::apt_download(&kernel_pkg, &kernel_ver, stage)?;
        let tree = stage.join("deb");
        extract_deb(&deb, &tree)?;
        let boot = tree.join("boot");
        let vmlinuz = find_prefixed(&boot, "vmlinuz-")?;
        rename(&vmlinuz, &stage.join("vmlinuz"))?;
        // All of them (about 90 MB): a run may ask for tun, vhost_vsock, ...
        rename(
            &only_subdir(&tree.join("lib/modules"))?,
            &stage.join("modules"),
        )?;
        remove_all(&tree)?;
        remove_file(&deb)
    })?;

    let (busybox_pkg, busybox_ver) = resolve(BUSYBOX_PACKAGE, false)?;
    let busybox_key = cache_key(&busybox_pkg, &busybox_ver);
    cached(root, &busybox_key, |stage| {
        let deb = host::apt_download(&busybox_pkg, &busybox_ver, stage)?;
        let tree = stage.join("deb");
        extract_deb(&deb, &tree)?;
        let busybox = stage.join("busybox");
        rename(&tree.join("bin/busybox"), &busybox)?;
        // The static binary runs here as well as in L1: ask it for its applets once.
        let list = host::stdout(Command::new(&busybox).arg("--list"))?;
        fs::write(stage.join("applets"), list)
            .map_err(BoxError::io("writing", stage.join("applets")))?;
        remove_all(&tree)?;
        remove_file(&deb)
    })?;

    load(root, &format!("{kernel_key}\n{busybox_key}\n"))
        .ok_or_else(|| BoxError::Assets(format!("the assets in {} are incomplete", root.display())))
}

/// `(package, candidate version)`; for a metapackage, of the package it depends on. Runs
/// `apt-get update` once if apt does not know the package (a fresh machine has no lists).
fn resolve(package: &str, metapackage: bool) -> Result<(String, String), BoxError> {
    let once = || -> Result<(String, String), BoxError> {
        let package = if metapackage {
            depends_on(package)?
        } else {
            package.to_string()
        };
        let version = candidate(&package)?;
        Ok((package, version))
    };
    once().or_else(|first| {
        tracing::info!(error = %first, "apt does not know {package}; running apt-get update");
        host::apt_update()?;
        once()
    })
}

fn depends_on(metapackage: &str) -> Result<String, BoxError> {
    let out = host::stdout(Command::new("apt-cache").args(["depends", metapackage]))?;
    parse_depends(&out, "linux-image-").ok_or_else(|| {
        BoxError::Assets(format!(
            "`apt-cache depends {metapackage}` names no linux-image package:\n{out}"
        ))
    })
}

fn candidate(package: &str) -> Result<String, BoxError> {
    let out = host::stdout(Command::new("apt-cache").args(["policy", package]))?;
    parse_candidate(&out).ok_or_else(|| {
        BoxError::Assets(format!(
            "apt has no installable version of {package}:\n{out}"
        ))
    })
}

/// The first `Depends: <prefix>...` of `apt-cache depends` output.
fn parse_depends(out: &str, prefix: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with(prefix) && !dep.starts_with('<'))
        .map(String::from)
}

fn parse_candidate(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| !v.is_empty() && *v != "(none)")
        .map(String::from)
}

fn cache_key(package: &str, version: &str) -> String {
    // Epochs (`1:1.35.0`) have a colon; keep directory names plain.
    format!("{package}_{}", version.replace(':', "%3a"))
}

/// `root/key`, made by `fill` (given an empty staging directory) if not there yet.
fn cached(
    root: &Path,
    key: &str,
    fill: impl FnOnce(&Path) -> Result<(), BoxError>,
) -> Result<PathBuf, BoxError> {
    let dir = root.join(key);
    if dir.join(COMPLETE).exists() {
        return Ok(dir);
    }
    tracing::info!(dir = %dir.display(), "fetching KVM box assets (once)");
    let stage = tempfile::Builder::new()
        .prefix(&format!(".{key}."))
        .tempdir_in(root)
        .map_err(BoxError::io("creating a staging directory in", root))?;
    fill(stage.path())?;
    fs::write(stage.path().join(COMPLETE), b"")
        .map_err(BoxError::io("writing", stage.path().join(COMPLETE)))?;
    let stage = stage.keep();
    if let Err(e) = fs::rename(&stage, &dir) {
        // Another run may have won the race; its copy is as good as ours.
        let _ = fs::remove_dir_all(&stage);
        if !dir.join(COMPLETE).exists() {
            return Err(BoxError::Io {
                op: "moving the assets into",
                path: dir,
                source: e,
            });
        }
    }
    Ok(dir)
}

fn extract_deb(deb: &Path, into: &Path) -> Result<(), BoxError> {
    host::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))?;
    Ok(())
}

fn find_prefixed(dir: &Path, prefix: &str) -> Result<PathBuf, BoxError> {
    let entries = fs::read_dir(dir).map_err(BoxError::io("reading", dir))?;
    for entry in entries {
        let entry = entry.map_err(BoxError::io("reading", dir))?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            return Ok(entry.path());
        }
    }
    Err(BoxError::Assets(format!(
        "no {prefix}* in {}",
        dir.display()
    )))
}

fn only_subdir(dir: &Path) -> Result<PathBuf, BoxError> {
    let mut entries = fs::read_dir(dir).map_err(BoxError::io("reading", dir))?;
    match entries.next() {
        Some(entry) => Ok(entry.map_err(BoxError::io("reading", dir))?.path()),
        None => Err(BoxError::Assets(format!("{} is empty", dir.display()))),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), BoxError> {
    fs::rename(from, to).map_err(BoxError::io("moving", from))
}

fn remove_all(dir: &Path) -> Result<(), BoxError> {
    fs::remove_dir_all(dir).map_err(BoxError::io("removing", dir))
}

fn remove_file(path: &Path) -> Result<(), BoxError> {
    fs::remove_file(path).map_err(BoxError::io("removing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_and_candidate_parse() {
        let depends = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(depends, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            parse_depends("x\n  Depends: <virtual>\n", "linux-image-"),
            None
        );

        let policy = "busybox-static:\n  Installed: (none)\n  Candidate: 1:1.35.0-4+deb12u1+b1\n  Version table:\n";
        assert_eq!(
            parse_candidate(policy).as_deref(),
            Some("1:1.35.0-4+deb12u1+b1")
        );
        assert_eq!(
            parse_candidate("p:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(
            cache_key("busybox-static", "1:1.35.0"),
            "busybox-static_1%3a1.35.0"
        );
    }
}
