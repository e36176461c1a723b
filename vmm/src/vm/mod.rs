//! One microVM's description, whatever runs it ([`VmSpec`], a kernel and an ordered device
//! list), the console a backend drives, and how a VM ends: the types below the backends, the
//! devices and the jail.

pub mod cmdline;
mod console;
mod outcome;
mod spec;

pub use console::{ConsoleIo, ConsoleReady};
pub use outcome::{RunReport, StopSignal, VmExit};
pub use spec::{Device, Disk, NetSpec, VmSpec, GUEST_NET_PARAM};

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
