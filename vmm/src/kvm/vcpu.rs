//! One vCPU: its set-up, and the loop that runs it on its own thread, sending port and MMIO
//! exits to the buses until the VM ends.
//!
//! Stopping and pausing (super::control): the thread that owns the vCPU threads kicks each of
//! them with a real-time signal whose handler sets `immediate_exit` in the vCPU's `kvm_run`, so
//! a vCPU halted in the kernel or about to enter it returns at once; the run loop then clears
//! `immediate_exit` and looks at why it was kicked: it returns on a stop, parks on a pause.

use std::cell::Cell;
#[cfg(target_arch = "x86_64")]
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_run, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
#[cfg(target_arch = "x86_64")]
use kvm_bindings::{CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, unblock_signal, Killable, SIGRTMIN};

#[cfg(target_arch = "aarch64")]
use super::aarch64;
#[cfg(target_arch = "x86_64")]
use super::regs;
use super::state::VcpuStates;
use super::{Error, Vm, VmControl};
use crate::boot::BootEntry;
#[cfg(target_arch = "x86_64")]
use crate::cpuid::{self, FeatureMask, VcpuCpuid};
use crate::devices::bus::Bus;
use crate::vm::VmExit;

/// Why a vCPU ended the VM with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "vCPU {vcpu}: KVM internal error: {} (suberror {suberror}, data {data:x?})",
        internal_error_name(*suberror)
    )]
    InternalError {
        vcpu: u8,
        suberror: u32,
        data: Vec<u64>,
    },
    #[error("vCPU {vcpu}: VM entry failed on host CPU {cpu}, hardware reason {reason:#x}")]
    FailEntry { vcpu: u8, reason: u64, cpu: u32 },
    #[error("vCPU {vcpu}: unexpected exit {exit}")]
    UnexpectedExit { vcpu: u8, exit: String },
    #[error("vCPU {vcpu}: KVM_RUN failed")]
    Run {
        vcpu: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{0} thread ended without a result")]
    ThreadEnded(&'static str),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::Error),
    #[error("cannot start the {what} thread")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// KVM's `KVM_INTERNAL_ERROR_*` suberrors.
fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "instruction emulation failed",
        2 => "exception while delivering an exception",
        3 => "event delivery failed",
        4 => "unexpected VM exit",
        _ => "unknown",
    }
}

/// Offset from SIGRTMIN of the signal that kicks vCPUs out of KVM_RUN.
const KICK_SIGNAL_OFFSET: libc::c_int = 0;

fn kick_signal() -> libc::c_int {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

thread_local! {
    /// This thread's vCPU `kvm_run`, for the kick handler; null outside the run loop.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's live kvm_run mapping (cleared before the vCPU
        // is dropped); a volatile byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick handler, once per process.
pub fn install_kick_handler() -> Result<(), Error> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| register_signal_handler(kick_signal(), handle_kick).map_err(|e| e.errno()))
        .map_err(|errno| Error::Ioctl {
            what: "install the vCPU kick signal handler",
            source: kvm_ioctls::Error::new(errno),
        })
}

/// Interrupts the vCPU running on `thread` (see the module doc).
pub fn kick(thread: &JoinHandle<()>) {
    let _ = thread.kill(kick_signal());
}

pub struct Vcpu {
    index: u8,
    pub(super) fd: VcpuFd,
    /// The MSRs a snapshot saves (super::state).
    #[cfg(target_arch = "x86_64")]
    pub(super) msr_indices: Arc<[u32]>,
    /// The registers a snapshot saves: every one KVM lists for the vCPU, read at its creation
    /// (no vCPU thread's filter allows listing them later).
    #[cfg(target_arch = "aarch64")]
    pub(super) reg_ids: Vec<u64>,
    /// The last exit was port or MMIO I/O, which KVM completes on the next KVM_RUN.
    io_pending: bool,
}

#[cfg(target_arch = "aarch64")]
impl Vcpu {
    pub(super) fn new(vm: &Vm, index: u8) -> Result<Self, Error> {
        let fd = vm
            .fd
            .create_vcpu(u64::from(index))
            .map_err(|source| Error::VcpuSetup {
                vcpu: index,
                what: "create the vCPU",
                source,
            })?;
        aarch64::init_vcpu(&vm.fd, &fd, index)?;
        let reg_ids = aarch64::reg_ids(&fd, index)?;
        Ok(Vcpu {
            index,
            fd,
            reg_ids,
            io_pending: false,
        })
    }

