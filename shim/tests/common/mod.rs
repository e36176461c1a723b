//! What the shim's test files share: the NodeOS image as a containerd archive.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sandbox::artifacts::{Artifact, Store};
use sandbox::oci_image::{self, ImageName};

/// The NodeOS image as an archive, exported once per root image (kept in the target folder).
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
        let archive = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nodeos-{build}.tar"));
        if !archive.exists() {
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
