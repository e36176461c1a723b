//! The guest's devices: legacy PC ports (serial console, i8042, exit and boot-timer ports) and
//! virtio-mmio devices, reached from vCPU exits through a [`bus::Bus`].

pub mod bus;
pub mod legacy;
pub mod virtio;

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a thread panicked while holding it: device state stays
/// usable and the VM can still be torn down cleanly.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
