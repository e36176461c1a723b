//! QEMU in the jail (crate::jail): started by the jail's helper (`nodeos-vmm exec`), which
//! enters the jail as our VMM does and gives up its privileges before it executes QEMU. QEMU's
//! jail holds its kernel, `/dev/null` (its image locking probes with it), `/dev/kvm` when it
//! uses KVM, and the host's programs and libraries (read-only), which QEMU needs to start; its
//! disks, sockets and network are descriptors.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Child;

use super::args::{self, Fds, Handed};
use super::{spawn, Accel, Jailed, QemuError};
use crate::jail::cgroup::QEMU_MEMORY_ALLOWANCE_MIB;
use crate::jail::exec::{self, Exec, HELPER_ARG};
use crate::jail::layout::{self, Access, Entry, KVM_DEVICE};
use crate::jail::HostSide;
use crate::vm::VmSpec;

/// Where QEMU finds its kernel in the jail.
pub const KERNEL: &str = "/kernel";
const NULL_DEVICE: &str = "/dev/null";

/// What QEMU's jail holds, QEMU at `qemu` and its kernel at `kernel` on the host.
pub fn entries(qemu: &Path, kernel: &Path, accel: Accel) -> Vec<Entry> {
    let mut entries = vec![
        Entry::bind(kernel, KERNEL, Access::ReadOnly),
        Entry::bind(NULL_DEVICE, NULL_DEVICE, Access::Device),
    ];
    if accel == Accel::Kvm {
        entries.push(Entry::bind(KVM_DEVICE, KVM_DEVICE, Access::Device));
    }
    entries.extend(layout::programs_for(qemu));
    entries
}

/// Starts QEMU for `spec` (from `qemu` on the host) in `jailed`'s jail, on the console `stdio`,
/// handing it `handed` (whose numbers `fds` are): returns once QEMU runs, with the jail's host
/// side, which is removed when dropped after QEMU ended.
pub fn start(
    jailed: &Jailed<'_>,
    spec: &VmSpec,
    accel: Accel,
    qemu: &Path,
    handed: &Handed,
    fds: &Fds,
    stdio: (OwnedFd, OwnedFd),
) -> Result<(Child, HostSide), QemuError> {
    let console = stdio.1.as_fd();
    let host = HostSide::prepare(jailed.jail, spec, console, QEMU_MEMORY_ALLOWANCE_MIB)?;
    let mut qemu_args = vec![super::emulator(spec.arch).0.into()];
    qemu_args.extend(args::args(spec, accel, KERNEL.as_ref(), fds));
    let exec = Exec {
        jail: host.request().clone(),
        entries: entries(qemu, &spec.kernel, accel),
        program: qemu.to_path_buf(),
        args: qemu_args,
        env: Vec::new(),
        fds_end: handed.end(),
    };
    let mut command = jailed.helper.command();
    command.arg(HELPER_ARG);
    let cgroup = host.cgroup().map(|c| c.procs_fd());
    let child = exec::start_helper(&exec, handed.moves(), |moves| {
        spawn(command, moves, handed.end(), cgroup, stdio)
    })?;
    Ok((child, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_kvm_and_the_programs() {
        let kvm = entries(
            Path::new("/usr/bin/qemu-system-x86_64"),
            Path::new("/c/vmlinux"),
            Accel::Kvm,
        );
        assert_eq!(kvm[0], Entry::bind("/c/vmlinux", KERNEL, Access::ReadOnly));
        assert_eq!(
            kvm[1],
            Entry::bind(NULL_DEVICE, NULL_DEVICE, Access::Device)
        );
        assert_eq!(kvm[2], Entry::bind(KVM_DEVICE, KVM_DEVICE, Access::Device));
        assert_eq!(kvm[3], Entry::bind("/usr", "/usr", Access::Programs));
        let tcg = entries(
            Path::new("/opt/qemu/bin/qemu-system-x86_64"),
            Path::new("/c/vmlinux"),
            Accel::Tcg,
        );
        assert!(!tcg.contains(&Entry::bind(KVM_DEVICE, KVM_DEVICE, Access::Device)));
        assert_eq!(
            tcg[2],
            Entry::bind("/opt/qemu/bin", "/opt/qemu/bin", Access::Programs)
        );
    }
}
