//! Saving a running VM (`Start::Save`): the vCPU that writes the save byte to the boot-timer
//! port (arm64: the marks port) asks for a pause (devices::legacy::ports::SaveTrigger) and
//! parks right after the write; the save, on its own thread, waits until every vCPU has parked
//! (each leaves its state as it does, crate::kvm::state::VcpuStates), reads KVM's and the
//! devices' state, writes the file and ends the VM with [`VmExit::Saved`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use super::{format, DevicesState, Error, Header, Snapshot, VirtioDeviceState};
#[cfg(target_arch = "aarch64")]
use crate::devices::legacy::rtc::Pl031;
use crate::devices::legacy::serial::{ConsoleWriter, Serial};
#[cfg(target_arch = "x86_64")]
use crate::devices::legacy::{cmos::Cmos, i8042::I8042};
use crate::devices::persist::Persist;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::{lock, Lifecycle};
#[cfg(target_arch = "aarch64")]
use crate::kvm::gic::Gic;
use crate::kvm::state::{VcpuStates, VmState};
use crate::kvm::vcpu::RunError;
#[cfg(target_arch = "x86_64")]
use crate::kvm::Vm;
use crate::kvm::VmControl;
use crate::memory::SharedMemory;
use crate::vm::{ConsoleReady, VmExit};

/// What a save reads, and where it writes.
pub struct Saver {
    /// Where the snapshot goes: the caller's file, written from its start.
    pub file: File,
    pub header: Header,
    /// Readable once the guest wrote the save byte (devices::legacy::ports::BootTimer).
    pub trigger: EventFd,
    #[cfg(target_arch = "x86_64")]
    pub vm: Arc<Vm>,
    /// The GIC, and the MPIDR of each vCPU, which names it to the GIC.
    #[cfg(target_arch = "aarch64")]
    pub gic: Arc<Gic>,
    #[cfg(target_arch = "aarch64")]
    pub mpidrs: Vec<u64>,
    pub vcpus: Arc<VcpuStates>,
    pub serial: Arc<Mutex<Serial<ConsoleWriter>>>,
    #[cfg(target_arch = "x86_64")]
    pub i8042: Arc<Mutex<I8042>>,
    #[cfg(target_arch = "x86_64")]
    pub cmos: Arc<Mutex<Cmos>>,
    #[cfg(target_arch = "aarch64")]
    pub rtc: Arc<Mutex<Pl031>>,
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    pub mem: SharedMemory,
    /// The console's "ready", which the snapshot records.
    pub console_ready: ConsoleReady,
}

impl Saver {
    /// Waits for the trigger, or the VM's end; then for the pause to hold, saves the VM and
    /// ends it: with [`VmExit::Saved`] once the file is on disk, with the error otherwise.
    pub fn run(self, control: &VmControl) {
        let watched = [control.stop_evt().as_raw_fd(), self.trigger.as_raw_fd()];
        if crate::poll::first_readable(&watched, None) != Some(1) {
            return;
        }
        if control.wait_paused().is_err() {
            // The VM ended meanwhile: its outcome stands.
            return;
        }
        let started = Instant::now();
        control.stop(match self.save() {
            Ok(written) => {
                tracing::debug!(
                    "snapshot saved in {:?}: {written} bytes of memory written",
                    started.elapsed()
                );
                Ok(VmExit::Saved)
            }
            Err(e) => Err(RunError::Snapshot(e)),
        });
    }

    /// Writes the paused VM to the file; returns the bytes of memory written.
    fn save(&self) -> Result<u64, Error> {
        let virtio = self
            .transports
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let t = lock(t);
                let transport = t.save();
                let device = t.device_state().ok_or(Error::NotSaveable {
                    index,
                    device_type: transport.device_type,
                })?;
                Ok(VirtioDeviceState { transport, device })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        #[cfg(target_arch = "x86_64")]
        let vm: VmState = self.vm.save_state()?;
        #[cfg(target_arch = "aarch64")]
        let vm = VmState {
            gic: self.gic.save(&self.mpidrs)?,
        };
        let snapshot = Snapshot {
            header: self.header.clone(),
            vm,
            vcpus: self.vcpus.take()?,
            devices: DevicesState {
                serial: lock(&self.serial).save(),
                #[cfg(target_arch = "x86_64")]
                i8042: lock(&self.i8042).save(),
                #[cfg(target_arch = "x86_64")]
                cmos: lock(&self.cmos).save(),
                #[cfg(target_arch = "aarch64")]
                rtc: lock(&self.rtc).save(),
                virtio,
                console_ready: self.console_ready.is_signalled(),
            },
        };
        format::write(&self.file, &snapshot, &self.mem)
    }
}
