//! nodeos-vm: boots NodeOS (a Linux kernel whose whole userland is Node.js) in microVMs, on our
//! own KVM-based VMM or on QEMU's microvm machine.
//!
//! CLI (`cli`) -> backend (`backend::{kvm, qemu}`) -> VM builder -> devices.

pub mod agent;
pub mod artifacts;
pub mod backend;
pub mod boot;
pub mod cli;
pub mod cmdline;
pub mod console;
pub mod cpuid;
pub mod data_dir;
pub mod devices;
pub mod host_packages;
pub mod jail;
pub mod kvm;
pub mod memory;
pub mod npm_registry;
pub mod poll;
pub mod runtime;
pub mod sandbox;
pub mod seccomp;
pub mod serve;
pub mod users;
pub mod vm_config;
pub mod volume;

/// What the fuzz targets in `fuzz/` reach that is not public otherwise: the parsers of what
/// clients send (the virtio devices' driver is `devices::virtio::harness`).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cli::parse_net;
    pub use crate::cli::run::{env_entry, workdir};
    pub use crate::serve::http::invoke_event;
    pub use crate::serve::package::{check_name, unpack, Options};
}
