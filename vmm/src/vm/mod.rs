//! The description of one microVM, whatever runs it, and what comes back when it ends: the
//! types below the backends, the devices and the jail.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

pub mod cmdline;

/// Everything needed to boot one microVM, whatever the backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSpec {
    /// ELF vmlinux with a PVH entry (or a bzImage, KVM backend only).
    pub kernel: PathBuf,
    /// Read-only squashfs root image: the first virtio-blk device, `/dev/vda`.
    pub rootfs: PathBuf,
    /// Writable ext4 image for the overlay's upper layer: `/dev/vdb` when present.
    pub upper_disk: Option<PathBuf>,
    /// More virtio-blk disks after those (`/dev/vdc`, ...): the volumes of `nodeos-vm run`.
    pub disks: Vec<Disk>,
    /// The host end of the guest agent's link: a Unix socket speaking Firecracker's hybrid
    /// vsock (`CONNECT <port>`; guest connections to host port P reach `<path>_P`). Our VMM
    /// gives the guest a virtio-vsock device (CID 3); QEMU, without vhost-vsock here, a
    /// virtio-serial port multiplexed the same way (contract::mux). Callers can't tell.
    pub agent_socket: Option<PathBuf>,
    /// A network interface for the guest; none at all when `None`.
    pub net: Option<NetSpec>,
    pub memory_mib: u32,
    pub cpus: u8,
    /// The kernel command line without the `virtio_mmio.device=` entries, which each backend
    /// adds for the devices it creates.
    pub cmdline: String,
    /// Syscall filtering: seccomp-BPF on every thread of our VMM (crate::seccomp), QEMU's
    /// `-sandbox on`. Off only for debugging (`--no-seccomp`).
    pub seccomp: bool,
}

/// A virtio-blk disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// The guest side of [`NetSpec`]: its address, gateway (the host) and DNS server
/// (`nodeos.net=`, configured by the guest's init).
pub const GUEST_NET_PARAM: &str = "nodeos.net=10.0.2.15/24,10.0.2.2,10.0.2.3";

/// How the guest's network interface reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetSpec {
    /// User-mode NAT, no privileges: `passt` for our VMM, QEMU's user networking (slirp) for
    /// QEMU. Either way the guest is 10.0.2.15/24, the gateway 10.0.2.2 is the host's
    /// loopback, and DNS is at 10.0.2.3.
    User,
    /// An existing TAP interface of the host, by name.
    Tap(String),
}

/// The guest's serial console: bytes read from `input` go to the UART, UART output goes to
/// `output`. The caller owns the host terminal (raw mode, EOF translation). The backend calls
/// `ready.signal()` when the guest writes [`CONSOLE_READY`] to the boot-timer port: the host
/// holds input back until then.
#[derive(Debug)]
pub struct ConsoleIo {
    pub input: OwnedFd,
    pub output: OwnedFd,
    pub ready: ConsoleReady,
}

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmExit {
    /// The guest wrote its exit status to the exit port (0xf4).
    Guest(u8),
    /// The guest reset or shut down without an exit status: a kernel panic (`panic=-1`
    /// reboots), a triple fault, or a reboot.
    Reset,
    /// The host ended it through its [`StopSignal`].
    Stopped,
}

/// Lets the host end a running VM at once (`nodeos-vm run` once its command is done): the
/// backend watches it and ends the VM with [`VmExit::Stopped`]. Clones share the signal.
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<EventFd>);

impl StopSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignal(Arc::new(EventFd::new(libc::EFD_NONBLOCK)?)))
    }

    /// Asks the backend to end the VM; idempotent.
    pub fn stop(&self) {
        // Never read: it stays readable for whoever watches it.
        let _ = self.0.write(1);
    }

    /// Readable once [`stop`](Self::stop) was called.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The signal whose [`fd`](Self::fd) a parent process handed down as `fd`.
    pub fn from_fd(fd: OwnedFd) -> Self {
        // SAFETY: `fd` is an eventfd (a StopSignal's) that this process now owns alone.
        StopSignal(Arc::new(unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) }))
    }
}

/// What a finished VM reports back.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RunReport {
    pub exit: VmExit,
    /// Time from the backend's start to the guest's write to the boot-timer port (0x3f0).
    pub init_reached: Option<Duration>,
    /// Memory the VMM process holds besides guest RAM, in KiB, when the backend can tell.
    pub vmm_overhead_kib: Option<u64>,
}

/// The exit status of nodeos-vm's own failures (and of a VMM process that could not run).
pub const HOST_FAILURE_STATUS: u8 = 125;

/// Exit port: the guest writes its exit status here (docs/guest-contract.md).
pub const EXIT_PORT: u16 = 0xf4;
/// Boot-timer port: guest init writes [`INIT_STARTED`] here as its first action and
/// [`CONSOLE_READY`] once its console takes input.
pub const BOOT_TIMER_PORT: u16 = 0x3f0;
/// Boot-timer byte: the guest's first userspace instruction ran.
pub const INIT_STARTED: u8 = b'I';
/// Boot-timer byte: the guest console is configured; input sent from now on is kept.
pub const CONSOLE_READY: u8 = b'R';


/// Set once the guest's console can take input (boot-timer byte `R`).
#[derive(Clone, Default)]
pub struct ConsoleReady {
    state: Arc<(Mutex<bool>, Condvar)>,
    /// Called once, when first signalled: how a VMM process tells its parent.
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ConsoleReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleReady")
            .field("ready", &*self.state.0.lock().unwrap())
            .finish_non_exhaustive()
    }
}

impl ConsoleReady {
    /// One that calls `notify` when it is first signalled.
    pub fn notifying(notify: impl Fn() + Send + Sync + 'static) -> Self {
        ConsoleReady {
            state: Arc::default(),
            notify: Some(Arc::new(notify)),
        }
    }

    pub fn signal(&self) {
        let (lock, cvar) = &*self.state;
        let was = std::mem::replace(&mut *lock.lock().unwrap(), true);
        cvar.notify_all();
        if let (false, Some(notify)) = (was, &self.notify) {
            notify();
        }
    }

    pub fn wait(&self) {
        let (lock, cvar) = &*self.state;
        let mut ready = lock.lock().unwrap();
        while !*ready {
            ready = cvar.wait(ready).unwrap();
        }
    }
}

