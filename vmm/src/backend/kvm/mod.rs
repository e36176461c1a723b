//! Our own VMM on KVM: builds the microVM (memory, vCPUs, devices, boot state) — on x86-64 the
//! way QEMU's microvm machine presents it to the guest (`x86_64`), on arm64 a machine its
//! device tree describes (`aarch64`) —, runs it, and tears everything down when it ends.
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
//! host's stop signal and serving its pause requests, and `vmm`, which kicks the vCPUs for a
//! pause, waits for the end, stops the others and joins them; [`Vmm::wait`] waits for `vmm`. Each of them installs its seccomp
//! filter first (crate::seccomp), unless the spec turns seccomp off; the thread that called
//! [`Vmm::start`] stays as it was.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::boot;
use crate::boot::cmdline::{self, MmioSlot};
use crate::devices::bus::{Bus, OverlapError};
use crate::devices::legacy::ports::SaveTrigger;
use crate::devices::legacy::serial::{self, ConsoleWriter, Serial};
use crate::devices::legacy::IrqLine;
use crate::devices::persist::{Persist, RestoreError};
use crate::devices::virtio::block::{self, Block};
use crate::devices::virtio::mmio::{MmioTransport, TransportArgs};
use crate::devices::virtio::net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{self, Vsock};
use crate::devices::virtio::{worker, VirtioDevice};
use crate::devices::Lifecycle;
use crate::jail::{self, Identity};
use crate::kvm::control::{EndGuard, RunState, TransitionError};
#[cfg(target_arch = "aarch64")]
use crate::kvm::gic::Gic;
use crate::kvm::state::VcpuStates;
use crate::kvm::vcpu::{self, RunError};
use crate::kvm::{self, Vcpu, Vm, VmControl};
use crate::memory::{self, Backing, GuestMemory, SharedMemory, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use crate::seccomp::{self, ThreadKind};
use crate::snapshot::{self, format::Loaded, save::Saver, Header, Snapshot};
use crate::vm::{
    ConsoleIo, ConsoleReady, Device, PauseLink, PauseRequest, RunReport, Start, StopSignal, VmExit,
    VmSpec,
};

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
}

