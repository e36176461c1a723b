//! What the shim's test files share: the NodeOS image as a containerd archive.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sandbox::artifacts::{Artifact, Store};
use sandbox::oci_image::{self, ImageName};

/// The NodeOS image as an archive, exported once per root image and test build (kept in the
/// target folder; older ones removed).
pub fn image_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let (_, rootfs) = artifacts();
        let build = rootfs
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        // The export's format is this build's: a rebuilt test exports anew.
        let exe = std::env::current_exe().unwrap();
        let built = exe.metadata().unwrap().modified().unwrap();
        let built = built
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let archive = dir.join(format!("nodeos-{build}-{built}.tar"));
        if !archive.exists() {
            for old in std::fs::read_dir(dir).unwrap().flatten() {
                let name = old.file_name().to_string_lossy().into_owned();
                if name.starts_with("nodeos-") && name.ends_with(".tar") {
                    let _ = std::fs::remove_file(old.path());
                }
            }
            let name = ImageName::parse("nodeos").unwrap();
            oci_image::export(&rootfs, &name, &archive).unwrap();
        }
        archive
    })
}

/// The cached kernel and root image (built first when missing).
pub fn artifacts() -> (PathBuf, PathBuf) {
    let store = Store::from_env().unwrap();
    (
        store.ensure(Artifact::Kernel, false).unwrap(),
        store.ensure(Artifact::Rootfs, false).unwrap(),
    )
}
