//! What KVM holds of a VM, for snapshots (per architecture: [`VcpuState`], [`VmState`]).
//! Saved from a paused VM (super::control), restored into a fresh one before its vCPUs first
//! run, after Firecracker's `vstate`.
//!
//! A vCPU's state is read on its own thread, as it parks for the pause
//! ([`VcpuStates`]): KVM finishes an I/O or MMIO exit only on the vCPU's next KVM_RUN, so the
//! vCPU first re-enters with `immediate_exit` set, and what it saves is never half an
//! instruction.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::sync::Mutex;

#[cfg(target_arch = "aarch64")]
pub use aarch64::{VcpuState, VmState};
#[cfg(target_arch = "x86_64")]
pub use x86_64::{VcpuState, VmState};

use super::Error;
use crate::devices::lock;

/// Where the vCPUs of a VM that is to be saved leave their state when they park for a pause
/// ([`take`](Self::take) once it holds).
pub struct VcpuStates {
    wanted: bool,
    saved: Mutex<Vec<Option<Result<VcpuState, Error>>>>,
}

impl VcpuStates {
    /// Where `count` vCPUs leave their state at each pause if `wanted` (a VM that is to be
    /// saved), and never otherwise.
    pub fn new(count: u8, wanted: bool) -> Self {
        VcpuStates {
            wanted,
            saved: Mutex::new((0..count).map(|_| None).collect()),
        }
    }

    pub(super) fn wanted(&self) -> bool {
        self.wanted
    }

    pub(super) fn put(&self, index: u8, state: Result<VcpuState, Error>) {
        if let Some(slot) = lock(&self.saved).get_mut(usize::from(index)) {
            *slot = Some(state);
        }
    }

    /// Every vCPU's state, in vCPU order, from the pause that holds.
    pub fn take(&self) -> Result<Vec<VcpuState>, Error> {
        lock(&self.saved)
            .iter_mut()
            .enumerate()
            .map(|(index, slot)| {
                slot.take()
                    .unwrap_or(Err(Error::VcpuNotSaved { vcpu: index as u8 }))
            })
            .collect()
    }
}
