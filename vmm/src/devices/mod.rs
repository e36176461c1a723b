//! The guest's devices: legacy PC ports (serial console, i8042, exit and boot-timer ports) and
//! virtio-mmio devices, reached from vCPU exits through a [`bus::Bus`]; the state they save for
//! snapshots ([`persist`]).

pub mod bus;
pub mod legacy;
pub mod persist;
pub mod virtio;

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a thread panicked while holding it: device state stays
/// usable and the VM can still be torn down cleanly.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the VM's lifecycle reaches the threads that serve devices beside the vCPUs (the device
/// thread, console input): they end when [`stop_evt`](Self::stop_evt) is readable and hold
/// still ([`park`](Self::park)) while [`pause_evt`](Self::pause_evt) is, so that a paused VM's
/// devices do not change under a snapshot. Implemented by crate::kvm::VmControl.
pub trait Lifecycle: Sync {
    /// Readable once the VM is stopping; never read, so every thread watching it sees it.
    fn stop_evt(&self) -> &vmm_sys_util::eventfd::EventFd;
    /// Readable while a pause is asked for; the parties do not read it either.
    fn pause_evt(&self) -> &vmm_sys_util::eventfd::EventFd;
    /// Holds the calling thread, which holds no device lock, while a pause is asked for.
    fn park(&self);
}
