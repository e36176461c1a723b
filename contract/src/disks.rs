//! The disk plan: which `/dev/vdX` each virtio-blk disk becomes in the guest.
//!
//! The kernel names virtio-blk disks in the order it finds them, which is the order the host
//! attaches them: the read-only root image first ([`ROOT_DEVICE`]), then the user's writable
//! upper layer when there is one, then the volumes in the order of their `nodeos.vol=` words.
//! The host assigns the letters with [`DiskPlan`] and nowhere else.

/// The root image, always the first disk (`root=` on the kernel command line).
pub const ROOT_DEVICE: &str = "/dev/vda";

/// The device path of the disk attached at `index` (0 is `/dev/vda`), named as the kernel's
/// virtio-blk driver names it (`virtblk_name_format`): `vda`..`vdz`, then `vdaa`..`vdzz`, ...
pub fn device_path(index: usize) -> String {
    // Bijective base 26: the letters for index n are those of n + 1 with digits 1..=26.
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!(
        "/dev/vd{}",
        String::from_utf8(letters).expect("ASCII letters")
    )
}

/// Where each disk of one VM goes, given whether it has an upper-layer disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPlan {
    has_upper: bool,
}

impl DiskPlan {
    pub fn new(has_upper: bool) -> Self {
        DiskPlan { has_upper }
    }

    /// The upper layer's device (`/dev/vdb`), when the VM has one.
    pub fn upper_device(&self) -> Option<String> {
        self.has_upper.then(|| device_path(1))
    }

    /// The device of volume `i` (0-based, in `nodeos.vol=` order).
    pub fn volume_device(&self, i: usize) -> String {
        device_path(1 + usize::from(self.has_upper) + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_follow_the_kernels_names() {
        assert_eq!(device_path(0), ROOT_DEVICE);
        assert_eq!(device_path(1), "/dev/vdb");
        assert_eq!(device_path(25), "/dev/vdz");
        assert_eq!(device_path(26), "/dev/vdaa");
        assert_eq!(device_path(27), "/dev/vdab");
        assert_eq!(device_path(26 + 26 * 26 - 1), "/dev/vdzz");
        assert_eq!(device_path(26 + 26 * 26), "/dev/vdaaa");
    }

    #[test]
    fn volumes_come_after_the_root_and_the_upper_disk() {
        let plain = DiskPlan::new(false);
        assert_eq!(plain.upper_device(), None);
        assert_eq!(plain.volume_device(0), "/dev/vdb");
        assert_eq!(plain.volume_device(1), "/dev/vdc");
        let user = DiskPlan::new(true);
        assert_eq!(user.upper_device().as_deref(), Some("/dev/vdb"));
        assert_eq!(user.volume_device(0), "/dev/vdc");
        assert_eq!(user.volume_device(2), "/dev/vde");
    }

    #[test]
    fn every_planned_device_is_one_the_guest_accepts() {
        for has_upper in [false, true] {
            let plan = DiskPlan::new(has_upper);
            for i in 0..40 {
                let device = plan.volume_device(i);
                assert!(
                    crate::params::Volume::new(device.clone(), "/data", false).is_ok(),
                    "{device}"
                );
            }
            if let Some(device) = plan.upper_device() {
                assert!(crate::params::Upper::disk(device).is_ok());
            }
        }
    }
}