    /// Its MPIDR_EL1: how the device tree and PSCI name it.
    pub fn mpidr(&self) -> Result<u64, Error> {
        aarch64::mpidr(&self.fd, self.index)
    }

    /// Gives the boot vCPU its kernel entry state.
    pub fn set_boot_state(&self, boot: &BootEntry) -> Result<(), Error> {
        aarch64::set_boot_regs(&self.fd, self.index, boot)
    }
}

#[cfg(target_arch = "x86_64")]
impl Vcpu {
    pub(super) fn new(
        vm: &Vm,
        index: u8,
        count: u8,
        hidden: &[FeatureMask],
    ) -> Result<Self, Error> {
        let setup = |what| {
            move |source| Error::VcpuSetup {
                vcpu: index,
                what,
                source,
            }
        };
        let fd = vm
            .fd
            .create_vcpu(u64::from(index))
            .map_err(setup("create the vCPU"))?;

        let mut entries = vm.supported_cpuid.as_slice().to_vec();
        let tsc_deadline = vm.tsc_deadline;
        cpuid::normalize(
            &mut entries,
            VcpuCpuid {
                index,
                count,
                tsc_deadline,
            },
            hidden,
        );
        let cpuid =
            CpuId::from_entries(&entries).map_err(|_| Error::CpuidTooLong { vcpu: index })?;
        fd.set_cpuid2(&cpuid).map_err(setup("set CPUID"))?;

        let boot_msrs = regs::boot_msrs();
        let msrs = Msrs::from_entries(&boot_msrs).expect("the boot MSR list is short");
        let set = fd.set_msrs(&msrs).map_err(setup("set the boot MSRs"))?;
        if set != boot_msrs.len() {
            return Err(Error::Msrs {
                vcpu: index,
                set,
                total: boot_msrs.len(),
                index: boot_msrs[set].index,
            });
        }

        if cpuid::vendor(&entries) == cpuid::Vendor::Amd {
            // TscFreqSel, as AMD firmware sets it (Linux otherwise warns of a firmware bug).
            // Best effort: older KVMs refuse the bit, which changes nothing else.
            let hwcr = regs::amd_hwcr();
            let _ = Msrs::from_entries(&[hwcr]).map(|m| fd.set_msrs(&m));
        }

        fd.set_fpu(&regs::boot_fpu())
            .map_err(setup("set the FPU state"))?;
        let mut lapic = fd.get_lapic().map_err(setup("read the LAPIC"))?;
        regs::set_lint(&mut lapic);
        fd.set_lapic(&lapic)
            .map_err(setup("set the LAPIC local interrupts"))?;
        Ok(Vcpu {
            index,
            fd,
            msr_indices: vm.msr_indices.clone(),
            io_pending: false,
        })
    }

    /// Gives the boot vCPU its kernel entry state.
    pub fn set_boot_state(&self, boot: &BootEntry) -> Result<(), Error> {
        let setup = |what| {
            move |source| Error::VcpuSetup {
                vcpu: self.index,
                what,
                source,
            }
        };
        let sregs = self
            .fd
            .get_sregs()
            .map_err(setup("read the special registers"))?;
        self.fd
            .set_sregs(&regs::boot_sregs(boot, &sregs))
            .map_err(setup("set the special registers"))?;
        self.fd
            .set_regs(&regs::boot_regs(boot))
            .map_err(setup("set the registers"))?;
        Ok(())
    }

