//! What a jail holds: the files bound into it, each with the access the jailed process gets
//! (by its mount's flags, and by Landlock), and the links that make a program's paths work.
//!
//! Our VMM's jail ([`for_vm`]):
//! ```text
//! /kernel          the kernel, read-only
//! /disk0, ...      the block devices in the guest's order (the root image, the user's disk,
//!                  volumes), read-only where the disk is
//! /dev/kvm
//! ```
//! No socket: the agent link's listener and connections, and the network link, are
//! descriptors the parent hands over. QEMU's jail (crate::backend::qemu) holds its kernel,
//! `/dev/kvm` where it uses KVM, and the host's programs and libraries ([`programs`]); its
//! disks and sockets are descriptors too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vm::{Device, VmSpec};

pub const KVM_DEVICE: &str = "/dev/kvm";

/// How the jailed process may use what is bound in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    ReadOnly,
    ReadWrite,
    /// A character device, read and written, with its ioctls.
    Device,
    /// Programs and libraries: read and executed, never written.
    Programs,
}

/// One thing in the jail, at `target` (an absolute path there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// The host's file or folder `source`, bound in.
    Bind {
        source: PathBuf,
        target: PathBuf,
        access: Access,
    },
    /// A symbolic link to `to`.
    Link { target: PathBuf, to: PathBuf },
}

impl Entry {
    pub fn bind(source: impl Into<PathBuf>, target: impl Into<PathBuf>, access: Access) -> Self {
        Entry::Bind {
            source: source.into(),
            target: target.into(),
            access,
        }
    }
}

/// The jail of our VMM for `spec`, and `spec` with the paths its files have there.
pub fn for_vm(spec: &VmSpec) -> (Vec<Entry>, VmSpec) {
    let mut jailed = spec.clone();
    let mut entries = vec![Entry::bind(&spec.kernel, "/kernel", Access::ReadOnly)];
    jailed.kernel = "/kernel".into();
    for (index, device) in jailed.devices.iter_mut().enumerate() {
        if let Device::Block(disk) = device {
            let target = PathBuf::from(format!("/disk{index}"));
            let access = if disk.read_only {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            entries.push(Entry::bind(&disk.path, &target, access));
            disk.path = target;
        }
    }
    entries.push(Entry::bind(KVM_DEVICE, KVM_DEVICE, Access::Device));
    (entries, jailed)
}

/// What `program` (a host path) needs to run in a jail: the host's programs and libraries
/// ([`programs`]) and, when it is installed elsewhere, its own folder first.
pub fn programs_for(program: &Path) -> Vec<Entry> {
    let programs = programs();
    let covered = |folder: &Path| {
        programs.iter().any(|e| match e {
            Entry::Bind { target, .. } | Entry::Link { target, .. } => folder.starts_with(target),
        })
    };
    let mut entries = Vec::new();
    if let Some(folder) = program.parent().filter(|f| !covered(f)) {
        entries.push(Entry::bind(folder, folder, Access::Programs));
    }
    entries.extend(programs);
    entries
}

/// The host's programs and libraries, read-only, for a program the jail starts (QEMU): `/usr`,
/// and `/bin`, `/sbin`, `/lib`, `/lib64` as links where they are links on the host (a merged
/// `/usr`), bound in where they are folders.
fn programs() -> Vec<Entry> {
    let mut entries = vec![Entry::bind("/usr", "/usr", Access::Programs)];
    for top in ["/bin", "/sbin", "/lib", "/lib64"] {
        let path = Path::new(top);
        match std::fs::read_link(path) {
            Ok(to) => entries.push(Entry::Link {
                target: path.into(),
                to,
            }),
            Err(_) if path.is_dir() => entries.push(Entry::bind(path, path, Access::Programs)),
            Err(_) => {}
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Disk;

    #[test]
    fn a_vm_sees_its_files_under_fixed_names() {
        let spec = VmSpec {
            arch: contract::arch::Arch::X86_64,
            kernel: "/k/vmlinux".into(),
            devices: vec![
                Device::Block(Disk {
                    path: "/i/rootfs.img".into(),
                    read_only: true,
                }),
                Device::Rng,
                Device::Block(Disk {
                    path: "/u/alice.img".into(),
                    read_only: false,
                }),
                Device::AgentLink("/run/agent.sock".into()),
            ],
            memory_mib: 128,
            cpus: 1,
            cmdline: String::new(),
            seccomp: true,
            start: Default::default(),
            measure_overhead: false,
        };
        let (entries, jailed) = for_vm(&spec);
        assert_eq!(
            entries,
            [
                Entry::bind("/k/vmlinux", "/kernel", Access::ReadOnly),
                Entry::bind("/i/rootfs.img", "/disk0", Access::ReadOnly),
                Entry::bind("/u/alice.img", "/disk2", Access::ReadWrite),
                Entry::bind("/dev/kvm", "/dev/kvm", Access::Device),
            ]
        );
        assert_eq!(jailed.kernel, Path::new("/kernel"));
        let disks: Vec<_> = jailed.disks().map(|d| d.path.as_path()).collect();
        assert_eq!(disks, [Path::new("/disk0"), Path::new("/disk2")]);
        // The agent link is a descriptor: its path stays the host's, unused in the jail.
        assert_eq!(jailed.agent_socket(), spec.agent_socket());
    }

    #[test]
    fn programs_keep_the_hosts_paths() {
        let entries = programs();
        assert_eq!(entries[0], Entry::bind("/usr", "/usr", Access::Programs));
        for top in ["/bin", "/lib"] {
            assert!(
                entries.iter().any(|e| match e {
                    Entry::Link { target, .. } | Entry::Bind { target, .. } => target == top,
                }),
                "{top}: {entries:?}"
            );
        }
    }
}
