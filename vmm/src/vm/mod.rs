//! One microVM as its user chose it ([`VmConfig`]) and as a backend boots it ([`VmSpec`], a
//! kernel, its command line and an ordered device list), the console a backend drives, how a
//! VM ends and how the host pauses it: the types below the backends, the devices and the jail.

mod config;
mod console;
mod outcome;
mod pause;
mod spec;

pub use config::{
    ConfigError, Console, VmConfig, VolumeDisk, MAX_CMDLINE_LEN, MAX_CPUS, MAX_VOLUMES,
    MIN_MEMORY_MIB,
};
pub use console::{ConsoleIo, ConsoleReady};
pub use outcome::{RunReport, StopSignal, VmExit};
pub use pause::{pause_link, PauseError, PauseLink, PauseRequest, PauseSwitch};
pub use spec::{Device, Disk, HostLoopback, NetSpec, Protocol, PublishedPort, Start, VmSpec};
