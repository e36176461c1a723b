//! Building a VM on arm64 KVM: the vCPUs and their GIC, the console UART and the RTC on MMIO,
//! the virtio devices and the marks port, the `Image` with its device tree. Boots only:
//! snapshots are not supported here yet.

use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::{
    attach_virtio, check_cpus, console_line, device_err, open_devices, shared, Built, Error, Vmm,
    DEVICE_PARTIES,
};
use crate::boot::cmdline::{self, MmioSlot};
use crate::boot::{self, fdt};
use crate::devices::bus::Bus;
use crate::devices::legacy::ports::{BootTimer, MarksPort};
use crate::devices::legacy::rtc::Pl031;
use crate::devices::legacy::serial::Serial;
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::{net, vsock};
use crate::kvm::gic;
use crate::kvm::vcpu;
use crate::kvm::{Vcpu, Vm, VmControl};
use crate::memory::{self, SharedMemory};
use crate::memory::{RTC_MMIO_BASE, RTC_MMIO_SIZE, SERIAL_MMIO_BASE, SERIAL_MMIO_SIZE};
use crate::vm::{ConsoleIo, Start, VmSpec};

/// The console UART's and the RTC's SPIs, then the virtio devices'.
const SERIAL_SPI: u32 = 0;
const RTC_SPI: u32 = 1;
const VIRTIO_SPI_BASE: u32 = 2;

impl Vmm<Built> {
    /// Builds `spec`'s VM on arm64 KVM: guest memory with the `Image` and its device tree, the
    /// vCPUs and their GIC, the console UART and the RTC on MMIO, the virtio devices in the
    /// spec's order and, last, the marks port (docs/guest-contract.md, "Architectures"). Only
    /// `Start::Boot`: snapshots on arm64 are not supported yet.
    pub fn build(
        spec: &VmSpec,
        console: ConsoleIo,
        net: Option<net::HostEnd>,
        agent: Option<vsock::host::DeviceSide>,
        _snapshot: Option<File>,
    ) -> Result<Vmm<Built>, Error> {
        let started = Instant::now();
        if !matches!(spec.start, Start::Boot) {
            return Err(Error::SnapshotOnArm64);
        }
        // Memory first: on an early return the VM fd (declared later) is dropped before it.
        let (mem, backing) = memory::create(spec.memory_mib)?;
        tracing::info!(memory_mib = spec.memory_mib, "guest RAM on {backing}");
        let mem: SharedMemory = Arc::new(mem);
        let vm = Arc::new(Vm::new()?);
        check_cpus(&vm, spec.cpus, usize::from(u8::MAX))?;
        vcpu::install_kick_handler()?;
        vm.register_memory(&mem)?;
        let kernel = boot::load_kernel(&mem, &spec.kernel)?;
        let vcpus = (0..spec.cpus)
            .map(|i| vm.create_vcpu(i))
            .collect::<Result<Vec<_>, _>>()?;
        let gic = vm.create_gic(spec.cpus)?;

        let parties = usize::from(spec.cpus) + DEVICE_PARTIES;
        let control = Arc::new(VmControl::new(parties).map_err(device_err("VM control events"))?);
        let init_reached = Arc::new(OnceLock::new());

        let mut mmio = Bus::new();
        let (serial_irq, out) = console_line(&vm, SERIAL_SPI, console.output, &control)?;
        let serial = Arc::new(Mutex::new(Serial::new(serial_irq, out)));
        mmio.insert(SERIAL_MMIO_BASE, SERIAL_MMIO_SIZE, serial.clone())?;
        // The wall clock at boot. Its alarm interrupt never fires.
        mmio.insert(RTC_MMIO_BASE, RTC_MMIO_SIZE, shared(Pl031::new()))?;

        let mut devices = open_devices(spec, net, agent)?;
        let timer = BootTimer::new(
            started,
            init_reached.clone(),
            console.ready.clone(),
            console.template.clone(),
            None,
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
                let transport =
                    MmioTransport::new(args.device, args.mem, args.irq, args.notify, args.base)
                        .map_err(device_err("virtio-mmio transport"))?;
                // The guest powers off right after writing its exit status: it must have
                // counted by then.
                Ok(if i == marks_index {
                    transport.serve_on_vcpu()
                } else {
                    transport
                })
            })?;

        let cmdline = cmdline::assemble(&spec.cmdline, &[])?;
        tracing::debug!("kernel command line: {cmdline:?}");
        let mpidrs = vcpus
            .iter()
            .map(Vcpu::mpidr)
            .collect::<Result<Vec<_>, _>>()?;
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
                _gic: gic,
                restored: None,
                mem,
                backing,
            },
        })
    }
}