fn device_err(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Device { what, source }
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
    /// Whether the VMM measures its own memory as the VM ends (`VmSpec::measure_overhead`).
    measure_overhead: bool,
    /// Where the vCPUs leave their state for a save.
    vcpu_states: Arc<VcpuStates>,
    /// The save, for `Start::Save`.
    saver: Option<Saver>,
    /// The in-kernel interrupt controller, held as long as the VM.
    #[cfg(target_arch = "aarch64")]
    _gic: Arc<Gic>,
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
        let smaps = built.measure_overhead.then(memory::open_smaps).flatten();
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
            let states = built.vcpu_states.clone();
            let name = format!("vcpu{}", vcpu.index());
            threads.spawn(&control, name, ThreadKind::Vcpu, move || {
                let _guard = EndGuard {
                    control: &c,
                    what: "vCPU",
                };
                vcpu.run(&pio, &mmio, &c, &states);
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

/// The snapshot file `spec.start` names — `given` when the caller opened it (a jailed VMM has
/// no path to it) — and, for a restore, what it holds, read and checked (but for its header,
/// which [`saved`] checks); neither for a boot.
fn open_snapshot(
    spec: &VmSpec,
    given: Option<File>,
) -> Result<(Option<File>, Option<Loaded>), Error> {
    let file = match (&spec.start, given) {
        (Start::Boot, _) => return Ok((None, None)),
        (_, Some(file)) => file,
        (Start::Save { to, .. }, None) => File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(to)
            .map_err(|source| Error::SnapshotFile {
                path: to.clone(),
                source,
            })?,
        (Start::Restore { from, .. }, None) => {
            File::open(from).map_err(|source| Error::SnapshotFile {
                path: from.clone(),
                source,
            })?
        }
    };
    let loaded = match spec.start {
        Start::Restore { .. } => Some(snapshot::format::read(&file)?),
        _ => None,
    };
    Ok((Some(file), loaded))
}

/// Guest memory: mapped from the snapshot `loaded` came from, or new.
fn guest_memory(
    spec: &VmSpec,
    file: Option<&File>,
    loaded: Option<&Loaded>,
) -> Result<(SharedMemory, Backing), Error> {
    let (mem, backing) = match (loaded, file) {
        (Some(loaded), Some(file)) => (
            memory::from_snapshot(spec.memory_mib, file, loaded.memory_offset)?,
            Backing::Snapshot,
        ),
        _ => memory::create(spec.memory_mib)?,
    };
    tracing::info!(memory_mib = spec.memory_mib, "guest RAM on {backing}");
    Ok((Arc::new(mem), backing))
}

/// The header a save writes and a restore expects, for a VM that runs on a CPU whose hash is
/// `host`; none for a boot.
fn snapshot_header(
    spec: &VmSpec,
    host: impl FnOnce() -> Result<String, kvm::Error>,
) -> Result<Option<Header>, Error> {
    Ok(match &spec.start {
        Start::Boot => None,
        Start::Save { identity, .. } | Start::Restore { identity, .. } => {
            Some(Header::new(spec, identity, host()?))
        }
    })
}

/// The snapshot to restore, once its header is the one expected.
fn saved<'a>(
    loaded: Option<&'a Loaded>,
    header: Option<&Header>,
) -> Result<Option<&'a Snapshot>, Error> {
    match (loaded, header) {
        (Some(loaded), Some(header)) => {
            header.check(&loaded.snapshot.header)?;
            Ok(Some(&loaded.snapshot))
        }
        _ => Ok(None),
    }
}

/// The transport of virtio device `i`, made of `args`: new, or with the device as `saved`
/// holds them.
fn transport(
    saved: Option<&Snapshot>,
    i: usize,
    mut args: TransportArgs,
) -> Result<MmioTransport, Error> {
    let Some(saved) = saved else {
        return MmioTransport::new(args.device, args.mem, args.irq, args.notify, args.base)
            .map_err(device_err("virtio-mmio transport"));
    };
    let state = &saved.devices.virtio[i];
    let restore_err = |source| snapshot::Error::Device { index: i, source };
    args.device
        .restore_state(&state.device)
        .map_err(restore_err)?;
    Ok(MmioTransport::restore(args, &state.transport).map_err(restore_err)?)
}

/// A save trigger for `Start::Save`: the eventfd the save waits on, and what the boot timer
/// fires when the guest writes the save byte.
fn save_trigger(
    spec: &VmSpec,
    control: &Arc<VmControl>,
) -> Result<(Option<EventFd>, Option<SaveTrigger>), Error> {
    let Start::Save { at, .. } = &spec.start else {
        return Ok((None, None));
    };
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(device_err("save trigger"))?;
    let timer_evt = evt.try_clone().map_err(device_err("save trigger"))?;
    Ok((
        Some(evt),
        Some(SaveTrigger {
            at: *at,
            evt: timer_evt,
            control: control.clone(),
        }),
    ))
}

fn legacy_err(what: &'static str) -> impl FnOnce(RestoreError) -> Error {
    move |source| snapshot::Error::Legacy { what, source }.into()
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

/// The console UART, its interrupt line on irqfd `gsi`, writing to `output`: new, or as `saved`
/// holds it.
fn console_serial(
    vm: &Vm,
    gsi: u32,
    output: OwnedFd,
    control: &VmControl,
    saved: Option<&Snapshot>,
) -> Result<Arc<Mutex<Serial<ConsoleWriter>>>, Error> {
    let irq = IrqLine::new().map_err(device_err("serial interrupt"))?;
    vm.register_irqfd(&irq.0, gsi)?;
    let out = ConsoleWriter::new(output, control.stopping_flag());
    Ok(Arc::new(Mutex::new(match saved {
        None => Serial::new(irq, out),
        Some(s) => {
            Serial::restore((irq, out), &s.devices.serial).map_err(legacy_err("serial port"))?
        }
    })))
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
pub(crate) mod tests;
