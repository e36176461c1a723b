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
pub mod devices;
pub mod host_packages;
pub mod kvm;
pub mod memory;
pub mod poll;
pub mod runtime;
pub mod sandbox;
pub mod serve;
pub mod vm_config;
pub mod volume;
