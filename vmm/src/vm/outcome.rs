//! How a VM ends, what it reports, and how the host ends it.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::memory::Backing;
use vmm_sys_util::eventfd::EventFd;

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmExit {
    /// The guest wrote its exit status to the exit port (0xf4).
    Guest(u8),
    /// The guest reset or shut down without an exit status: a kernel panic (`panic=-1`
    /// reboots), a triple fault, or a reboot.
    Reset,
    /// The host ended it through its [`StopSignal`].
    Stopped,
    /// Saved whole to a snapshot, as its spec asked (`Start::Save`), and ended.
    Saved,
}

/// Lets the host end a running VM at once (`nodeos-vm run` once its command is done): the
/// backend watches it and ends the VM with [`VmExit::Stopped`]. Clones share the signal.
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<EventFd>);

impl StopSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignal(Arc::new(EventFd::new(libc::EFD_NONBLOCK)?)))
    }

    /// Asks the backend to end the VM; idempotent.
    pub fn stop(&self) {
        // Never read: it stays readable for whoever watches it.
        let _ = self.0.write(1);
    }

    /// Readable once [`stop`](Self::stop) was called.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The signal whose [`fd`](Self::fd) a parent process handed down as `fd`.
    pub fn from_fd(fd: OwnedFd) -> Self {
        // SAFETY: `fd` is an eventfd (a StopSignal's) that this process now owns alone.
        StopSignal(Arc::new(unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) }))
    }
}

/// What a finished VM reports back.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RunReport {
    pub exit: VmExit,
    /// Time from the backend's start to the guest's write to the boot-timer port (0x3f0).
    pub init_reached: Option<Duration>,
    /// Memory the VMM process holds besides guest RAM, in KiB, when the backend can tell.
    pub vmm_overhead_kib: Option<u64>,
    /// What backs guest RAM in our VMM (crate::memory); `None` from QEMU.
    #[serde(default)]
    pub memory: Option<Backing>,
}
