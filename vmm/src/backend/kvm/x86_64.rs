//! Building a VM on x86-64 KVM: the PC's legacy devices on port I/O (COM1, the i8042, the CMOS
//! RTC, the guest contract's ports), the virtio devices, the boot state of PVH or the 64-bit
//! protocol; or the same machine put back from a snapshot.

use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::{
    attach_virtio, check_cpus, console_serial, device_err, guest_memory, legacy_err, open_devices,
    open_snapshot, save_trigger, saved, snapshot_header, transport, Built, Error, Vmm,
    DEVICE_PARTIES,
};
use crate::boot::cmdline;
use crate::boot::{self, mptable};
use crate::cpuid::DEFAULT_HIDDEN;
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::cmos::{Cmos, DateTime};
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::ports::{BootTimer, ExitPort};
use crate::devices::legacy::{self, IrqLine};
use crate::devices::persist::Persist;
use crate::devices::virtio::{net, vsock};
use crate::kvm::state::VcpuStates;
use crate::kvm::vcpu;
use crate::kvm::{Vm, VmControl};
use crate::snapshot::save::Saver;
use crate::vm::{ConsoleIo, VmSpec};

/// The first interrupt line for virtio devices (0-4: timer, keyboard, cascade, COM2, COM1).
const VIRTIO_IRQ_BASE: u32 = 5;
const EXIT_PORT_LEN: u64 = 1;
const BOOT_TIMER_LEN: u64 = 1;

impl Vmm<Built> {
    /// Builds `spec`'s VM on `console`: guest memory with the kernel and its boot state, the
    /// vCPUs, the legacy devices and the virtio devices in the spec's order; or, for
    /// `Start::Restore`, the same machine put back as the snapshot holds it. `net` is the host
    /// end of the spec's network link when the caller opened it (a VMM process gets it from its
    /// parent: a jailed VMM cannot reach the host's network); it is opened here otherwise.
    /// `snapshot` is the file `spec.start` names, when the caller opened it (a jailed VMM has
    /// no path to it): written by a save, read by a restore.
    pub fn build(
        spec: &VmSpec,
        console: ConsoleIo,
        net: Option<net::HostEnd>,
        agent: Option<vsock::host::DeviceSide>,
        snapshot: Option<File>,
    ) -> Result<Vmm<Built>, Error> {
        let started = Instant::now();
        let (snapshot, restoring) = open_snapshot(spec, snapshot)?;
        // Memory first: on an early return the VM fd (declared later) is dropped before it.
        let (mem, backing) = guest_memory(spec, snapshot.as_ref(), restoring.as_ref())?;
        let vm = Arc::new(Vm::new()?);
        check_cpus(&vm, spec.cpus, usize::from(mptable::MAX_CPUS))?;
        let header = snapshot_header(spec, || Ok(vm.host_cpuid_hash()))?;
        let saved = saved(restoring.as_ref(), header.as_ref())?;
        vcpu::install_kick_handler()?;
        vm.register_memory(&mem)?;
        let kernel = match saved {
            None => Some(boot::load_kernel(&mem, &spec.kernel)?),
            Some(_) => None,
        };

        let parties = usize::from(spec.cpus) + DEVICE_PARTIES;
        let control = Arc::new(VmControl::new(parties).map_err(device_err("VM control events"))?);
        let init_reached = Arc::new(OnceLock::new());

        // Legacy devices on port I/O.
        let mut pio = Bus::new();
        let serial = console_serial(&vm, legacy::SERIAL_IRQ, console.output, &control, saved)?;
        pio.insert(
            legacy::SERIAL_PORT_BASE,
            legacy::SERIAL_PORT_LEN,
            serial.clone(),
        )?;
        let kbd_irq = IrqLine::new().map_err(device_err("i8042 interrupt"))?;
        vm.register_irqfd(&kbd_irq.0, legacy::I8042_IRQ)?;
        let i8042 = Arc::new(Mutex::new(match saved {
            None => I8042::new(kbd_irq),
            Some(s) => I8042::restore(kbd_irq, &s.devices.i8042).map_err(legacy_err("i8042"))?,
        }));
        pio.insert(
            legacy::I8042_PORT_BASE,
            legacy::I8042_PORT_LEN,
            i8042.clone(),
        )?;
        // The wall clock Linux reads at boot when kvm-clock does not give it one.
        let cmos = Arc::new(Mutex::new(match saved {
            None => Cmos::new(),
            Some(s) => {
                Cmos::restore(DateTime::now, &s.devices.cmos).map_err(legacy_err("CMOS RTC"))?
            }
        }));
        pio.insert(legacy::CMOS_PORT_BASE, legacy::CMOS_PORT_LEN, cmos.clone())?;
        pio.insert(
            u64::from(contract::ports::EXIT_PORT),
            EXIT_PORT_LEN,
            shared(ExitPort),
        )?;
        let (trigger, save_at) = save_trigger(spec, &control)?;
        let timer = BootTimer::new(
            started,
            init_reached.clone(),
            console.ready.clone(),
            console.template.clone(),
            save_at,
        );
        pio.insert(
            u64::from(contract::ports::BOOT_TIMER_PORT),
            BOOT_TIMER_LEN,
            shared(timer),
        )?;

        // Virtio devices on MMIO, in the spec's order (the guest's: vda, vdb, ...).
        let devices = open_devices(spec, net, agent)?;
        let mut mmio = Bus::new();
        let (transports, slots) =
            attach_virtio(&vm, &mem, &mut mmio, devices, VIRTIO_IRQ_BASE, |i, args| {
                transport(saved, i, args)
            })?;

        let vcpus = (0..spec.cpus)
            .map(|i| vm.create_vcpu(i, spec.cpus, DEFAULT_HIDDEN))
            .collect::<Result<Vec<_>, _>>()?;
        match (saved, kernel) {
            (Some(s), _) => {
                for (vcpu, state) in vcpus.iter().zip(&s.vcpus) {
                    vcpu.restore_state(state)?;
                }
                vm.restore_state(&s.vm)?;
            }
            (None, Some(kernel)) => {
                let cmdline = cmdline::assemble(&spec.cmdline, &slots)?;
                tracing::debug!("kernel command line: {cmdline:?}");
                let entry = boot::configure(&mem, &kernel, &cmdline, spec.cpus)?;
                tracing::debug!("boot entry: {entry:x?}");
                vcpus[0].set_boot_state(&entry)?;
            }
            (None, None) => unreachable!("a kernel is loaded unless the VM is restored"),
        }

        let vcpu_states = Arc::new(VcpuStates::new(spec.cpus, trigger.is_some()));
        let saver = match (trigger, header, snapshot) {
            (Some(trigger), Some(header), Some(file)) => Some(Saver {
                file,
                header,
                trigger,
                vm: vm.clone(),
                vcpus: vcpu_states.clone(),
                serial: serial.clone(),
                i8042,
                cmos,
                transports: transports.clone(),
                mem: mem.clone(),
                console_ready: console.ready.clone(),
            }),
            _ => None,
        };
        Ok(Vmm {
            state: Built {
                vcpus,
                vm,
                pio: Arc::new(pio),
                mmio: Arc::new(mmio),
                transports,
                serial,
                input: console.input,
                control,
                init_reached,
                seccomp: spec.seccomp,
                measure_overhead: spec.measure_overhead,
                vcpu_states,
                saver,
                restored: saved.map(|s| (started, console.ready, s.devices.console_ready)),
                mem,
                backing,
            },
        })
    }
}

fn shared<D: BusDevice + 'static>(device: D) -> Arc<Mutex<dyn BusDevice>> {
    Arc::new(Mutex::new(device))
}
