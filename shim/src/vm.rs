//! The microVM a container (or a pod) runs in: NodeOS's kernel and image (built into the cache
//! when missing), the container's root file system, its binds' copies and the pod's disk as
//! disks, our VMM where
//! KVM can run Linux and QEMU with TCG elsewhere, jailed and filtered as `nodeos-vm run` runs
//! it, restored from the template snapshot of its shape.

use std::path::{Path, PathBuf};

use contract::params::Shell;
use sandbox::artifacts::{self, Artifact, Store};
use sandbox::booted::{self, ConsoleLog, Sandbox, BOOT_TIMEOUT};
use sandbox::templates::Templates;
use sandbox::vm_config;
use vmm::backend::{detect, qemu, Backend};
use vmm::jail::{IdRange, Jail};
use vmm::vm::{VmConfig, VolumeDisk};

use crate::bundle::GUEST_ROOT;
use crate::mounts::GUEST_MOUNTS;
use crate::pod::GUEST_POD;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the NodeOS kernel and image: {0}")]
    Artifacts(#[from] artifacts::ArtifactError),
    #[error("${0}: {1}")]
    Given(&'static str, #[source] artifacts::CheckError),
    #[error("the VMM program: {0}")]
    Vmm(#[from] sandbox::vmm_program::Error),
    #[error("booting the microVM: {0}")]
    Boot(#[from] booted::Error),
}

/// What the container's VM is made of.
pub struct Shape {
    /// The kernel and root image it boots.
    pub images: (PathBuf, PathBuf),
    /// Its root file system's disk, unless it runs on the guest's root.
    pub disk: Option<PathBuf>,
    /// The disk of the copies of its bind mounts, when it has some.
    pub mounts_disk: Option<PathBuf>,
    /// The pod's disk, when it is a pod's VM.
    pub pod_disk: Option<PathBuf>,
    pub memory_mib: Option<u32>,
    pub cpus: Option<u8>,
    /// The spec's hostname, when the guest takes it.
    pub hostname: Option<String>,
}

/// Names the kernel to boot instead of the cached build (containerd passes its environment on).
const KERNEL_ENV: &str = "NODEOS_VM_KERNEL";
/// Names the root image to boot instead of the cached build.
const ROOTFS_ENV: &str = "NODEOS_VM_ROOTFS";

/// Boots the container's VM and waits until its agent is ready; its console goes to
/// `console`, its agent's socket is made in `scratch`.
pub fn boot(shape: Shape, scratch: &Path, console: PathBuf) -> Result<Sandbox, Error> {
    let (kernel, rootfs) = shape.images;
    let store = Store::from_env()?;
    let backend = backend()?;
    let memory = shape
        .memory_mib
        .unwrap_or_else(|| vm_config::memory_mib(vm_config::DEFAULT_MEMORY).expect("valid"));
    let mut config = VmConfig::new(kernel, rootfs, memory, shape.cpus.unwrap_or(1));
    config.shell = Shell::None;
    config.agent_socket = Some(scratch.join("agent.sock"));
    config.volumes.extend(shape.disk.map(|image| VolumeDisk {
        image,
        mount_point: GUEST_ROOT.into(),
        read_only: false,
    }));
    config
        .volumes
        .extend(shape.mounts_disk.map(|image| VolumeDisk {
            image,
            mount_point: GUEST_MOUNTS.into(),
            read_only: false,
        }));
    config
        .volumes
        .extend(shape.pod_disk.map(|image| VolumeDisk {
            image,
            mount_point: GUEST_POD.into(),
            read_only: false,
        }));
    config.hostname = shape.hostname;
    Templates::in_cache(store.cache_dir()).restore(&backend, &mut config);
    let vm = Sandbox::boot(backend, config, ConsoleLog::File(console))?;
    vm.wait_ready(BOOT_TIMEOUT)?;
    Ok(vm)
}

/// The kernel and root image containers' VMs boot: `$NODEOS_VM_KERNEL` and
/// `$NODEOS_VM_ROOTFS`, else the cached builds (built first when missing).
pub fn images() -> Result<(PathBuf, PathBuf), Error> {
    let store = Store::from_env()?;
    Ok((
        artifact(&store, Artifact::Kernel, KERNEL_ENV, |path| {
            artifacts::check_kernel(path, contract::arch::Arch::host())
        })?,
        artifact(
            &store,
            Artifact::Rootfs,
            ROOTFS_ENV,
            artifacts::check_rootfs,
        )?,
    ))
}

/// The file the environment variable `env` names, checked by `check`; else the cached build
/// of `artifact` (built first when missing).
fn artifact(
    store: &Store,
    artifact: Artifact,
    env: &'static str,
    check: fn(&Path) -> Result<(), artifacts::CheckError>,
) -> Result<PathBuf, Error> {
    match std::env::var_os(env).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            check(&path).map_err(|e| Error::Given(env, e))?;
            Ok(path)
        }
        None => Ok(store.ensure(artifact, false)?),
    }
}

/// Our VMM where this host's KVM can run Linux guests, QEMU with TCG otherwise; jailed.
fn backend() -> Result<Backend, Error> {
    let accel = match detect::probe() {
        detect::KvmSupport::Usable => None,
        detect::KvmSupport::Unusable(why) => {
            log::info!("{why}; using QEMU with TCG");
            Some(qemu::Accel::Tcg)
        }
    };
    let jail = Jail::for_this_process(IdRange::default());
    Ok(sandbox::vmm_program::backend(accel, Some(jail))?)
}
