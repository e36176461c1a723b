//! Resource limits of the jailed process, set before anything else of the jail: no core dumps
//! (guest memory must not land on the host's disk), a bounded number of descriptors, and no
//! file written past what it must write: the largest of the VM's writable disks, which it
//! writes in place (a disk never grows), or the snapshot it saves, whichever is larger — unless
//! the guest's console goes straight to a file (`start > file`), which grows with whatever the
//! guest prints: then file sizes are not limited.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{check, Error};
use crate::vm::{Start, VmSpec};

/// The most descriptors the jailed process may hold: our VMM holds its own (KVM, one per vCPU,
/// eventfds, disks: under 200 with 32 vCPUs) and at most 256 vsock connections and 64 pending
/// handshakes; QEMU's are fewer.
pub const OPEN_FILES: u64 = 1024;

/// The limits that depend on the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// RLIMIT_FSIZE: the size of the largest writable disk (0 without one), or of the snapshot
    /// it saves if larger; `None` (no limit) when the console is written to a file.
    pub file_size: Option<u64>,
}

impl Limits {
    /// The limits of a VM of `spec`, whose disks are at their host paths, writing its console
    /// to `console_output`.
    pub fn for_vm(spec: &VmSpec, console_output: BorrowedFd<'_>) -> Result<Limits, Error> {
        let console =
            nix::sys::stat::fstat(console_output.as_raw_fd()).map_err(|e| Error::Step {
                step: "reading what the console is written to".into(),
                source: e.into(),
            })?;
        if console.st_mode & libc::S_IFMT == libc::S_IFREG {
            return Ok(Limits { file_size: None });
        }
        let mut sizes = spec
            .disks()
            .filter(|d| !d.read_only)
            .map(|d| size(&d.path))
            .collect::<Result<Vec<_>, _>>()?;
        if let Start::Save { .. } = spec.start {
            let memory = u64::from(spec.memory_mib) << 20;
            sizes.push(crate::snapshot::format::max_file_len(memory));
        }
        Ok(Limits {
            file_size: Some(sizes.into_iter().max().unwrap_or(0)),
        })
    }
}

fn size(path: &Path) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| Error::Step {
            step: format!("reading the size of the disk {}", path.display()),
            source,
        })
}

/// Sets RLIMIT_CORE to 0, RLIMIT_NOFILE to [`OPEN_FILES`] and RLIMIT_FSIZE to `limits`'s, soft
/// and hard.
pub fn apply(limits: &Limits) -> Result<(), Error> {
    let file_size = limits.file_size.unwrap_or(libc::RLIM_INFINITY);
    for (resource, name, value) in [
        (libc::RLIMIT_CORE, "RLIMIT_CORE", 0),
        (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", OPEN_FILES),
        (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE", file_size),
    ] {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: limit is a valid rlimit that outlives the call.
        check(unsafe { libc::setrlimit(resource, &limit) }, || {
            format!("setting {name} to {value}")
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Device, Disk};

    /// Finding (in the KVM box): `start > file` had its VMM killed by SIGXFSZ at the guest's
    /// first byte of console output.
    #[test]
    fn the_largest_writable_disk_bounds_what_is_written() {
        use std::os::fd::AsFd;
        let (_read, pipe) = nix::unistd::pipe().unwrap();
        let console_file = tempfile::tempfile().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let disk = |name: &str, len: u64, read_only: bool| {
            let path = dir.path().join(name);
            std::fs::File::create(&path).unwrap().set_len(len).unwrap();
            Device::Block(Disk { path, read_only })
        };
        let mut spec = VmSpec {
            arch: contract::arch::Arch::X86_64,
            kernel: "/kernel".into(),
            devices: vec![disk("root", 1 << 30, true), disk("user", 1 << 20, false)],
            memory_mib: 64,
            cpus: 1,
            cmdline: String::new(),
            seccomp: true,
            start: Default::default(),
            measure_overhead: false,
        };
        let limit = |spec: &VmSpec| Limits::for_vm(spec, pipe.as_fd()).unwrap().file_size;
        assert_eq!(limit(&spec), Some(1 << 20));
        spec.devices.push(disk("volume", 3 << 20, false));
        assert_eq!(limit(&spec), Some(3 << 20));
        let to_a_file = Limits::for_vm(&spec, console_file.as_fd()).unwrap();
        assert_eq!(to_a_file.file_size, None, "the console is a file: no limit");
        spec.devices
            .retain(|d| matches!(d, Device::Block(d) if d.read_only));
        assert_eq!(limit(&spec), Some(0));
        spec.start = crate::vm::Start::Save {
            to: dir.path().join("snap"),
            at: b'R',
            identity: "t".into(),
        };
        let snapshot = limit(&spec).unwrap();
        assert!(
            snapshot > 64 << 20,
            "room for 64 MiB of memory and the state: {snapshot}"
        );
        spec.start = crate::vm::Start::Boot;
        spec.devices.push(Device::Block(Disk {
            path: dir.path().join("missing"),
            read_only: false,
        }));
        let err = Limits::for_vm(&spec, pipe.as_fd()).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
