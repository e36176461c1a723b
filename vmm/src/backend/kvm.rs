//! Our own VMM on KVM: builds the microVM (memory, vCPUs, devices, boot state) the way QEMU's
//! microvm machine presents it to the guest, runs it, and tears everything down when it ends.
//!
//! A [`Vmm`] goes through its lifecycle in one order, each step a method that takes the last
//! one's result: [`Vmm::build`] gives a `Vmm<Built>` (memory, vCPUs with their boot state,
//! devices; every file it needs open), [`Vmm::confine`] drops the jail's privileges,
//! [`Vmm::start`] starts its threads and gives a `Vmm<Running>`, which its [`VmmControl`]
//! pauses, resumes and stops from any thread, and [`Vmm::wait`] waits for the end and tears it
//! down. A `Vmm` dropped at any step is torn down too: threads stopped and joined, the VM fd
//! closed before its memory is unmapped.
//!
//! Threads: one per vCPU, one for virtio queues, one for console input, one watching the
//! host's stop signal and serving its pause requests, and `vmm`, which kicks the vCPUs for a pause, waits for the end, stops
//! the others and joins them; [`Vmm::wait`] waits for `vmm`. Each of them installs its seccomp
//! filter first (crate::seccomp), unless the spec turns seccomp off; the thread that called
//! [`Vmm::start`] stays as it was.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
use vmm_sys_util::eventfd::EventFd;

