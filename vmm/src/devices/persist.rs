//! Device state for snapshots, after Firecracker's per-device `persist.rs`: a device saves what
//! the guest can observe of it as plain data ([`Persist::State`], serde), and is restored from
//! that state plus the host resources it runs on ([`Persist::Args`]: interrupt lines, console
//! descriptors, guest memory, a fresh device behind a transport), which are not state and
//! which the restorer opens again. A state is untrusted input: restoring checks it.
//!
//! Saved here: the serial port (the UART's registers and receive FIFO, and the host input it
//! holds beyond the FIFO), the i8042, the CMOS RTC (index and RAM; the clock is the host's),
//! arm64's PL031 RTC (its registers and its clock's offset from the host's), virtio-rng (which
//! has no state of its own), and the virtio-mmio transport (feature selectors and the driver's
//! features, status, interrupt status, config generation, and each queue's size, ring
//! addresses, ready flag and ring positions). The exit port and the boot
//! timer hold no guest state: the boot timer's marks are the host's run report.
//!
//! The devices behind a transport, which it holds boxed, save through
//! `VirtioDevice::save_state` and `restore_state` (devices::virtio::VirtioState): virtio-net its
//! receive and transmit cursors (its link is the restoring spec's, and frames in flight are
//! lost), virtio-vsock its receive cursor (connections are not kept: a restored device has none,
//! and resets any the guest still names), virtio-blk nothing (the disk is the restoring spec's
//! file, with its own size), virtio-rng nothing, arm64's marks port (virtio-console) the control
//! messages the driver has not taken and its receive cursors.
//!
//! The rest of a snapshot is not here: KVM's state (vCPUs; x86-64's PIC, IOAPIC, PIT and clock,
//! arm64's GIC; and with them pending interrupts) is crate::kvm::state's, guest memory and the
//! file crate::snapshot's. A state is taken from a paused VM (crate::kvm::control), when no device changes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A device whose state a snapshot saves and restores.
pub trait Persist: Sized {
    /// What the guest can observe of the device, as plain data.
    type State: Serialize + DeserializeOwned;
    /// What restoring needs besides the state: the host resources the device runs on.
    type Args;

    fn save(&self) -> Self::State;
    /// The device as `state` says it was, on `args`; refuses a state the device could not be
    /// in.
    fn restore(args: Self::Args, state: &Self::State) -> Result<Self, RestoreError>;
}

/// A saved state that a device cannot take.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{what}: {len} bytes saved, at most {max} fit")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: {len} bytes saved, {expected} expected")]
    Length {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("virtio-mmio: the state is a device of type {saved}'s, not of type {device}")]
    DeviceType { saved: u32, device: u32 },
    #[error("virtio-mmio: {saved} queues saved, the device has {device}")]
    QueueCount { saved: usize, device: usize },
    #[error("virtio-mmio: queue {index} of at most {max} entries saved for one of {saved}")]
    QueueMaxSize { index: usize, saved: u16, max: u16 },
    #[error("virtio-mmio: queue {index}")]
    Queue {
        index: usize,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("virtio-mmio: driver features {driver:#x} beyond the device's {offered:#x}")]
    Features { driver: u64, offered: u64 },
    #[error("virtio-mmio: cannot set up the transport")]
    Transport(#[source] std::io::Error),
    #[error("the state of a {saved} device saved for a device of type {device}")]
    DeviceKind { saved: &'static str, device: u32 },
}

/// `state` through JSON and back, as a snapshot file would carry it.
#[cfg(test)]
pub(crate) fn through_json<T: Serialize + DeserializeOwned>(state: &T) -> T {
    serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap()
}
