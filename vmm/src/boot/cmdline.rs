//! The kernel command line the guest gets: the caller's, plus one `virtio_mmio.device=` entry
//! per virtio-mmio device, in device order (so the root disk is probed first and is `vda`).

use std::ffi::CString;

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use crate::memory::CMDLINE_MAX_SIZE;

/// Where one virtio-mmio device sits, as the kernel must be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    pub base: u64,
    pub size: u64,
    pub irq: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid kernel command line {cmdline:?}")]
    Invalid {
        cmdline: String,
        #[source]
        source: linux_loader::cmdline::Error,
    },
    #[error("kernel command line longer than {CMDLINE_MAX_SIZE} bytes with {devices} virtio-mmio devices")]
    TooLong {
        devices: usize,
        #[source]
        source: linux_loader::cmdline::Error,
    },
}

/// `base` with the device entries added (before any `-- init args`), NUL-terminated.
pub fn assemble(base: &str, devices: &[MmioSlot]) -> Result<CString, Error> {
    let invalid = |source| Error::Invalid {
        cmdline: base.to_string(),
        source,
    };
    // The kernel parses printable ASCII; linux-loader checks sizes, not characters.
    if !base.chars().all(|c| (' '..='~').contains(&c)) {
        return Err(invalid(linux_loader::cmdline::Error::InvalidAscii));
    }
    let mut cmdline = Cmdline::try_from(base, CMDLINE_MAX_SIZE).map_err(invalid)?;
    for dev in devices {
        cmdline
            .add_virtio_mmio_device(dev.size, GuestAddress(dev.base), dev.irq, None)
            .map_err(|source| Error::TooLong {
                devices: devices.len(),
                source,
            })?;
    }
    cmdline.as_cstring().map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLK: MmioSlot = MmioSlot {
        base: 0xd000_0000,
        size: 0x1000,
        irq: 5,
    };
    const RNG: MmioSlot = MmioSlot {
        base: 0xd000_1000,
        size: 0x1000,
        irq: 6,
    };

    #[test]
    fn appends_devices_in_order() {
        let c = assemble("console=ttyS0 reboot=t panic=-1", &[BLK, RNG]).unwrap();
        assert_eq!(
            c.to_str().unwrap(),
            "console=ttyS0 reboot=t panic=-1 \
             virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
    }

    #[test]
    fn devices_go_before_init_args() {
        let c = assemble("quiet -- --verbose", &[BLK]).unwrap();
        assert_eq!(
            c.to_str().unwrap(),
            "quiet virtio_mmio.device=4K@0xd0000000:5 -- --verbose"
        );
    }

    #[test]
    fn no_devices_keeps_the_line() {
        assert_eq!(assemble("a=b c", &[]).unwrap().to_str().unwrap(), "a=b c");
    }

    #[test]
    fn too_long_is_an_error() {
        let long = "x".repeat(CMDLINE_MAX_SIZE - 10);
        assert!(matches!(
            assemble(&long, &[BLK]),
            Err(Error::TooLong { .. })
        ));
        let longer = "x".repeat(CMDLINE_MAX_SIZE + 1);
        assert!(matches!(assemble(&longer, &[]), Err(Error::Invalid { .. })));
    }

    #[test]
    fn non_ascii_is_rejected() {
        assert!(matches!(
            assemble("root=/dev/vda\u{e9}", &[]),
            Err(Error::Invalid { .. })
        ));
    }
}