use crate::boot;
use crate::boot::cmdline::{self, MmioSlot};
#[cfg(target_arch = "aarch64")]
use crate::boot::fdt;
#[cfg(target_arch = "x86_64")]
use crate::boot::mptable;
#[cfg(target_arch = "x86_64")]
use crate::cpuid::DEFAULT_HIDDEN;
use crate::devices::bus::{Bus, BusDevice, OverlapError};
#[cfg(target_arch = "x86_64")]
use crate::devices::legacy;
#[cfg(target_arch = "x86_64")]
use crate::devices::legacy::cmos::{Cmos, DateTime};
#[cfg(target_arch = "x86_64")]
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::ports::BootTimer;
#[cfg(target_arch = "aarch64")]
use crate::devices::legacy::ports::MarksPort;
#[cfg(target_arch = "x86_64")]
use crate::devices::legacy::ports::{ExitPort, SaveTrigger};
#[cfg(target_arch = "aarch64")]
use crate::devices::legacy::rtc::Pl031;
use crate::devices::legacy::serial::{self, ConsoleWriter, Serial};
use crate::devices::legacy::IrqLine;
#[cfg(target_arch = "x86_64")]
use crate::devices::persist::{Persist, RestoreError};
use crate::devices::virtio::block::{self, Block};
#[cfg(target_arch = "aarch64")]
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::{MmioTransport, TransportArgs};
use crate::devices::virtio::net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{self, Vsock};
use crate::devices::virtio::{worker, VirtioDevice};
use crate::devices::Lifecycle;
use crate::jail::{self, Identity};
use crate::kvm::control::{EndGuard, RunState, TransitionError};
#[cfg(target_arch = "aarch64")]
use crate::kvm::gic::{self, Gic};
#[cfg(target_arch = "x86_64")]
use crate::kvm::state::VcpuStates;
use crate::kvm::vcpu::{self, RunError};
use crate::kvm::{self, Vcpu, Vm, VmControl};
use crate::memory::{self, Backing, GuestMemory, SharedMemory, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
#[cfg(target_arch = "aarch64")]
use crate::memory::{RTC_MMIO_BASE, RTC_MMIO_SIZE, SERIAL_MMIO_BASE, SERIAL_MMIO_SIZE};
use crate::seccomp::{self, ThreadKind};
use crate::snapshot;
#[cfg(target_arch = "x86_64")]
use crate::snapshot::save::Saver;
use crate::vm::{
    ConsoleIo, ConsoleReady, Device, PauseLink, PauseRequest, RunReport, Start, StopSignal, VmExit,
    VmSpec,
};

/// The first interrupt line for virtio devices (0-4: timer, keyboard, cascade, COM2, COM1).
#[cfg(target_arch = "x86_64")]
const VIRTIO_IRQ_BASE: u32 = 5;
#[cfg(target_arch = "x86_64")]
const EXIT_PORT_LEN: u64 = 1;
#[cfg(target_arch = "x86_64")]
const BOOT_TIMER_LEN: u64 = 1;
/// The console UART's and the RTC's SPIs, then the virtio devices' (arm64).
#[cfg(target_arch = "aarch64")]
const SERIAL_SPI: u32 = 0;
#[cfg(target_arch = "aarch64")]
const RTC_SPI: u32 = 1;
#[cfg(target_arch = "aarch64")]
const VIRTIO_SPI_BASE: u32 = 2;
/// The threads besides the vCPUs that park when the VM pauses: the device thread and console
/// input.
const DEVICE_PARTIES: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{requested} vCPUs requested; this host runs 1 to {max}")]
    CpuCount { requested: u8, max: usize },
    #[error(transparent)]
    Memory(#[from] memory::Error),
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
    #[error(transparent)]
    Boot(#[from] boot::Error),
    #[error(transparent)]
    Cmdline(#[from] cmdline::Error),
    #[error(transparent)]
    Disk(#[from] block::OpenError),
    #[error(transparent)]
    Net(#[from] net::Error),
    #[error(transparent)]
    Vsock(#[from] vsock::Error),
    #[error(transparent)]
    Jail(#[from] jail::Error),
    #[error("cannot set up the {what}")]
    Device {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("device layout: {0}")]
    Layout(#[from] OverlapError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot open the snapshot {path}")]
    SnapshotFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[cfg(target_arch = "aarch64")]
    #[error(
        "snapshots of a VM on arm64 KVM are not supported yet: boot it (or use --backend qemu)"
    )]
    SnapshotOnArm64,
}

fn device_err(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Device { what, source }
}

#[cfg(target_arch = "x86_64")]
fn legacy_err(what: &'static str) -> impl FnOnce(RestoreError) -> Error {
    move |source| snapshot::Error::Legacy { what, source }.into()
}

/// Boots `spec` (or saves or restores it, as `spec.start` says) and runs it until the guest
/// exits, resets or fails, or it is saved.
pub fn run(spec: &VmSpec, console: ConsoleIo, stop: &StopSignal) -> Result<RunReport, Error> {
    let ready = console.ready.clone();
    let result =
        Vmm::build(spec, console, None, None, None).and_then(|vmm| vmm.start(stop, None)?.wait());
    // The console relay waits for the guest's "ready"; a VM that is gone will not send it.
    ready.signal();
    result
}

/// One VM on KVM, in the lifecycle step `S`: [`Built`] or [`Running`] (see the module doc).
pub struct Vmm<S> {
    state: S,
}

/// A built VM, not yet running. Field order is drop order: the VM fd goes before its memory.
pub struct Built {
    vcpus: Vec<Vcpu>,
    vm: Arc<Vm>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    serial: Arc<Mutex<Serial<ConsoleWriter>>>,
    input: OwnedFd,
    control: Arc<VmControl>,
    init_reached: Arc<OnceLock<Duration>>,
    /// Whether the VMM's threads install their seccomp filters.
    seccomp: bool,
    /// Where the vCPUs leave their state for a save.
    #[cfg(target_arch = "x86_64")]
    vcpu_states: Arc<VcpuStates>,
    /// The save, for `Start::Save`.
    #[cfg(target_arch = "x86_64")]
    saver: Option<Saver>,
    /// The in-kernel interrupt controller, held as long as the VM.
    #[cfg(target_arch = "aarch64")]
    _gic: Gic,
    /// For a restored VM: when building it began, the console's "ready", and whether the guest
    /// had said it before it was saved (its console then takes input at once).
    restored: Option<(Instant, ConsoleReady, bool)>,
    mem: SharedMemory,
    /// What backs `mem`.
    backing: Backing,
}

/// A running VM: the `vmm` thread, which owns the others, and what must outlive them all.
/// Field order is drop order: threads are joined (see `Drop`) before any of it is dropped, the
/// VM fd goes before its memory.
pub struct Running {
    /// `None` once joined.
    vmm: Option<JoinHandle<Option<u64>>>,
    control: Arc<VmControl>,
    /// The buses and the devices on them, held so that they are dropped here, on the owner's
    /// thread, once every VMM thread is joined, and never by the last VMM thread to end: a
    /// device's drop may do what no VMM thread's filter allows (the vsock device removes its
    /// socket file).
    _devices: (Arc<Bus>, Arc<Bus>, Vec<Arc<Mutex<MmioTransport>>>),
    /// Held for the drop order alone, as is `_mem`.
    _vm: Arc<Vm>,
    init_reached: Arc<OnceLock<Duration>>,
    backing: Backing,
    _mem: SharedMemory,
}

impl Vmm<Built> {
    /// Builds `spec`'s VM on `console`: guest memory with the kernel and its boot state, the
    /// vCPUs, the legacy devices and the virtio devices in the spec's order; or, for
    /// `Start::Restore`, the same machine put back as the snapshot holds it. `net` is the host
    /// end of the spec's network link when the caller opened it (a VMM process gets it from its
    /// parent: a jailed VMM cannot reach the host's network); it is opened here otherwise.
    /// `snapshot` is the file `spec.start` names, when the caller opened it (a jailed VMM has
    /// no path to it): written by a save, read by a restore.
    #[cfg(target_arch = "x86_64")]
    pub fn build(
        spec: &VmSpec,
        console: ConsoleIo,
        net: Option<net::HostEnd>,
        agent: Option<vsock::host::DeviceSide>,
        snapshot: Option<File>,
    ) -> Result<Vmm<Built>, Error> {
        let started = Instant::now();
        let snapshot = match (&spec.start, snapshot) {
            (Start::Boot, _) => None,
            (_, Some(file)) => Some(file),
            (Start::Save { to, .. }, None) => Some(
                File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(to)
                    .map_err(|source| Error::SnapshotFile {
                        path: to.clone(),
                        source,
                    })?,
            ),
            (Start::Restore { from, .. }, None) => {
                Some(File::open(from).map_err(|source| Error::SnapshotFile {
                    path: from.clone(),
                    source,
                })?)
            }
        };
        let restoring = match (&spec.start, &snapshot) {
            (Start::Restore { .. }, Some(file)) => Some(snapshot::format::read(file)?),
            _ => None,
        };
        // Memory first: on an early return the VM fd (declared later) is dropped before it.
        let (mem, backing) = match (&restoring, &snapshot) {
            (Some(loaded), Some(file)) => (
                memory::from_snapshot(spec.memory_mib, file, loaded.memory_offset)?,
                Backing::Snapshot,
            ),
            _ => memory::create(spec.memory_mib)?,
        };
        tracing::info!(memory_mib = spec.memory_mib, "guest RAM on {backing}");
        let mem: SharedMemory = Arc::new(mem);
        let vm = Arc::new(Vm::new()?);
        check_cpus(&vm, spec.cpus, usize::from(mptable::MAX_CPUS))?;
        let header = match &spec.start {
            Start::Boot => None,
            Start::Save { identity, .. } | Start::Restore { identity, .. } => {
                Some(snapshot::Header::new(spec, identity, vm.host_cpuid_hash()))
            }
        };
        let saved = match (&restoring, &header) {
            (Some(loaded), Some(header)) => {
                header.check(&loaded.snapshot.header)?;
                Some(&loaded.snapshot)
            }
            _ => None,
        };
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
        let (serial_irq, out) = console_line(&vm, legacy::SERIAL_IRQ, console.output, &control)?;
        let serial = Arc::new(Mutex::new(match saved {
            None => Serial::new(serial_irq, out),
            Some(s) => Serial::restore((serial_irq, out), &s.devices.serial)
                .map_err(legacy_err("serial port"))?,
        }));
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
        let trigger = match &spec.start {
            Start::Save { at, .. } => {
                let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(device_err("save trigger"))?;
                let timer_evt = evt.try_clone().map_err(device_err("save trigger"))?;
                Some((
                    evt,
                    SaveTrigger {
                        at: *at,
                        evt: timer_evt,
                        control: control.clone(),
                    },
                ))
            }
            _ => None,
        };
        let (trigger, save_at) = trigger.unzip();
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
        let (transports, slots) = attach_virtio(
            &vm,
            &mem,
            &mut mmio,
            devices,
            VIRTIO_IRQ_BASE,
            |i, args| match saved {
                None => MmioTransport::new(args.device, args.mem, args.irq, args.notify, args.base)
                    .map_err(device_err("virtio-mmio transport")),
                Some(s) => {
                    let state = &s.devices.virtio[i];
                    let restore_err = |source| snapshot::Error::Device { index: i, source };
                    let mut args = args;
                    args.device
                        .restore_state(&state.device)
                        .map_err(restore_err)?;
                    Ok(MmioTransport::restore(args, &state.transport).map_err(restore_err)?)
                }
            },
        )?;

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

        let vcpu_states = Arc::new(VcpuStates::new(spec.cpus));
        if trigger.is_some() {
            vcpu_states.want();
        }
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
                vcpu_states,
                saver,
                restored: saved.map(|s| (started, console.ready, s.devices.console_ready)),
                mem,
                backing,
            },
        })
    }

    /// Builds `spec`'s VM on arm64 KVM: guest memory with the `Image` and its device tree, the
    /// vCPUs and their GIC, the console UART and the RTC on MMIO, the virtio devices in the
    /// spec's order and, last, the marks port (docs/guest-contract.md, "Architectures"). Only
    /// `Start::Boot`: snapshots on arm64 are not supported yet.
    #[cfg(target_arch = "aarch64")]
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
        if slots.last().is_some_and(|s| s.irq >= gic::MAX_SPI) {
            return Err(Error::Device {
                what: "virtio interrupts",
                source: std::io::Error::other(format!(
                    "{} devices need more than the GIC's {} SPIs",
                    slots.len(),
                    gic::MAX_SPI
                )),
            });
        }

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

    /// Drops the process's privileges to `identity`'s (crate::jail): once the VM is built,
    /// since building it opens what the jailed user could not, and before any of its threads
    /// starts, since they inherit the process's credentials.
    pub fn confine(self, identity: &Identity) -> Result<Vmm<Built>, Error> {
        jail::drop_privileges(identity)?;
        Ok(self)
    }

    /// Starts the VM's threads; `stop` ends the VM with [`VmExit::Stopped`] once signalled,
    /// `pause` pauses and resumes it on the owner's requests.
    pub fn start(self, stop: &StopSignal, pause: Option<PauseLink>) -> Result<Vmm<Running>, Error> {
        // Moved out field by field: on an early return the rest drops in declaration order.
        let built = self.state;
        let (control, mem, seccomp) = (built.control, built.mem, built.seccomp);
        // Opened here: the `vmm` thread's filter allows no open.
        let smaps = memory::open_smaps();
        // Set up here: the device thread's filter allows no new descriptors.
        let worker = worker::Worker::new(&built.transports, &*control)
            .map_err(device_err("virtio device thread"))?;

        // `vmm` first: if it cannot start, nothing has. It owns the threads once they all run.
        let (give, take) = mpsc::channel::<(Threads, Option<File>)>();
        let (c, m) = (control.clone(), mem.clone());
        let vmm = thread::Builder::new()
            .name("vmm".into())
            .spawn(move || {
                if seccomp {
                    if let Err(e) = seccomp::apply(ThreadKind::VmmMain) {
                        c.stop(Err(e.into()));
                    }
                }
                let (threads, smaps) = take.recv().ok()?;
                supervise(&c, &m, smaps, threads)
            })
            .map_err(|source| RunError::Spawn {
                what: "vmm".into(),
                source,
            })?;

        let mut threads = Threads {
            handles: Vec::new(),
            seccomp,
        };
        let c = control.clone();
        threads.spawn(&control, "virtio".into(), ThreadKind::Virtio, move || {
            let _guard = EndGuard {
                control: &c,
                what: "virtio device",
            };
            if let Err(e) = worker.run(&*c) {
                tracing::error!("virtio device thread: {e}");
            }
        });
        let (c, stop) = (control.clone(), stop.clone());
        threads.spawn(
            &control,
            "host-control".into(),
            ThreadKind::HostControl,
            move || serve_host(&c, &stop, pause),
        );
        let (c, input, serial) = (control.clone(), built.input, built.serial);
        threads.spawn(
            &control,
            "console-input".into(),
            ThreadKind::ConsoleInput,
            move || {
                let _guard = EndGuard {
                    control: &c,
                    what: "console input",
                };
                serial::forward_input(&input, &serial, &*c);
            },
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(saver) = built.saver {
            let c = control.clone();
            threads.spawn(
                &control,
                "snapshot".into(),
                ThreadKind::Snapshot,
                move || saver.run(&c),
            );
        }
        for vcpu in built.vcpus {
            if control.is_stopping() {
                break;
            }
            let (c, pio, mmio) = (control.clone(), built.pio.clone(), built.mmio.clone());
            #[cfg(target_arch = "x86_64")]
            let states = built.vcpu_states.clone();
            let name = format!("vcpu{}", vcpu.index());
            threads.spawn(&control, name, ThreadKind::Vcpu, move || {
                let _guard = EndGuard {
                    control: &c,
                    what: "vCPU",
                };
                vcpu.run(
                    &pio,
                    &mmio,
                    &c,
                    #[cfg(target_arch = "x86_64")]
                    &states,
                );
            });
        }
        if let Some((since, ready, was_ready)) = built.restored {
            let elapsed = since.elapsed();
            tracing::debug!("VM restored in {elapsed:?}");
            let _ = built.init_reached.set(elapsed);
            // Otherwise the guest says so itself, once it has set its console up.
            if was_ready {
                ready.signal();
            }
        }
        if let Err(mpsc::SendError((threads, _))) = give.send((threads, smaps)) {
            // `vmm` is gone already (it panicked): the threads are still ours to end.
            control.stop(Err(RunError::ThreadEnded("vmm")));
            threads.stop_and_join();
        }
        Ok(Vmm {
            state: Running {
                vmm: Some(vmm),
                control,
                _devices: (built.pio, built.mmio, built.transports),
                _vm: built.vm,
                init_reached: built.init_reached,
                backing: built.backing,
                _mem: mem,
            },
        })
    }
}

/// The host's hold on a running VM, for any thread: stop, pause, resume. Clones share it.
#[derive(Clone)]
pub struct VmmControl(Arc<VmControl>);

impl VmmControl {
    /// Ends the VM with [`VmExit::Stopped`], paused or not, unless it has ended already.
    pub fn stop(&self) {
        self.0.stop(Ok(VmExit::Stopped));
    }

    /// Takes the vCPUs out of KVM_RUN and parks them, and parks the device thread and console
    /// input, each where it holds no device lock: once this returns, neither guest memory nor
    /// any device changes until [`resume`](Self::resume), so a snapshot reads a consistent
    /// state. From [`RunState::Running`] only; blocks until every thread is parked (a vCPU busy
    /// writing to a console that nobody reads parks once the write returns), or fails if the VM
    /// ends meanwhile.
    pub fn pause(&self) -> Result<(), TransitionError> {
        self.0.pause()
    }

    /// Lets a paused VM go on where it was: from [`RunState::Paused`] only.
    pub fn resume(&self) -> Result<(), TransitionError> {
        self.0.resume()
    }

    pub fn state(&self) -> RunState {
        self.0.state()
    }
}

impl Vmm<Running> {
    pub fn control(&self) -> VmmControl {
        VmmControl(self.state.control.clone())
    }

    /// Ends the VM with `error`, unless it has ended already: for what fails on the host's side
    /// of a running VM (a VMM process that cannot filter its own main thread).
    pub(crate) fn fail(&self, error: RunError) {
        self.state.control.stop(Err(error));
    }

    /// Waits until the VM ends, tears it down (every thread joined, the VM fd closed, then its
    /// memory unmapped) and reports how it ended.
    pub fn wait(mut self) -> Result<RunReport, Error> {
        let vmm_overhead_kib = self.state.join();
        let outcome = self.state.control.take_outcome();
        let init_reached = self.state.init_reached.get().copied();
        match outcome {
            Some(Ok(exit)) => Ok(RunReport {
                exit,
                init_reached,
                vmm_overhead_kib,
                memory: Some(self.state.backing),
            }),
            Some(Err(e)) => Err(e.into()),
            None => Err(RunError::ThreadEnded("VM").into()),
        }
    }
}

impl Running {
    /// Waits for the `vmm` thread, which ends once every other thread is joined; returns its
    /// measure of the VMM's memory.
    fn join(&mut self) -> Option<u64> {
        self.vmm.take()?.join().ok().flatten()
    }
}

impl Drop for Running {
    /// A VM dropped while running (its owner returned early or unwound) is stopped and its
    /// threads joined before its VM fd and memory go.
    fn drop(&mut self) {
        if self.vmm.is_some() {
            self.control.stop(Ok(VmExit::Stopped));
            self.join();
        }
    }
}

/// The `host-control` thread's work: ends the VM when the host's `stop` fires, and pauses and
/// resumes it as the owner of `pause` asks, until the VM ends.
fn serve_host(control: &VmControl, stop: &StopSignal, mut pause: Option<PauseLink>) {
    loop {
        let mut fds = vec![control.stop_evt().as_raw_fd(), stop.fd()];
        fds.extend(pause.as_ref().map(PauseLink::fd));
        match crate::poll::first_readable(&fds, None) {
            Some(1) => return control.stop(Ok(VmExit::Stopped)),
            Some(2) => {
                let link = pause.as_ref().expect("polled only while open");
                let done = match link.next() {
                    Some(PauseRequest::Pause) => control.pause(),
                    Some(PauseRequest::Resume) => control.resume(),
                    // Its owner has gone: the VM runs on, as it is.
                    None => {
                        pause = None;
                        continue;
                    }
                };
                if let Err(e) = &done {
                    tracing::info!("{e}");
                }
                link.answer(done.is_ok());
            }
            _ => return,
        }
    }
}

/// The `vmm` thread's work once the VM's threads run: kicks the vCPUs while a pause waits for
/// them, waits for the VM's end, measures the VMM's memory (from `smaps`, opened beforehand),
/// then stops and joins the threads.
fn supervise(
    control: &VmControl,
    mem: &GuestMemory,
    smaps: Option<File>,
    threads: Threads,
) -> Option<u64> {
    control.supervise(|| threads.kick_vcpus());
    let kib = smaps.and_then(|f| memory::vmm_overhead_kib(mem, f));
    threads.stop_and_join();
    kib
}

/// Refuses a vCPU count KVM (or the machine's tables: `limit`) cannot run.
fn check_cpus(vm: &Vm, cpus: u8, limit: usize) -> Result<(), Error> {
    let max = vm.max_vcpus().min(limit);
    if cpus == 0 || usize::from(cpus) > max {
        return Err(Error::CpuCount {
            requested: cpus,
            max,
        });
    }
    Ok(())
}

/// The console UART's interrupt line (irqfd `gsi`) and output.
fn console_line(
    vm: &Vm,
    gsi: u32,
    output: OwnedFd,
    control: &VmControl,
) -> Result<(IrqLine, ConsoleWriter), Error> {
    let irq = IrqLine::new().map_err(device_err("serial interrupt"))?;
    vm.register_irqfd(&irq.0, gsi)?;
    Ok((irq, ConsoleWriter::new(output, control.stopping_flag())))
}

/// Opens `spec`'s virtio devices, in its order. `net` and `agent` are the host ends of the
/// network link and agent socket when the caller opened them (see [`Vmm::build`]).
fn open_devices(
    spec: &VmSpec,
    net: Option<net::HostEnd>,
    agent: Option<vsock::host::DeviceSide>,
) -> Result<Vec<Box<dyn VirtioDevice>>, Error> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::with_capacity(spec.devices.len());
    let (mut net, mut agent) = (net, agent);
    for (index, device) in spec.devices.iter().enumerate() {
        devices.push(match device {
            Device::Block(disk) => Box::new(Block::open(
                &disk.path,
                disk.read_only,
                &format!("nodeos-disk{index}"),
            )?),
            Device::Rng => Box::new(Rng::new()),
            // The guest's eth0; it configures its address from the command line.
            Device::Net(spec_net) => {
                let end = match net.take() {
                    Some(end) => end,
                    // The threads that serve passt are the VMM's.
                    None => net::HostEnd::open(
                        spec_net,
                        if spec.seccomp {
                            net::HelperThreads::Filtered
                        } else {
                            net::HelperThreads::Unfiltered
                        },
                    )?,
                };
                net::attach(spec_net, end, net::DEFAULT_MAC)?
            }
            Device::AgentLink(path) => Box::new(match agent.take() {
                Some(device) => Vsock::given(device)?,
                None => Vsock::new(path)?,
            }),
        });
    }
    Ok(devices)
}

type Transports = Vec<Arc<Mutex<MmioTransport>>>;

/// Puts each device behind a virtio-mmio transport on `mmio`: the `i`-th at
/// `VIRTIO_MMIO_BASE` + `i` windows, on interrupt line `first_irq + i`. `make` builds
/// transport `i` from its arguments (new, or restored from a snapshot).
fn attach_virtio(
    vm: &Vm,
    mem: &SharedMemory,
    mmio: &mut Bus,
    devices: Vec<Box<dyn VirtioDevice>>,
    first_irq: u32,
    mut make: impl FnMut(usize, TransportArgs) -> Result<MmioTransport, Error>,
) -> Result<(Transports, Vec<MmioSlot>), Error> {
    let notify = vm.notify_registrar();
    let mut transports = Vec::with_capacity(devices.len());
    let mut slots = Vec::with_capacity(devices.len());
    for (i, device) in devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let irq = first_irq + i as u32;
        let line = IrqLine::new().map_err(device_err("virtio interrupt"))?;
        vm.register_irqfd(&line.0, irq)?;
        let args = TransportArgs {
            device,
            mem: mem.clone(),
            irq: line,
            notify: notify.clone(),
            base,
        };
        let transport = Arc::new(Mutex::new(make(i, args)?));
        mmio.insert(base, VIRTIO_MMIO_SIZE, transport.clone())?;
        transports.push(transport);
        slots.push(MmioSlot {
            base,
            size: VIRTIO_MMIO_SIZE,
            irq,
        });
    }
    Ok((transports, slots))
}

fn shared<D: BusDevice + 'static>(device: D) -> Arc<Mutex<dyn BusDevice>> {
    Arc::new(Mutex::new(device))
}

struct Threads {
    /// Each thread, and whether it runs a vCPU.
    handles: Vec<(JoinHandle<()>, bool)>,
    /// Whether threads install their seccomp filters.
    seccomp: bool,
}

impl Threads {
    /// Starts a thread of `kind`, which installs its filter before `f` runs; a failure to
    /// start or to filter ends the VM.
    fn spawn(
        &mut self,
        control: &Arc<VmControl>,
        name: String,
        kind: ThreadKind,
        f: impl FnOnce() + Send + 'static,
    ) {
        let filter = self.seccomp.then_some(kind);
        let c = control.clone();
        let body = move || {
            if let Some(kind) = filter {
                if let Err(e) = seccomp::apply(kind) {
                    c.stop(Err(e.into()));
                    return;
                }
            }
            f();
        };
        match thread::Builder::new().name(name.clone()).spawn(body) {
            Ok(h) => self.handles.push((h, kind == ThreadKind::Vcpu)),
            Err(source) => control.stop(Err(RunError::Spawn { what: name, source })),
        }
    }

    /// Kicks every vCPU thread still running out of KVM_RUN.
    fn kick_vcpus(&self) {
        for (h, is_vcpu) in &self.handles {
            if *is_vcpu && !h.is_finished() {
                vcpu::kick(h);
            }
        }
    }

    /// Once the VM is stopping: kicks the vCPUs until every thread has ended, then joins.
    fn stop_and_join(self) {
        let since = Instant::now();
        let mut warned = false;
        while self.handles.iter().any(|(h, _)| !h.is_finished()) {
            self.kick_vcpus();
            if !warned && since.elapsed() > Duration::from_secs(5) {
                tracing::warn!("VM threads are slow to stop");
                warned = true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        for (h, _) in self.handles {
            let _ = h.join();
        }
    }
}

/// `run()` end to end on /dev/kvm, with tiny PVH "kernels" (ELF files with a PVH note whose
/// code is hand-assembled 32-bit x86): the same path a Linux boot takes, minus Linux.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod tests {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::path::Path;

    use super::*;
    use crate::boot::tests::tiny_elf;
    use crate::kvm::smoke::kvm_usable;
    use crate::vm::Disk;
    use crate::vm::VmExit;

    const LOAD_ADDR: u64 = 0x10_0000;

    /// Checks the PVH entry state (EBX -> start info magic: "S"), reads the first virtio-mmio
    /// device's magic ("V"), marks init on the boot timer, then waits for a byte on COM1,
    /// echoes it and exits with it as the status.
    const PVH_GUEST: &[u8] = &[
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33, // cmp dword [ebx], 0x336ec578
        0x75, 0x03, // jne +3
        0xb0, b'S', 0xee, // mov al, 'S'; out dx, al
        0xa1, 0x00, 0x00, 0x00, 0xd0, // mov eax, [0xd0000000]
        0x3d, 0x76, 0x69, 0x72, 0x74, // cmp eax, 0x74726976 ("virt")
        0x75, 0x03, // jne +3
        0xb0, b'V', 0xee, // mov al, 'V'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0x66, 0xba, 0xf0, 0x03, // mov dx, 0x3f0
        0xb0, b'I', 0xee, // mov al, 'I'; out dx, al
        0xb0, b'R', 0xee, // mov al, 'R'; out dx, al
        // wait: until LSR.DR
        0x66, 0xba, 0xfd, 0x03, // mov dx, 0x3fd
        0xec, // in al, dx
        0xa8, 0x01, // test al, 1
        0x74, 0xf7, // jz wait
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xec, // in al, dx
        0xee, // out dx, al
        0xe6, 0xf4, // out 0xf4, al
        0xf4, // hlt
    ];

    /// Breaks on purpose: ud2 with no usable IDT triple-faults.
    const TRIPLE_FAULT_GUEST: &[u8] = &[0x0f, 0x0b, 0xf4];

    /// `reboot=k`: the i8042's CPU reset line.
    const KEYBOARD_RESET_GUEST: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4]; // mov al, 0xfe; out 0x64, al

    /// The boot vCPU starts vCPU 1 the way Linux does (INIT, then a start-up IPI to real-mode
    /// code at 0x8000); vCPU 1 prints "A" and exits with 11 while vCPU 0 spins.
    const SMP_GUEST: &[u8] = &[
        // The AP's code, put at 0x8000: mov dx, 0x3f8; mov al, 'A'; out dx, al;
        // mov al, 11; out 0xf4, al; hlt
        0xc7, 0x05, 0x00, 0x80, 0x00, 0x00, 0xba, 0xf8, 0x03, 0xb0, 0xc7, 0x05, 0x04, 0x80, 0x00,
        0x00, b'A', 0xee, 0xb0, 11, 0xc7, 0x05, 0x08, 0x80, 0x00, 0x00, 0xe6, 0xf4, 0xf4, 0x90,
        // LAPIC on: spurious vector register = 0x1ff
        0xc7, 0x05, 0xf0, 0x00, 0xe0, 0xfe, 0xff, 0x01, 0x00, 0x00,
        // ICR high: destination APIC ID 1; ICR low: INIT, assert
        0xc7, 0x05, 0x10, 0x03, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x01, 0xc7, 0x05, 0x00, 0x03, 0xe0,
        0xfe, 0x00, 0x45, 0x00, 0x00,
        // ICR high: APIC ID 1; ICR low: start-up at vector 0x08 (0x8000)
        0xc7, 0x05, 0x10, 0x03, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x01, 0xc7, 0x05, 0x00, 0x03, 0xe0,
        0xfe, 0x08, 0x46, 0x00, 0x00, 0xeb, 0xfe, // jmp $
    ];

    /// `mov dword [addr], value`
    fn store(code: &mut Vec<u8>, addr: u32, value: u32) {
        code.extend_from_slice(&[0xc7, 0x05]);
        code.extend_from_slice(&addr.to_le_bytes());
        code.extend_from_slice(&value.to_le_bytes());
    }

    /// A guest that drives the root disk the way a virtio driver does: status handshake,
    /// VERSION_1, one 8-entry queue, one read of sector 0 into 0x31000 with the status byte at
    /// 0x32000; it polls the used ring (interrupts are off), prints the first byte read and
    /// exits with the request status.
    fn virtio_block_guest() -> Vec<u8> {
        const MMIO: u32 = 0xd000_0000;
        let (desc, avail, used) = (0x2_0000u32, 0x2_1000u32, 0x2_2000u32);
        let (header, data, status) = (0x3_0000u32, 0x3_1000u32, 0x3_2000u32);
        let mut c = Vec::new();
        for (reg, value) in [
            (0x70, 1),
            (0x70, 3),
            (0x24, 1),
            (0x20, 1),
            (0x24, 0),
            (0x20, 0),
            (0x70, 0xb),
        ] {
            store(&mut c, MMIO + reg, value);
        }
        for (reg, value) in [
            (0x30, 0),
            (0x38, 8),
            (0x80, desc),
            (0x84, 0),
            (0x90, avail),
            (0x94, 0),
            (0xa0, used),
            (0xa4, 0),
            (0x44, 1),
        ] {
            store(&mut c, MMIO + reg, value);
        }
        // Descriptors: header (read), data (write), status (write); NEXT = 1, WRITE = 2.
        for (i, (addr, len, flags, next)) in
            [(header, 16, 1, 1), (data, 512, 3, 2), (status, 1, 2, 0)]
                .into_iter()
                .enumerate()
        {
            let at = desc + 16 * i as u32;
            store(&mut c, at, addr);
            store(&mut c, at + 4, 0);
            store(&mut c, at + 8, len);
            store(&mut c, at + 12, flags | (next << 16));
        }
        store(&mut c, status, 0xee); // so a missing status shows
        store(&mut c, avail + 4, 0); // ring[0] = head 0
        store(&mut c, avail, 1 << 16); // flags 0, idx 1
        store(&mut c, MMIO + 0x70, 0xf); // DRIVER_OK
        store(&mut c, MMIO + 0x50, 0); // QueueNotify(0)
                                       // wait: until used.idx != 0
        c.extend_from_slice(&[0x0f, 0xb7, 0x05]);
        c.extend_from_slice(&(used + 2).to_le_bytes()); // movzx eax, word [used.idx]
        c.extend_from_slice(&[0x85, 0xc0, 0x74, 0xf5]); // test eax, eax; jz wait
        c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xa0]); // mov dx, 0x3f8; mov al, [data]
        c.extend_from_slice(&data.to_le_bytes());
        c.push(0xee); // out dx, al
        c.push(0xa0); // mov al, [status]
        c.extend_from_slice(&status.to_le_bytes());
        c.extend_from_slice(&[0xe6, 0xf4, 0xf4]); // out 0xf4, al; hlt
        c
    }

    /// Reads the RTC the way Linux does (seconds first and last, the rest between) and prints
    /// seconds, minutes, hours, day, month, year, century, seconds again; then switches it to
    /// binary (register B = 24-hour | DM, index written with the NMI-disable bit), prints the
    /// seconds once more and exits with register D.
    fn cmos_guest() -> Vec<u8> {
        // mov al, reg; out 0x70, al; in al, 0x71
        let read =
            |c: &mut Vec<u8>, reg: u8| c.extend_from_slice(&[0xb0, reg, 0xe6, 0x70, 0xe4, 0x71]);
        let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
        for reg in [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32, 0x00] {
            read(&mut c, reg);
            c.push(0xee); // out dx, al
        }
        // mov al, 0x8b; out 0x70, al; mov al, 0x06; out 0x71, al
        c.extend_from_slice(&[0xb0, 0x8b, 0xe6, 0x70, 0xb0, 0x06, 0xe6, 0x71]);
        read(&mut c, 0x00);
        c.push(0xee);
        read(&mut c, 0x0d);
        c.extend_from_slice(&[0xe6, 0xf4, 0xf4]); // out 0xf4, al; hlt
        c
    }

    /// A hostile guest: 4000 rounds of random accesses driven by an LCG in ESI
    /// (x = x * 1103515245 + 12345; EAX, EBX, ECX, EDX scratch, EDI counts down; no stack).
    /// Each round, on one of the four virtio-mmio windows (root disk, rng, two empty slots):
    /// - every 8th round, a driver's set-up with random queue geometry and ring addresses;
    /// - a dword write to 0x000..0x100 and one to 0x000..0x200, log-uniform values (so status
    ///   bits, queue indexes and ring addresses inside guest memory all come up);
    /// - a random dword into low memory 0..512 KiB, where those rings often land;
    /// - a dword read of 0x000..0x200;
    /// - a random byte to a random port below 0x400, except the exit port, the i8042 command
    ///   port (0xfe there resets the VM) and COM1 (its MCR loopback bit would swallow the
    ///   marker); a dword read of a random port below 0x400.
    ///
    /// Then "D" on COM1 and exit status 0.
    fn hostile_guest() -> Vec<u8> {
        const ROUNDS: u32 = 4000;
        let next = |c: &mut Vec<u8>| {
            c.extend_from_slice(&[0x69, 0xf6, 0x6d, 0x4e, 0xc6, 0x41]); // imul esi, esi, 1103515245
            c.extend_from_slice(&[0x81, 0xc6, 0x39, 0x30, 0x00, 0x00]); // add esi, 12345
        };
        // EBX = 0xd0000000 | ((x >> 12) & mask): the window from bits 12..13 of the mask,
        // the offset from its low bits.
        let window_addr = |c: &mut Vec<u8>, mask: u32| {
            next(c);
            c.extend_from_slice(&[0x89, 0xf3, 0xc1, 0xeb, 12]); // mov ebx, esi; shr ebx, 12
            c.extend_from_slice(&[0x81, 0xe3]); // and ebx, mask
            c.extend_from_slice(&mask.to_le_bytes());
            c.extend_from_slice(&[0x81, 0xcb, 0x00, 0x00, 0x00, 0xd0]); // or ebx, 0xd0000000
        };
        // EAX = x >> ((x >> 11) & 31): the top bits of x, shifted down by a random amount.
        let log_uniform = |c: &mut Vec<u8>| {
            next(c);
            c.extend_from_slice(&[0x89, 0xf0, 0x89, 0xf1]); // mov eax, esi; mov ecx, esi
            c.extend_from_slice(&[0xc1, 0xe9, 11, 0xd3, 0xe8]); // shr ecx, 11; shr eax, cl
        };
        // EDX = (x >> 16) & 0x3ff
        let port = |c: &mut Vec<u8>| {
            next(c);
            c.extend_from_slice(&[0x89, 0xf2, 0xc1, 0xea, 16]); // mov edx, esi; shr edx, 16
            c.extend_from_slice(&[0x81, 0xe2, 0xff, 0x03, 0x00, 0x00]); // and edx, 0x3ff
        };

        let mut c = vec![0xbe, 0x01, 0x00, 0x00, 0x00]; // mov esi, 1 (seed)
        c.push(0xbf); // mov edi, ROUNDS
        c.extend_from_slice(&ROUNDS.to_le_bytes());
        let round = c.len();
        // A driver's set-up of one random window, with random queue geometry: reset,
        // ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK; QueueSel 0 or 1 (there is no queue 1),
        // QueueNum 1 << 0..15 (many too big), log-uniform desc/avail/used addresses;
        // QueueReady, DRIVER_OK, QueueNotify(0). Every 8th round only: an activation costs
        // milliseconds here (ioeventfds), 4000 of them would take ~13 s.
        c.extend_from_slice(&[0xf7, 0xc7, 0x07, 0x00, 0x00, 0x00]); // test edi, 7
        c.extend_from_slice(&[0x0f, 0x85, 0, 0, 0, 0]); // jnz random, patched below
        let to_random = c.len();
        window_addr(&mut c, 0x3000);
        // mov dword [ebx + reg], value
        let put = |c: &mut Vec<u8>, reg: u32, value: u32| {
            c.extend_from_slice(&[0xc7, 0x83]);
            c.extend_from_slice(&reg.to_le_bytes());
            c.extend_from_slice(&value.to_le_bytes());
        };
        // mov [ebx + reg], eax
        let put_eax = |c: &mut Vec<u8>, reg: u32| {
            c.extend_from_slice(&[0x89, 0x83]);
            c.extend_from_slice(&reg.to_le_bytes());
        };
        for (reg, value) in [
            (0x70, 0),
            (0x70, 1),
            (0x70, 3),
            (0x24, 1),
            (0x20, 1),
            (0x70, 0xb),
        ] {
            put(&mut c, reg, value);
        }
        next(&mut c);
        c.extend_from_slice(&[0x89, 0xf0, 0xc1, 0xe8, 31]); // mov eax, esi; shr eax, 31
        put_eax(&mut c, 0x30);
        next(&mut c);
        c.extend_from_slice(&[0x89, 0xf1, 0xc1, 0xe9, 28]); // mov ecx, esi; shr ecx, 28
        c.extend_from_slice(&[0xb8, 0x01, 0x00, 0x00, 0x00, 0xd3, 0xe0]); // mov eax, 1; shl eax, cl
        put_eax(&mut c, 0x38);
        for reg in [0x80, 0x90, 0xa0] {
            log_uniform(&mut c);
            put_eax(&mut c, reg);
        }
        for (reg, value) in [(0x44, 1), (0x70, 0xf), (0x50, 0)] {
            put(&mut c, reg, value);
        }
        let setup_len = (c.len() - to_random) as u32;
        c[to_random - 4..to_random].copy_from_slice(&setup_len.to_le_bytes());
        // random: writes over the registers of a (maybe live) device.
        for mask in [0x30fc, 0x31fc] {
            window_addr(&mut c, mask);
            log_uniform(&mut c);
            c.extend_from_slice(&[0x89, 0x03]); // mov [ebx], eax
        }
        next(&mut c);
        c.extend_from_slice(&[0x89, 0xf3, 0xc1, 0xeb, 8]); // mov ebx, esi; shr ebx, 8
        c.extend_from_slice(&[0x81, 0xe3, 0xfc, 0xff, 0x07, 0x00]); // and ebx, 0x7fffc
        next(&mut c);
        c.extend_from_slice(&[0x89, 0xf0, 0x89, 0x03]); // mov eax, esi; mov [ebx], eax
        window_addr(&mut c, 0x31fc);
        c.extend_from_slice(&[0x8b, 0x03]); // mov eax, [ebx]
        port(&mut c);
        next(&mut c);
        c.extend_from_slice(&[0x89, 0xf0, 0xc1, 0xe8, 24]); // mov eax, esi; shr eax, 24
        let skip = |c: &mut Vec<u8>, port: u32, jcc: u8| {
            c.extend_from_slice(&[0x81, 0xfa]); // cmp edx, port
            c.extend_from_slice(&port.to_le_bytes());
            c.extend_from_slice(&[jcc, 0]); // je/jae over the out, patched below
            c.len() - 1
        };
        let jumps = [
            skip(&mut c, u32::from(contract::ports::EXIT_PORT), 0x74), // je
            skip(&mut c, 0x64, 0x74),                                  // je
            skip(&mut c, 0x3f8, 0x73),                                 // jae
        ];
        c.push(0xee); // out dx, al
        for at in jumps {
            c[at] = (c.len() - at - 1) as u8;
        }
        port(&mut c);
        c.push(0xed); // in eax, dx
        c.extend_from_slice(&[0x4f, 0x0f, 0x85]); // dec edi; jnz round
        let back = round as i64 - (c.len() + 4) as i64;
        c.extend_from_slice(&(back as i32).to_le_bytes());
        c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        c.extend_from_slice(&[0xb0, b'D', 0xee]); // mov al, 'D'; out dx, al
        c.extend_from_slice(&[0x31, 0xc0, 0xe6, 0xf4, 0xf4]); // xor eax, eax; out 0xf4, al; hlt
        c
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just returned these two fds, owned by no one else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    pub(crate) fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    /// A tiny guest's VM: 64 MiB, the serial console, every VMM thread filtered.
    pub(crate) fn pvh_spec(kernel: &Path, rootfs: &Path, cpus: u8) -> VmSpec {
        VmSpec {
            arch: contract::arch::Arch::X86_64,
            kernel: kernel.into(),
            memory_mib: 64,
            cpus,
            cmdline: "console=ttyS0".into(),
            devices: vec![
                Device::Block(Disk {
                    path: rootfs.into(),
                    read_only: true,
                }),
                Device::Rng,
            ],
            seccomp: true,
            start: Default::default(),
        }
    }

    struct Outcome {
        result: Result<RunReport, Error>,
        console: Vec<u8>,
    }

    fn boot(code: &[u8], cpus: u8, input: &[u8]) -> Outcome {
        let kernel = file_with(&tiny_elf(code, LOAD_ADDR, true));
        let rootfs = file_with(&[b'Q'; 4096]);
        run_with(&pvh_spec(kernel.path(), rootfs.path(), cpus), input)
    }

    /// Runs `spec` with `input` on the console.
    fn run_with(spec: &VmSpec, input: &[u8]) -> Outcome {
        let (in_rx, in_tx) = pipe();
        let (out_rx, out_tx) = pipe();
        std::fs::File::from(in_tx).write_all(input).unwrap();
        let console = ConsoleIo {
            input: in_rx,
            output: out_tx,
            ready: ConsoleReady::default(),
            template: ConsoleReady::default(),
        };
        let result = run(spec, console, &StopSignal::new().unwrap());
        let mut out = Vec::new();
        // run() closed the write end: this reads to EOF.
        std::fs::File::from(out_rx).read_to_end(&mut out).unwrap();
        Outcome {
            result,
            console: out,
        }
    }

    #[test]
    fn pvh_guest_runs_and_exits() {
        if !kvm_usable() {
            return;
        }
        let o = boot(PVH_GUEST, 1, b"Z");
        let report = o.result.unwrap();
        assert_eq!(report.exit, VmExit::Guest(b'Z'));
        assert_eq!(String::from_utf8_lossy(&o.console), "SV\nZ");
        assert!(report.init_reached.is_some());
    }

    /// The vsock device removes its socket file when dropped, which no VMM thread's filter
    /// allows: the devices must outlive every VMM thread and go on the owner's thread.
    #[test]
    fn devices_are_dropped_by_the_owner_not_a_filtered_thread() {
        if !kvm_usable() {
            return;
        }
        let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
        let rootfs = file_with(&[b'Q'; 4096]);
        let sockets = tempfile::tempdir().unwrap();
        let socket = sockets.path().join("agent.sock");
        let mut spec = pvh_spec(kernel.path(), rootfs.path(), 1);
        spec.devices.push(Device::AgentLink(socket.clone()));
        let (in_rx, in_tx) = pipe();
        let (out_rx, out_tx) = pipe();
        std::fs::File::from(in_tx).write_all(b"Z").unwrap();
        let console = ConsoleIo {
            input: in_rx,
            output: out_tx,
            ready: ConsoleReady::default(),
            template: ConsoleReady::default(),
        };
        let report = run(&spec, console, &StopSignal::new().unwrap()).unwrap();
        drop(out_rx);
        assert_eq!(report.exit, VmExit::Guest(b'Z'));
        assert!(!socket.exists(), "the vsock device's socket is removed");
    }

    #[test]
    fn secondary_vcpus_are_stopped_too() {
        if !kvm_usable() {
            return;
        }
        // vCPU 1 waits for INIT/SIPI in the kernel for the whole run; run() must still end.
        let o = boot(PVH_GUEST, 4, b"!");
        assert_eq!(o.result.unwrap().exit, VmExit::Guest(b'!'));
    }

    #[test]
    fn triple_fault_is_a_reset() {
        if !kvm_usable() {
            return;
        }
        let o = boot(TRIPLE_FAULT_GUEST, 1, b"");
        let report = o.result.unwrap();
        assert_eq!(report.exit, VmExit::Reset);
        assert!(report.init_reached.is_none());
    }

    #[test]
    fn virtio_block_read_round_trip() {
        if !kvm_usable() {
            return;
        }
        let o = boot(&virtio_block_guest(), 1, b"");
        assert_eq!(o.result.unwrap().exit, VmExit::Guest(0), "VIRTIO_BLK_S_OK");
        assert_eq!(o.console, b"Q", "sector 0 of the root image");
    }

    #[test]
    fn keyboard_controller_reset_is_a_reset() {
        if !kvm_usable() {
            return;
        }
        assert_eq!(
            boot(KEYBOARD_RESET_GUEST, 1, b"").result.unwrap().exit,
            VmExit::Reset
        );
    }

    #[test]
    fn boot_vcpu_starts_a_secondary_vcpu() {
        if !kvm_usable() {
            return;
        }
        let o = boot(SMP_GUEST, 2, b"");
        assert_eq!(o.result.unwrap().exit, VmExit::Guest(11));
        assert_eq!(o.console, b"A");
    }

    #[test]
    fn guest_reads_the_host_time_from_the_rtc() {
        use crate::devices::legacy::cmos::DateTime;
        if !kvm_usable() {
            return;
        }
        let bcd = |b: u8| {
            assert!(b & 0x0f <= 9 && b >> 4 <= 9, "{b:#x} is not BCD");
            (b >> 4) * 10 + (b & 0x0f)
        };
        // A read that straddles a second shows as two different seconds: again, as Linux does.
        for _ in 0..3 {
            let before = DateTime::now();
            let o = boot(&cmos_guest(), 1, b"");
            let after = DateTime::now();
            assert_eq!(
                o.result.unwrap().exit,
                VmExit::Guest(0x80),
                "register D: time valid"
            );
            let [sec, min, hour, day, month, year, century, sec_again, binary_sec] = o.console[..]
            else {
                panic!("console: {:x?}", o.console);
            };
            let second = bcd(sec);
            if second != bcd(sec_again) {
                continue;
            }
            let time = |d: &DateTime| (d.year, d.month, d.day, d.hour, d.minute, d.second);
            let seen = (
                i64::from(bcd(century)) * 100 + i64::from(bcd(year)),
                bcd(month),
                bcd(day),
                bcd(hour),
                bcd(min),
                second,
            );
            assert!(
                time(&before) <= seen && seen <= time(&after),
                "{before:?} <= {seen:?} <= {after:?}"
            );
            assert!(
                binary_sec < 60 && (binary_sec + 60 - second) % 60 <= 2,
                "binary {binary_sec}, BCD {second}"
            );
            return;
        }
        panic!("the RTC's seconds changed during every read");
    }

    /// [`PVH_GUEST`] on 2 vCPUs (the second waits for INIT in the kernel), saved where it
    /// marks its console ready, then restored twice from the one file: each restored VM goes
    /// on from there (reads its console, echoes, exits with the byte) without booting again.
    #[test]
    fn a_saved_guest_goes_on_in_each_restored_vm() {
        if !kvm_usable() {
            return;
        }
        let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
        let rootfs = file_with(&[b'Q'; 4096]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vm.snapshot");
        let mut spec = pvh_spec(kernel.path(), rootfs.path(), 2);
        spec.start = Start::Save {
            to: file.clone(),
            at: contract::ports::CONSOLE_READY,
            identity: "tiny".into(),
        };
        let saved = run_with(&spec, b"");
        assert_eq!(saved.result.unwrap().exit, VmExit::Saved);
        assert_eq!(saved.console, b"SV\n");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&file).unwrap();
        assert!(meta.len() > 64 << 20, "64 MiB of memory: {}", meta.len());
        assert!(
            meta.blocks() * 512 < 8 << 20,
            "mostly holes: {} bytes allocated",
            meta.blocks() * 512
        );

        let restore = |identity: &str| Start::Restore {
            from: file.clone(),
            identity: identity.into(),
        };
        for input in [b"Z", b"Y"] {
            spec.start = restore("tiny");
            let o = run_with(&spec, input);
            let report = o.result.unwrap();
            assert_eq!(report.exit, VmExit::Guest(input[0]));
            assert_eq!(o.console, input, "no boot again: only the echo");
            assert!(report.init_reached.is_some(), "the restore time");
        }

        spec.start = restore("another");
        let err = run_with(&spec, b"Z").result.unwrap_err();
        assert!(
            matches!(err, Error::Snapshot(snapshot::Error::Identity { .. })),
            "{err}"
        );
        spec.start = restore("tiny");
        spec.devices.pop();
        let err = run_with(&spec, b"Z").result.unwrap_err();
        assert!(
            matches!(err, Error::Snapshot(snapshot::Error::Devices { .. })),
            "{err}"
        );
    }

    /// Where [`COUNTING_GUEST`] counts, and the word the host sets to let it exit.
    const COUNTER: u64 = 0x5_0000;
    const GO: u64 = 0x5_0004;

    /// Increments the word at [`COUNTER`] in a loop, without a VM exit, until the word at [`GO`]
    /// is not zero; then exits with 9.
    const COUNTING_GUEST: &[u8] = &[
        0xff, 0x05, 0x00, 0x00, 0x05, 0x00, // loop: inc dword [0x50000]
        0x83, 0x3d, 0x04, 0x00, 0x05, 0x00, 0x00, // cmp dword [0x50004], 0
        0x74, 0xf1, // je loop
        0xb0, 9, 0xe6, 0xf4, // mov al, 9; out 0xf4, al
        0xf4, // hlt
    ];

    /// A started [`COUNTING_GUEST`] on 2 vCPUs (the second waits for INIT in the kernel), every
    /// thread filtered, with the console's host ends.
    fn counting_vmm(pause: Option<PauseLink>) -> (Vmm<Running>, OwnedFd, OwnedFd) {
        let kernel = file_with(&tiny_elf(COUNTING_GUEST, LOAD_ADDR, true));
        let rootfs = file_with(&[0; 4096]);
        let spec = pvh_spec(kernel.path(), rootfs.path(), 2);
        let (in_rx, in_tx) = pipe();
        let (out_rx, out_tx) = pipe();
        let console = ConsoleIo {
            input: in_rx,
            output: out_tx,
            ready: ConsoleReady::default(),
            template: ConsoleReady::default(),
        };
        let vmm = Vmm::build(&spec, console, None, None, None)
            .unwrap()
            .start(&StopSignal::new().unwrap(), pause)
            .unwrap();
        (vmm, in_tx, out_rx)
    }

    fn counter(vmm: &Vmm<Running>) -> u32 {
        use vm_memory::{Bytes, GuestAddress};
        vmm.state._mem.read_obj(GuestAddress(COUNTER)).unwrap()
    }

    /// Waits until the guest has counted past `from`.
    fn counts_past(vmm: &Vmm<Running>, from: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while counter(vmm) == from {
            assert!(Instant::now() < deadline, "the guest does not count");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_paused_guest_holds_still_and_resumes() {
        use vm_memory::{Bytes, GuestAddress};
        if !kvm_usable() {
            return;
        }
        let (vmm, _input, _output) = counting_vmm(None);
        let control = vmm.control();
        counts_past(&vmm, 0);
        for _ in 0..3 {
            control.pause().unwrap();
            assert_eq!(control.state(), RunState::Paused);
            let held = counter(&vmm);
            thread::sleep(Duration::from_millis(100));
            assert_eq!(counter(&vmm), held, "a paused guest made progress");
            control.resume().unwrap();
            assert_eq!(control.state(), RunState::Running);
            counts_past(&vmm, held);
        }
        vmm.state._mem.write_obj(1u32, GuestAddress(GO)).unwrap();
        assert_eq!(vmm.wait().unwrap().exit, VmExit::Guest(9));
        assert_eq!(control.state(), RunState::Stopping);
    }

    #[test]
    fn the_hosts_pause_link_pauses_and_resumes_a_filtered_vmm() {
        use crate::vm::{pause_link, PauseError};
        use vm_memory::{Bytes, GuestAddress};
        if !kvm_usable() {
            return;
        }
        let (switch, link) = pause_link().unwrap();
        let (vmm, _input, _output) = counting_vmm(Some(link));
        counts_past(&vmm, 0);
        switch.pause().unwrap();
        let held = counter(&vmm);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(counter(&vmm), held, "a paused guest made progress");
        let refused = switch.pause().unwrap_err();
        assert!(matches!(refused, PauseError::Refused(_)), "{refused}");
        switch.resume().unwrap();
        counts_past(&vmm, held);
        // Its owner gone, the VM runs on.
        drop(switch);
        let now = counter(&vmm);
        counts_past(&vmm, now);
        vmm.state._mem.write_obj(1u32, GuestAddress(GO)).unwrap();
        assert_eq!(vmm.wait().unwrap().exit, VmExit::Guest(9));
    }

    #[test]
    fn a_paused_guest_stops_and_a_dropped_one_is_torn_down() {
        if !kvm_usable() {
            return;
        }
        let (vmm, _input, _output) = counting_vmm(None);
        let control = vmm.control();
        counts_past(&vmm, 0);
        control.pause().unwrap();
        assert_eq!(control.resume(), Ok(()));
        assert_eq!(
            control.resume().unwrap_err().state,
            RunState::Running,
            "resumed twice"
        );
        control.pause().unwrap();
        assert_eq!(control.pause().unwrap_err().state, RunState::Paused);
        control.stop();
        assert_eq!(vmm.wait().unwrap().exit, VmExit::Stopped);
        assert_eq!(control.pause().unwrap_err().state, RunState::Stopping);

        // Dropped while running, or while paused: stopped and joined, not left behind.
        for pause in [false, true] {
            let (vmm, _input, _output) = counting_vmm(None);
            let control = vmm.control();
            counts_past(&vmm, 0);
            if pause {
                control.pause().unwrap();
            }
            drop(vmm);
            assert_eq!(control.state(), RunState::Stopping);
        }
    }

    /// Set in the child process of [`every_vmm_thread_is_filtered`].
    const FILTER_CHECK_ENV: &str = "NODEOS_VM_FILTER_CHECK";

    /// Each thread's name and seccomp mode (`Seccomp:` in its /proc status).
    fn thread_modes() -> Vec<(String, String)> {
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                let status = std::fs::read_to_string(dir.join("status")).ok()?;
                let mode = status.lines().find_map(|l| l.strip_prefix("Seccomp:"))?;
                Some((name.trim().to_string(), mode.trim().to_string()))
            })
            .collect()
    }

    /// In a child process, alone: while a 2-vCPU guest waits for console input, every VMM
    /// thread is in seccomp mode 2 (filter); the test's own threads, the caller of `run`
    /// among them, are not.
    #[test]
    fn every_vmm_thread_is_filtered() {
        if std::env::var_os(FILTER_CHECK_ENV).is_none() {
            if kvm_usable() {
                let out = crate::seccomp::tests::run_child(
                    "backend::kvm::tests::every_vmm_thread_is_filtered",
                    (FILTER_CHECK_ENV, "1"),
                );
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(stdout.contains("1 passed"), "{stdout}");
            }
            return;
        }
        let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
        let rootfs = file_with(&[b'Q'; 4096]);
        let spec = pvh_spec(kernel.path(), rootfs.path(), 2);
        let (in_rx, in_tx) = pipe();
        let (_out_rx, out_tx) = pipe();
        let console = ConsoleIo {
            input: in_rx,
            output: out_tx,
            ready: ConsoleReady::default(),
            template: ConsoleReady::default(),
        };
        let vm = thread::Builder::new()
            .name("caller".into())
            .spawn(move || run(&spec, console, &StopSignal::new().unwrap()))
            .unwrap();
        let vmm_threads = [
            "vmm",
            "vcpu0",
            "vcpu1",
            "virtio",
            "host-control",
            "console-input",
        ];
        let deadline = Instant::now() + Duration::from_secs(20);
        let modes = loop {
            let modes = thread_modes();
            let filtered = |name: &&str| modes.iter().any(|(n, m)| n == name && m == "2");
            if vmm_threads.iter().all(filtered) || Instant::now() > deadline {
                break modes;
            }
            thread::sleep(Duration::from_millis(10));
        };
        std::fs::File::from(in_tx).write_all(b"Z").unwrap();
        assert_eq!(vm.join().unwrap().unwrap().exit, VmExit::Guest(b'Z'));
        for name in vmm_threads {
            assert!(
                modes.iter().any(|(n, m)| n == name && m == "2"),
                "{name}: {modes:?}"
            );
        }
        // KVM's own worker threads (kvm-nx-lpage-recovery) count as the vCPU's that started them.
        for (name, mode) in modes.iter().filter(|(n, _)| !n.starts_with("kvm-")) {
            let ours = vmm_threads.contains(&name.as_str());
            assert_eq!(
                mode == "2",
                ours,
                "{name} is in seccomp mode {mode}: {modes:?}"
            );
        }
    }

    #[test]
    fn a_hostile_guest_cannot_crash_or_hang_the_vmm() {
        if !kvm_usable() {
            println!("skipped: /dev/kvm is not usable here");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        thread::spawn(move || {
            let _ = tx.send(boot(&hostile_guest(), 1, b""));
        });
        let o = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("run() did not end within 60 s");
        eprintln!("hostile guest ran for {:?}", started.elapsed());
        assert_eq!(o.result.unwrap().exit, VmExit::Guest(0));
        assert_eq!(
            String::from_utf8_lossy(&o.console),
            "D",
            "the marker, alone"
        );
    }

    /// Boots a real kernel given by the environment and prints what happened: a manual check
    /// for hosts whose KVM runs Linux (and for a KVM box). `NODEOS_KVM_KERNEL` (required),
    /// `NODEOS_KVM_ROOTFS`, `NODEOS_KVM_UPPER`, `NODEOS_KVM_CMDLINE`, `NODEOS_KVM_CPUS`,
    /// `NODEOS_KVM_MEM_MIB`, `NODEOS_KVM_INPUT` (bytes for the console).
    #[test]
    fn bad_inputs_are_clear_errors() {
        if !kvm_usable() {
            return;
        }
        let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
        let spec = |cpus, rootfs: &str| pvh_spec(kernel.path(), Path::new(rootfs), cpus);
        let console = || {
            let (rx, _) = pipe();
            let (_, tx) = pipe();
            ConsoleIo {
                input: rx,
                output: tx,
                ready: ConsoleReady::default(),
                template: ConsoleReady::default(),
            }
        };
        let err = run(
            &spec(1, "/nonexistent/rootfs.img"),
            console(),
            &StopSignal::new().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Disk(_)), "{err}");
        let err = run(
            &spec(0, "/dev/null"),
            console(),
            &StopSignal::new().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::CpuCount { requested: 0, .. }), "{err}");
    }
}
