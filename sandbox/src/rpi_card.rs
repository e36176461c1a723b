//! A Raspberry Pi SD card image of NodeOS (`nodeos-vm image export --format rpi`): the board's
//! boot firmware, the arm64 kernel and the boards' device trees, the arm64 root image, and the
//! writable layer's partition, assembled by rootfs/rpi-card.sh. The board boots to the REPL as
//! PID 1 on its serial console, as a VM does, with the card's third partition as the overlay's
//! upper layer (what the user writes stays on the card).

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use contract::arch::Arch;
use contract::params::{GuestParams, Upper};

use crate::artifacts::{Artifact, ArtifactError, Store};

/// The card's partitions as the board's kernel names them (rootfs/rpi-card.sh lays them out).
const ROOT_PARTITION: &str = "/dev/mmcblk0p2";
const DATA_PARTITION: &str = "/dev/mmcblk0p3";
/// The kernel's parameters on a board: the mini UART on GPIO 14/15 as the console (the PL011
/// is the Bluetooth chip's on the Pi 3 and 4), the root image on the card, waited for (the SD
/// card is probed asynchronously), our init.
const BOARD_PARAMS: &str = "console=ttyS1,115200 quiet mitigations=off rootfstype=squashfs ro \
rootwait init=/sbin/init";

#[derive(Debug, thiserror::Error)]
pub enum RpiCardError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("running {script}")]
    Spawn {
        script: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{script} failed ({status}); its messages are above")]
    Failed { script: PathBuf, status: String },
}

/// The card's kernel command line (cmdline.txt).
pub fn cmdline() -> String {
    let params = GuestParams {
        upper: Upper::Disk(DATA_PARTITION.into()),
        ..GuestParams::default()
    };
    format!("{BOARD_PARAMS} root={ROOT_PARTITION} {params}")
}

/// Writes the card image to `output` from the arm64 kernel and image of `store`'s cache (built
/// first when missing). The script's progress goes to stderr.
pub fn export(store: &Store, output: &Path) -> Result<(), RpiCardError> {
    let store = store.clone().for_arch(Arch::Aarch64);
    let kernel = store.ensure(Artifact::Kernel, false)?;
    let rootfs = store.ensure(Artifact::Rootfs, false)?;
    let script = store.sources().join("rootfs/rpi-card.sh");
    let stderr = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| RpiCardError::Spawn {
            script: script.clone(),
            source,
        })?;
    let status = Command::new("bash")
        .arg(&script)
        .arg(output)
        .arg(kernel.parent().unwrap_or(Path::new("/")))
        .arg(&rootfs)
        .arg(cmdline())
        .env("DOWNLOAD_DIR", store.cache_dir().join("downloads"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .map_err(|source| RpiCardError::Spawn {
            script: script.clone(),
            source,
        })?;
    if !status.success() {
        return Err(RpiCardError::Failed {
            script,
            status: status.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_boots_its_root_partition_with_the_data_partition_as_upper_layer() {
        let line = cmdline();
        let params = GuestParams::parse(&line).unwrap();
        assert_eq!(params.upper, Upper::Disk(DATA_PARTITION.into()));
        assert!(line.contains(" root=/dev/mmcblk0p2 "), "{line}");
        assert!(line.starts_with("console=ttyS1,115200 "), "{line}");
        params.validate().unwrap();
    }
}