    /// Starts the vCPU in real mode at `ip` with CS base 0 (for tests of tiny guests).
    #[cfg(test)]
    pub fn set_real_mode_entry(&self, ip: u64) -> Result<(), Error> {
        let setup = |what| {
            move |source| Error::VcpuSetup {
                vcpu: self.index,
                what,
                source,
            }
        };
        let mut sregs = self
            .fd
            .get_sregs()
            .map_err(setup("read the special registers"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        self.fd
            .set_sregs(&sregs)
            .map_err(setup("set the special registers"))?;
        let regs = kvm_bindings::kvm_regs {
            rip: ip,
            rflags: 2,
            ..Default::default()
        };
        self.fd
            .set_regs(&regs)
            .map_err(setup("set the registers"))?;
        Ok(())
    }
}

impl Vcpu {
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Runs the vCPU until the VM stops; records why it ended the VM, if it did. At a pause it
    /// leaves its state in `states` when a snapshot wants it.
    pub fn run(mut self, pio: &Bus, mmio: &Bus, control: &VmControl, states: &VcpuStates) {
        let _ = unblock_signal(kick_signal());
        KVM_RUN.with(|p| p.set(self.fd.get_kvm_run() as *mut kvm_run));
        tracing::debug!(vcpu = self.index, "vCPU running");
        let outcome = self.run_loop(pio, mmio, control, states);
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
        if let Some(outcome) = outcome {
            control.stop(outcome);
        }
        tracing::debug!(vcpu = self.index, "vCPU stopped");
    }

    fn run_loop(
        &mut self,
        pio: &Bus,
        mmio: &Bus,
        control: &VmControl,
        states: &VcpuStates,
    ) -> Option<Result<VmExit, RunError>> {
        let vcpu = self.index;
        loop {
            if control.is_stopping() {
                return None;
            }
            if control.pause_requested() {
                if self.io_pending {
                    // Parks only once KVM has finished the instruction: this KVM_RUN completes
                    // the I/O and returns at once.
                    self.fd.set_kvm_immediate_exit(1);
                } else {
                    if states.wanted() {
                        states.put(vcpu, self.save_state());
                    }
                    if control.park_if_paused() {
                        continue;
                    }
                }
            }
            let exit = match self.fd.run() {
                Ok(exit) => exit,
                Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => {
                    // Kicked: cleared before the loop looks at why (a stop or a pause, asked
                    // for before the kick), so a kick that lands after the look still stops
                    // the next KVM_RUN.
                    self.fd.set_kvm_immediate_exit(0);
                    self.io_pending = false;
                    continue;
                }
                Err(source) => return Some(Err(RunError::Run { vcpu, source })),
            };
            self.io_pending = matches!(
                exit,
                VcpuExit::IoIn(..)
                    | VcpuExit::IoOut(..)
                    | VcpuExit::MmioRead(..)
                    | VcpuExit::MmioWrite(..)
            );
            match exit {
                VcpuExit::IoIn(port, data) => pio.read(u64::from(port), data),
                VcpuExit::IoOut(port, data) => {
                    if let Some(end) = pio.write(u64::from(port), data) {
                        return Some(Ok(end));
                    }
                }
                VcpuExit::MmioRead(addr, data) => mmio.read(addr, data),
                VcpuExit::MmioWrite(addr, data) => {
                    if let Some(end) = mmio.write(addr, data) {
                        return Some(Ok(end));
                    }
                }
                // Triple fault (`reboot=t`, or a crash before the IDT is up).
                VcpuExit::Shutdown => return Some(Ok(VmExit::Reset)),
                // arm64: PSCI SYSTEM_OFF and SYSTEM_RESET. The exit status a guest gives before
                // it powers off has ended the VM already (its marks port is served on the
                // vCPU that writes to it), so this outcome only counts for a guest that gave
                // none.
                VcpuExit::SystemEvent(
                    KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET | KVM_SYSTEM_EVENT_CRASH,
                    _,
                ) => return Some(Ok(VmExit::Reset)),
                // Only without an in-kernel LAPIC: a halted CPU that nothing can wake.
                VcpuExit::Hlt => return Some(Ok(VmExit::Reset)),
                VcpuExit::Intr => {}
                VcpuExit::InternalError => {
                    // SAFETY: the exit reason says `internal` is the valid union member.
                    let info = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
                    let n = (info.ndata as usize).min(info.data.len());
                    return Some(Err(RunError::InternalError {
                        vcpu,
                        suberror: info.suberror,
                        data: info.data[..n].to_vec(),
                    }));
                }
                VcpuExit::FailEntry(reason, cpu) => {
                    return Some(Err(RunError::FailEntry { vcpu, reason, cpu }))
                }
                other => {
                    return Some(Err(RunError::UnexpectedExit {
                        vcpu,
                        exit: format!("{other:?}"),
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_are_named() {
        let e = RunError::InternalError {
            vcpu: 1,
            suberror: 1,
            data: vec![0x10],
        };
        assert_eq!(
            e.to_string(),
            "vCPU 1: KVM internal error: instruction emulation failed (suberror 1, data [10])"
        );
    }
}
