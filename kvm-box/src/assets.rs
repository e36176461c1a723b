//! What L1 is made of, fetched once with apt and cached: Debian's cloud kernel of L1's
//! architecture with its modules, and a static busybox.
//!
//! Layout: `<asset dir>/<package>_<version>/` holding the files and a `complete` marker, where
//! the asset dir is `<cache>/kvm-box` for x86-64 and `<cache>/kvm-box/arm64` for arm64 (whose
//! packages come through a private apt state there, [`Apt::private`]). A version is staged in a
//! temporary directory beside it and renamed into place, so parallel runs sharing a cache
//! never see half a download. `<asset dir>/current` names the versions in use; delete it to
//! look for newer packages at once.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use contract::arch::Arch;

use crate::apt::{self, Apt};
use crate::platform::Platform;
use crate::BoxError;

const BUSYBOX_PACKAGE: &str = "busybox-static";
const COMPLETE: &str = "complete";

/// Bumped when what a cached kernel directory holds changes.
const KERNEL_LAYOUT: &str = "box2";

#[derive(Debug, Clone)]
pub struct Assets {
    /// The L1 kernel (x86-64: a bzImage; arm64: an Image).
    pub vmlinuz: PathBuf,
    /// The kernel's `lib/modules/<version>` tree.
    pub module_dir: PathBuf,
    /// Where compressed modules are decompressed to when used.
    pub plain_module_dir: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
    /// The names of busybox's applets (`sh`, `mount`, ...).
    pub applets: Vec<String>,
    /// For logs and reports: `linux-image-6.1.0-56-cloud-amd64_6.1.192-2-box2`.
    pub kernel_version: String,
    pub busybox_version: String,
}

/// Which package versions the cache last resolved to; reused for [`RESOLVE_EVERY`] so that a
/// box does not wait on apt (about 1.5 s) each time.
const CURRENT: &str = "current";
const RESOLVE_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Makes sure the assets of `arch`'s L1 are in `cache_dir`, downloading them the first time.
pub fn ensure(cache_dir: &Path, arch: Arch) -> Result<Assets, BoxError> {
    let platform = Platform::of(arch);
    let root = platform.asset_dir(cache_dir);
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
    let fetched = Apt::for_arch(arch, &platform.arch_dir(cache_dir).join("apt"))
        .and_then(|apt| fetch(&root, platform, &apt));
    let assets = match fetched {
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
fn fetch(root: &Path, platform: &Platform, apt: &Apt) -> Result<Assets, BoxError> {
    let metapackage = platform.kernel_metapackage;
    let kernel = apt.with_lists(metapackage, || apt.dependency(metapackage, "linux-image-"))?;
    let kernel_key = format!("{}-{KERNEL_LAYOUT}", kernel.key());
    cached(root, &kernel_key, |stage| {
        let tree = stage.join("deb");
        let deb = download_into(apt, &kernel, stage, &tree)?;
        let vmlinuz = find_prefixed(&tree.join("boot"), "vmlinuz-")?;
        rename(&vmlinuz, &stage.join("vmlinuz"))?;
        // All of them (about 90 MB): a run may ask for tun, vhost_vsock, ...
        rename(
            &only_subdir(&tree.join("lib/modules"))?,
            &stage.join("modules"),
        )?;
        remove_all(&tree)?;
        remove_file(&deb)
    })?;

    let busybox = apt.with_lists(BUSYBOX_PACKAGE, || apt.candidate(BUSYBOX_PACKAGE))?;
    let busybox_key = busybox.key();
    cached(root, &busybox_key, |stage| {
        let tree = stage.join("deb");
        let deb = download_into(apt, &busybox, stage, &tree)?;
        let binary = stage.join("busybox");
        rename(&tree.join("bin/busybox"), &binary)?;
        // Read from the binary, which may be another architecture's: no running it here.
        let bytes = fs::read(&binary).map_err(BoxError::io("reading", &binary))?;
        let applets = busybox_applets(&bytes)
            .ok_or_else(|| BoxError::Assets(format!("no applet table in {}", binary.display())))?;
        let list = stage.join("applets");
        fs::write(&list, applets.join("\n") + "\n").map_err(BoxError::io("writing", &list))?;
        remove_all(&tree)?;
        remove_file(&deb)
    })?;

    load(root, &format!("{kernel_key}\n{busybox_key}\n"))
        .ok_or_else(|| BoxError::Assets(format!("the assets in {} are incomplete", root.display())))
}

/// Downloads `package` into `stage` and unpacks it into `tree`; returns the .deb.
fn download_into(
    apt: &Apt,
    package: &apt::Package,
    stage: &Path,
    tree: &Path,
) -> Result<PathBuf, BoxError> {
    let deb = apt
        .download(std::slice::from_ref(package), stage)?
        .remove(0);
    apt::extract(&deb, tree)?;
    Ok(deb)
}

/// The applet names of a busybox binary, from the table `busybox --list` prints: one string
/// of NUL-terminated names in order (`[`, `[[`, `acpid`, ...), ended by an empty one.
fn busybox_applets(binary: &[u8]) -> Option<Vec<String>> {
    const START: &[u8] = b"\0[\0[[\0";
    let at = binary.windows(START.len()).position(|w| w == START)? + 1;
    let table = &binary[at..];
    let end = table.windows(2).position(|w| w == b"\0\0")?;
    table[..end]
        .split(|&b| b == 0)
        .map(|name| String::from_utf8(name.to_vec()).ok())
        .collect()
}

/// `root/key`, made by `fill` (given an empty staging directory) if not there yet.
pub(crate) fn cached(
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
    fn busybox_applets_are_read_from_the_binary() {
        // The host's busybox, whatever its build, against its own `--list`.
        let Some(busybox) = crate::host::in_path("busybox") else {
            panic!("this test reads the host's busybox: apt-get install busybox");
        };
        let listed = crate::host::output(std::process::Command::new(&busybox).arg("--list"))
            .unwrap()
            .stdout;
        let listed = String::from_utf8(listed).unwrap();
        let read = busybox_applets(&fs::read(&busybox).unwrap()).unwrap();
        assert_eq!(read, listed.lines().collect::<Vec<_>>());
        assert_eq!(
            busybox_applets(b"junk\0[\0[[\0ash\0sh\0\0more").unwrap(),
            ["[", "[[", "ash", "sh"]
        );
        assert_eq!(busybox_applets(b"no table"), None);
    }
}
