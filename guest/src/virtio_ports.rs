//! Finding a virtio-serial port by the name the host gave it: there is no udev to make
//! `/dev/virtio-ports/NAME`, so the name is looked up in sysfs and the port is its
//! `/dev/vportNpM`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Where virtio-serial ports show their names.
const PORTS_DIR: &str = "/sys/class/virtio-ports";
/// The virtio-serial devices the driver took (`virtioN` links).
const DEVICES_DIR: &str = "/sys/bus/virtio/drivers/virtio_console";
const RETRY: Duration = Duration::from_millis(2);

/// The device of the port named `name`, waiting up to `wait` for it to appear: the
/// virtio-console driver adds ports asynchronously after its probe. An error at once on a
/// machine without a virtio-serial device (a Raspberry Pi), or without sysfs.
pub fn find(name: &str, wait: Duration) -> Result<PathBuf> {
    wait_for(name, wait).ok_or_else(|| {
        Error::invalid(
            format!("virtio-serial port {name}"),
            format!("not in {PORTS_DIR}"),
        )
    })
}

fn wait_for(name: &str, wait: Duration) -> Option<PathBuf> {
    let has_device = fs::read_dir(DEVICES_DIR).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("virtio"))
    });
    if !has_device {
        return None;
    }
    let deadline = Instant::now() + wait;
    loop {
        if let Some(port) = port_named(Path::new(PORTS_DIR), name) {
            let device = Path::new("/dev").join(port);
            if device.exists() {
                return Some(device);
            }
        }
        if Instant::now() >= deadline || !Path::new(PORTS_DIR).exists() {
            return None;
        }
        std::thread::sleep(RETRY);
    }
}

/// The entry of `dir` whose `name` file holds `name`.
fn port_named(dir: &Path, name: &str) -> Option<String> {
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let text = fs::read_to_string(entry.path().join("name")).ok()?;
        (text.trim_end() == name).then(|| entry.file_name().to_string_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_found_by_name() {
        let dir = std::env::temp_dir().join(format!("nodeos-ports-{}", std::process::id()));
        for (port, name) in [
            ("vport0p1", "org.other\n"),
            ("vport1p2", "org.nodeos.agent\n"),
        ] {
            fs::create_dir_all(dir.join(port)).unwrap();
            fs::write(dir.join(port).join("name"), name).unwrap();
        }
        fs::create_dir_all(dir.join("vport2p0")).unwrap(); // a port without a name
        assert_eq!(
            port_named(&dir, "org.nodeos.agent").as_deref(),
            Some("vport1p2")
        );
        assert_eq!(port_named(&dir, "org.missing"), None);
        assert_eq!(port_named(Path::new("/nonexistent"), "x"), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
