//! The nodeos-vm VMM core: one microVM, described by a [`vm::VmSpec`], run by a [`backend`]:
//! our own VMM on KVM ([`kvm`], [`memory`], [`boot`], [`cpuid`], [`devices`]) in a process of
//! its own, confined by [`seccomp`] and [`jail`], or QEMU's microvm machine. Nothing here parses
//! a command line or serves HTTP: this crate's binary, `nodeos-vmm`, is the process that runs
//! jailed (docs/architecture.md).

pub mod backend;
pub mod boot;
pub mod cpuid;
pub mod devices;
pub mod host_packages;
pub mod jail;
pub mod kvm;
pub mod memory;
pub mod poll;
pub mod runtime;
pub mod seccomp;
pub mod vm;
