//! Building a VM on arm64 KVM: the vCPUs and their GIC, the console UART and the RTC on MMIO,
//! the virtio devices and the marks port, the `Image` with its device tree; or the same machine
//! put back from a snapshot.

use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::{
    attach_virtio, check_cpus, console_serial, device_err, guest_memory, legacy_err, open_devices,
    open_snapshot, save_trigger, saved, snapshot_header, transport, Built, Error, Vmm,
    DEVICE_PARTIES,
};
use crate::boot::cmdline::{self, MmioSlot};
use crate::boot::{self, fdt};
use crate::devices::bus::Bus;
use crate::devices::legacy::ports::{BootTimer, MarksPort};
use crate::devices::legacy::rtc::Pl031;
use crate::devices::persist::Persist;
use crate::devices::virtio::console::Console;
use crate::devices::virtio::{net, vsock};
use crate::kvm::gic;
use crate::kvm::state::VcpuStates;
use crate::kvm::vcpu;
use crate::kvm::{Vcpu, Vm, VmControl};
use crate::memory;
use crate::memory::{RTC_MMIO_BASE, RTC_MMIO_SIZE, SERIAL_MMIO_BASE, SERIAL_MMIO_SIZE};
use crate::snapshot::save::Saver;
use crate::vm::{ConsoleIo, VmSpec};

/// The console UART's and the RTC's SPIs, then the virtio devices'.
const SERIAL_SPI: u32 = 0;
const RTC_SPI: u32 = 1;
const VIRTIO_SPI_BASE: u32 = 2;

impl Vmm<Built> {
    /// Builds `spec`'s VM on arm64 KVM: guest memory with the `Image` and its device tree, the
    /// vCPUs and their GIC, the console UART and the RTC on MMIO, the virtio devices in the
    /// spec's order and, last, the marks port (docs/guest-contract.md, "Architectures"); or, for
    /// `Start::Restore`, the same machine put back as the snapshot holds it. `net`, `agent` and
    /// `snapshot` as on x86-64.
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
        check_cpus(&vm, spec.cpus, usize::from(u8::MAX))?;
        vcpu::install_kick_handler()?;
        vm.register_memory(&mem)?;
        let vcpus = (0..spec.cpus)
            .map(|i| vm.create_vcpu(i))
            .collect::<Result<Vec<_>, _>>()?;
        let header = snapshot_header(spec, || vcpus[0].cpu_id_hash())?;
        let saved = saved(restoring.as_ref(), header.as_ref())?;
        let kernel = match saved {
            None => Some(boot::load_kernel(&mem, &spec.kernel)?),
            Some(_) => None,
        };
        // The GIC before the vCPUs' registers (their timers' interrupts go to it), and its
        // state after them (it names each vCPU by its MPIDR), as Firecracker restores them.
        let gic = Arc::new(vm.create_gic(spec.cpus)?);
        if let Some(s) = saved {
            for (vcpu, state) in vcpus.iter().zip(&s.vcpus) {
                vcpu.restore_state(state)?;
            }
            gic.restore(&s.vm.gic)?;
        }
        let mpidrs = vcpus
            .iter()
            .map(Vcpu::mpidr)
            .collect::<Result<Vec<_>, _>>()?;

        let parties = usize::from(spec.cpus) + DEVICE_PARTIES;
        let control = Arc::new(VmControl::new(parties).map_err(device_err("VM control events"))?);
        let init_reached = Arc::new(OnceLock::new());

        let mut mmio = Bus::new();
        let serial = console_serial(&vm, SERIAL_SPI, console.output, &control, saved)?;
        mmio.insert(SERIAL_MMIO_BASE, SERIAL_MMIO_SIZE, serial.clone())?;
        // The wall clock at boot. Its alarm interrupt never fires.
        let rtc = Arc::new(Mutex::new(match saved {
            None => Pl031::new(),
            Some(s) => Pl031::restore((), &s.devices.rtc).map_err(legacy_err("PL031 RTC"))?,
        }));
        mmio.insert(RTC_MMIO_BASE, RTC_MMIO_SIZE, rtc.clone())?;

        let mut devices = open_devices(spec, net, agent)?;
        let (trigger, save_at) = save_trigger(spec, &control)?;
        let timer = BootTimer::new(
            started,
            init_reached.clone(),
            console.ready.clone(),
            console.template.clone(),
            save_at,
        );
        let marks = MarksPort::new(timer, control.clone());
        devices.push(Box::new(
            Console::new(contract::ports::MARKS_PORT_NAME, Box::new(marks)).map_err(|e| {
                Error::Device {
                    what: "marks port",
                    source: std::io::Error::other(e),
                }
            })?,
        ));
        let marks_index = devices.len() - 1;
        // Checked before any interrupt is registered for them.
        let needed = VIRTIO_SPI_BASE as usize + devices.len();
        if needed > gic::MAX_SPI as usize {
            return Err(Error::Device {
                what: "virtio interrupts",
                source: std::io::Error::other(format!(
                    "{} devices need {needed} SPIs, more than the GIC's {}",
                    devices.len(),
                    gic::MAX_SPI
                )),
            });
        }
        let (transports, slots) =
            attach_virtio(&vm, &mem, &mut mmio, devices, VIRTIO_SPI_BASE, |i, args| {
                let transport = transport(saved, i, args)?;
                // The guest powers off right after writing its exit status: it must have
                // counted by then.
                Ok(if i == marks_index {
                    transport.serve_on_vcpu()
                } else {
                    transport
                })
            })?;

        if let Some(kernel) = kernel {
            let cmdline = cmdline::assemble(&spec.cmdline, &[])?;
            tracing::debug!("kernel command line: {cmdline:?}");
            let machine = fdt::Machine {
                cmdline: &cmdline.to_string_lossy(),
                memory: (memory::DRAM_START, u64::from(spec.memory_mib) * memory::MIB),
                mpidrs: &mpidrs,
                gic: gic.layout,
                serial: MmioSlot {
                    base: SERIAL_MMIO_BASE,
                    size: SERIAL_MMIO_SIZE,
                    irq: SERIAL_SPI,
                },
                rtc: MmioSlot {
                    base: RTC_MMIO_BASE,
                    size: RTC_MMIO_SIZE,
                    irq: RTC_SPI,
                },
                virtio: &slots,
            };
            let entry = boot::configure(&mem, &kernel, &machine)?;
            tracing::debug!("boot entry: {entry:x?}");
            vcpus[0].set_boot_state(&entry)?;
        }

        let vcpu_states = Arc::new(VcpuStates::new(spec.cpus, trigger.is_some()));
        let saver = match (trigger, header, snapshot) {
            (Some(trigger), Some(header), Some(file)) => Some(Saver {
                file,
                header,
                trigger,
                gic: gic.clone(),
                mpidrs,
                vcpus: vcpu_states.clone(),
                serial: serial.clone(),
                rtc,
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
                pio: Arc::new(Bus::new()),
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
                _gic: gic,
                restored: saved.map(|s| (started, console.ready, s.devices.console_ready)),
                mem,
                backing,
            },
        })
    }
}
