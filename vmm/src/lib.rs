//! The nodeos-vm VMM core: one microVM, described by a [`vm::VmSpec`], run by a [`backend`]:
//! our own VMM on KVM ([`kvm`], [`memory`], [`boot`], [`cpuid`], [`devices`]) in a process of
//! its own, confined by [`seccomp`] and [`jail`], or QEMU's microvm machine; [`tool`] runs a
//! host program on a file a guest wrote (e2fsck on a user's disk) in the same jail. Nothing
//! here parses a command line or serves HTTP: this crate's binary, `nodeos-vmm`, is the process
//! that runs jailed (docs/architecture.md).

pub mod backend;
mod boot;
#[cfg(target_arch = "x86_64")]
mod cpuid;
pub mod devices;
pub mod error_chain;
pub mod host_packages;
pub mod jail;
mod kvm;
pub mod memory;
pub mod poll;
pub mod runtime;
mod seccomp;
pub mod snapshot;
pub mod tool;
pub mod vm;
