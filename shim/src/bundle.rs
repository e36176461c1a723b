//! A container's OCI bundle as containerd hands it over: its `config.json` (the runtime spec)
//! and its root file system, packed into an ext4 disk for the microVM.

use std::fs;
use std::path::{Path, PathBuf};

use containerd_shim::protos::api::Mount;
use contract::caps::{self, Capabilities};
use contract::frame::{Container, WinSize};
use contract::mount::{Mount as ContainerMount, MountKind};
use contract::rlimit::{Rlimit, RlimitError};
use contract::seccomp::Filter;
use nix::mount::MsFlags;
use oci_spec::runtime::{Process, Spec};
use sandbox::agent::Command;
use sandbox::{image_tree, volume};

use crate::seccomp;
use vmm::vm::{MAX_CPUS, MIN_MEMORY_MIB};

/// Where the guest mounts the container's root file system when it has a disk of its own.
pub const GUEST_ROOT: &str = "/run/container";
/// Room a container's disk gets beyond its files, for what its processes write (sparse).
const WRITABLE_BYTES: u64 = 1 << 30;
/// The largest VM a container gets.
const MAX_MEMORY_MIB: u32 = 64 << 10;
/// The pod's limits, as containerd's CRI annotates a pod's sandbox container (1.7 and later).
const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // oci-spec's own words ("serde failed") say little: its sources say what is wrong.
    #[error("reading the bundle's config.json in {path}: {}", vmm::error_chain::one_line(.source))]
    Spec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("the container's spec has no process to run")]
    NoProcess,
    #[error("the container's process has no arguments")]
    NoArgs,
    #[error("the container's process: {0}")]
    BadProcess(String),
    #[error("the container's process: its rlimits: {0} is not a resource Linux limits")]
    UnknownRlimit(String),
    #[error("the container's process: its rlimits give {0} more than once")]
    RlimitTwice(String),
    #[error("the container's process: its rlimits: {0}")]
    BadRlimit(#[source] RlimitError),
    #[error("the container's process: its capabilities: {0} is not a capability of Linux")]
    UnknownCapability(String),
    #[error("the spec's seccomp profile: {0}")]
    Seccomp(#[from] seccomp::Error),
    #[error("the spec's masked or read-only path {path}: {source}")]
    BadPath {
        path: String,
        #[source]
        source: contract::mount::MountError,
    },
    #[error("the container's root file system {path} is missing: {source}")]
    MissingRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting the container's root file system on {path}: {why}")]
    Mount { path: PathBuf, why: String },
    #[error("packing the container's root file system into a disk: {0}")]
    Pack(#[from] volume::Error),
    #[error("looking at the container's root file system: {0}")]
    Tree(#[from] image_tree::Error),
}

/// How a container's root file system reaches its VM.
#[derive(Debug, PartialEq, Eq)]
pub enum Root {
    /// It is the guest's own root image, file for file (an image `nodeos-vm image export`
    /// wrote of the image the VM boots, alone): the container runs on the guest's root, whose
    /// files the template has read once already. What it writes lands in the guest's
    /// writable layer.
    Guest,
    /// Packed into this disk, mounted at [`GUEST_ROOT`].
    Disk(PathBuf),
    /// Unpacked into this folder of its pod's VM (crate::pod).
    InPod(String),
}

impl Root {
    /// Where in the guest the container's processes have their root.
    pub fn in_guest(&self) -> &str {
        match self {
            Root::Guest => "/",
            Root::Disk(_) => GUEST_ROOT,
            Root::InPod(folder) => folder,
        }
    }
}

/// A container's bundle, read.
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
}

impl Bundle {
    pub fn read(dir: &Path) -> Result<Bundle, Error> {
        let path = dir.join("config.json");
        let spec = Spec::load(&path).map_err(|source| Error::Spec { path, source })?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            spec,
        })
    }

    /// The container's main process.
    pub fn process(&self) -> Result<&Process, Error> {
        self.spec.process().as_ref().ok_or(Error::NoProcess)
    }

    /// Its root file system on the host: `root.path` of the spec, relative to the bundle.
    pub fn root(&self) -> PathBuf {
        let path = self
            .spec
            .root()
            .as_ref()
            .map(|root| root.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        self.dir.join(path)
    }

    /// The container's hostname, when the guest can take it (a name of letters, digits, `-`
    /// and `.`); a VM without one has a name of its own.
    pub fn hostname(&self) -> Option<String> {
        let name = self.spec.hostname().as_ref().filter(|h| !h.is_empty())?;
        match contract::activation::check_hostname(name) {
            Ok(()) => Some(name.clone()),
            Err(why) => {
                log::warn!("the spec's hostname {name:?} is not the guest's: {why}");
                None
            }
        }
    }

    /// The VM's memory: the pod's limit where containerd's CRI gives it to a pod's sandbox
    /// container (containerd 1.7 and later: the sum of its containers' limits), else the
    /// container's memory limit (`linux.resources.memory.limit`), within what a VM can be;
    /// `None` without a limit.
    pub fn memory_mib(&self) -> Option<u32> {
        let limit = match self.annotation(SANDBOX_MEMORY) {
            Some(limit) => limit,
            None => {
                let memory = self.resources()?.memory().as_ref()?;
                u64::try_from(memory.limit()?).ok()?
            }
        };
        let mib = limit.div_ceil(1 << 20);
        Some(mib.clamp(u64::from(MIN_MEMORY_MIB), u64::from(MAX_MEMORY_MIB)) as u32)
    }

    /// The VM's vCPUs: the pod's CPU quota over its period where containerd's CRI gives them
    /// to a pod's sandbox container, else the container's, rounded up; `None` without a
    /// quota.
    pub fn cpus(&self) -> Option<u8> {
        let (quota, period) = match (
            self.annotation(SANDBOX_CPU_QUOTA),
            self.annotation(SANDBOX_CPU_PERIOD),
        ) {
            (Some(quota), Some(period)) => (quota, period),
            _ => {
                let cpu = self.resources()?.cpu().as_ref()?;
                (u64::try_from(cpu.quota()?).ok()?, cpu.period()?)
            }
        };
        let period = Some(period).filter(|p| *p > 0)?;
        Some(quota.div_ceil(period).clamp(1, u64::from(MAX_CPUS)) as u8)
    }

    /// The spec's `linux.seccomp` profile, compiled for the guest's kernel.
    pub fn seccomp(&self) -> Result<Option<Filter>, Error> {
        let Some(profile) = self
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
        else {
            return Ok(None);
        };
        if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            log::info!("the spec's seccomp flags are left out: the guest's filter takes none");
        }
        Ok(Some(seccomp::compile(profile)?))
    }

    /// The spec's `linux.maskedPaths` and `linux.readonlyPaths`, as the agent's mounts (after
    /// the container's own, as runc mounts them).
    pub fn protected_paths(&self) -> Result<Vec<ContainerMount>, Error> {
        let Some(linux) = self.spec.linux() else {
            return Ok(Vec::new());
        };
        let masked = linux.masked_paths().iter().flatten();
        let read_only = linux.readonly_paths().iter().flatten();
        masked
            .map(|path| (path, MountKind::Mask))
            .chain(read_only.map(|path| (path, MountKind::ReadOnly)))
            .map(|(path, kind)| {
                let mount = ContainerMount {
                    destination: path.clone().into_bytes(),
                    kind,
                    ..ContainerMount::default()
                };
                mount.check().map_err(|source| Error::BadPath {
                    path: path.clone(),
                    source,
                })?;
                Ok(mount)
            })
            .collect()
    }

    fn resources(&self) -> Option<&oci_spec::runtime::LinuxResources> {
        self.spec.linux().as_ref()?.resources().as_ref()
    }

    /// The spec's annotation `key`, when it is a positive number.
    fn annotation(&self, key: &str) -> Option<u64> {
        let annotations = self.spec.annotations().as_ref()?;
        annotations.get(key)?.parse().ok().filter(|n| *n > 0)
    }
}

/// The agent's command for an OCI process: its args, env, cwd, user, rlimits and capabilities,
/// in the container's root (`root`, in the guest) with its `mounts` and `seccomp` filter, on a
/// terminal when it asks for one.
pub fn command(
    process: &Process,
    root: &str,
    mounts: &[ContainerMount],
    seccomp: Option<&Filter>,
) -> Result<Command, Error> {
    let args = process.args().as_ref().filter(|a| !a.is_empty());
    let args = args.ok_or(Error::NoArgs)?;
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(Error::BadProcess(format!(
            "its cwd {} is not an absolute path",
            cwd.display()
        )));
    }
    let user = process.user();
    let tty = process.terminal().unwrap_or(false).then(|| {
        let size = process.console_size();
        WinSize {
            rows: size.map_or(24, |s| s.height() as u16),
            cols: size.map_or(80, |s| s.width() as u16),
        }
    });
    Ok(Command {
        argv: args.iter().map(|a| a.clone().into_bytes()).collect(),
        env: process
            .env()
            .iter()
            .flatten()
            .map(|e| e.clone().into_bytes())
            .collect(),
        cwd: Some(cwd.as_os_str().as_encoded_bytes().to_vec()),
        stdin: false,
        timeout: None,
        container: Some(Container {
            root: root.as_bytes().to_vec(),
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            rlimits: rlimits(process)?,
            mounts: mounts.to_vec(),
            capabilities: capabilities(process)?,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            seccomp: seccomp.cloned(),
        }),
        tty,
    })
}

/// The process's capability sets, when its spec gives them (a set it leaves out is empty).
fn capabilities(process: &Process) -> Result<Option<Capabilities>, Error> {
    let Some(sets) = process.capabilities() else {
        return Ok(None);
    };
    let mask = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<u64, Error> {
        // The spec's names, as its JSON has them (`CAP_SYS_ADMIN`).
        let names: Vec<String> = set
            .iter()
            .flatten()
            .map(|cap| match serde_json::to_value(cap) {
                Ok(serde_json::Value::String(name)) => name,
                _ => format!("{cap:?}"),
            })
            .collect();
        caps::mask(names.iter().map(String::as_str))
            .map_err(|name| Error::UnknownCapability(name.to_string()))
    };
    Ok(Some(Capabilities {
        bounding: mask(sets.bounding())?,
        effective: mask(sets.effective())?,
        permitted: mask(sets.permitted())?,
        inheritable: mask(sets.inheritable())?,
        ambient: mask(sets.ambient())?,
    }))
}

/// The process's `rlimits`, checked as the runtime spec asks (each type once, each a limit
/// Linux has, soft at most hard): an error here is the container's, before anything starts.
fn rlimits(process: &Process) -> Result<Vec<Rlimit>, Error> {
    let mut limits: Vec<Rlimit> = Vec::new();
    for limit in process.rlimits().iter().flatten() {
        let name = limit.typ().to_string();
        let resource = Rlimit::resource_named(&name).ok_or(Error::UnknownRlimit(name.clone()))?;
        if limits.iter().any(|l| l.resource == resource) {
            return Err(Error::RlimitTwice(name));
        }
        let limit = Rlimit {
            resource,
            soft: limit.soft(),
            hard: limit.hard(),
        };
        limit.check().map_err(Error::BadRlimit)?;
        limits.push(limit);
    }
    Ok(limits)
}

/// The container's root file system for its VM: the snapshotter's `mounts` mounted on
/// `root` for the while (or `root` as it is without them), recognised as the guest's image
/// `guest_rootfs` or else packed into a fresh ext4 image at `disk`.
pub fn prepare_root(
    root: &Path,
    mounts: &[Mount],
    guest_rootfs: &Path,
    disk: &Path,
) -> Result<Root, Error> {
    with_root(
        root,
        mounts,
        guest_rootfs,
        |is_guest| -> Result<Root, Error> {
            if is_guest {
                return Ok(Root::Guest);
            }
            volume::pack_as_is(root, disk, WRITABLE_BYTES)?;
            Ok(Root::Disk(disk.to_path_buf()))
        },
    )
}

/// Runs `use_root` on the container's root file system `root`, with the snapshotter's
/// `mounts` mounted on it for the while (or as it is without them), telling it whether the
/// root is the guest's image `guest_rootfs` file for file.
pub fn with_root<T, E: From<Error>>(
    root: &Path,
    mounts: &[Mount],
    guest_rootfs: &Path,
    use_root: impl FnOnce(bool) -> Result<T, E>,
) -> Result<T, E> {
    fs::metadata(root).map_err(|source| Error::MissingRoot {
        path: root.to_path_buf(),
        source,
    })?;
    let mounted = mount_all(root, mounts)?;
    let used = image_tree::is_image(root, guest_rootfs)
        .map_err(|e| E::from(Error::from(e)))
        .and_then(use_root);
    for target in mounted.iter().rev() {
        if let Err(e) = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            log::warn!("unmounting {}: {e}", target.display());
        }
    }
    used
}

/// Mounts each of `mounts` on `root` (the snapshotter's overlay, or a bind mount); the
/// targets mounted, for unmounting.
fn mount_all(root: &Path, mounts: &[Mount]) -> Result<Vec<PathBuf>, Error> {
    let mut mounted = Vec::new();
    for mount in mounts {
        let target = root.join(mount.target.trim_start_matches('/'));
        let (flags, data) = mount_options(&mount.options);
        let fstype = (!mount.type_.is_empty() && mount.type_ != "bind").then_some(&mount.type_[..]);
        let done = nix::mount::mount(
            Some(mount.source.as_str()),
            &target,
            fstype,
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        if let Err(e) = done {
            for target in mounted.iter().rev() {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
            return Err(Error::Mount {
                path: target,
                why: format!("{} {}: {e}", mount.type_, mount.source),
            });
        }
        mounted.push(target);
    }
    Ok(mounted)
}

/// mount(8)'s options as mount(2) takes them: the flags, and the file system's own options.
fn mount_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle whose config.json is `spec`'s JSON, in a temporary folder.
    fn bundle_of(spec: serde_json::Value) -> (tempfile::TempDir, Bundle) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        let bundle = Bundle::read(dir.path()).unwrap();
        (dir, bundle)
    }

    #[test]
    fn the_spec_makes_the_vm_and_the_command() {
        let (_dir, bundle) = bundle_of(serde_json::json!({
            "ociVersion": "1.0.2",
            "hostname": "web-1",
            "root": {"path": "rootfs"},
            "process": {
                "args": ["node", "-e", "1"],
                "env": ["PATH=/usr/bin", "A=b"],
                "cwd": "/app",
                "user": {"uid": 1000, "gid": 1001, "additionalGids": [20]},
                "terminal": true,
                "consoleSize": {"height": 50, "width": 132},
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
                    {"type": "RLIMIT_CORE", "soft": 0, "hard": u64::MAX}
                ],
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_KILL"],
                    "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
                },
                "noNewPrivileges": true
            },
            "linux": {
                "resources": {
                    "memory": {"limit": 300 * 1024 * 1024 + 1},
                    "cpu": {"quota": 150000, "period": 100000}
                },
                "maskedPaths": ["/proc/kcore", "/sys/firmware"],
                "readonlyPaths": ["/proc/sys"]
            }
        }));
        assert_eq!(bundle.hostname().as_deref(), Some("web-1"));
        let kinds: Vec<(Vec<u8>, MountKind)> = bundle
            .protected_paths()
            .unwrap()
            .into_iter()
            .map(|m| (m.destination, m.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (b"/proc/kcore".to_vec(), MountKind::Mask),
                (b"/sys/firmware".to_vec(), MountKind::Mask),
                (b"/proc/sys".to_vec(), MountKind::ReadOnly)
            ]
        );
        assert_eq!(bundle.memory_mib(), Some(301));
        assert_eq!(bundle.cpus(), Some(2));
        assert_eq!(bundle.root(), bundle.dir.join("rootfs"));
        let command = command(bundle.process().unwrap(), GUEST_ROOT, &[], None).unwrap();
        assert_eq!(command.argv, [&b"node"[..], b"-e", b"1"]);
        assert_eq!(command.env, [&b"PATH=/usr/bin"[..], b"A=b"]);
        assert_eq!(command.cwd.as_deref(), Some(&b"/app"[..]));
        let container = command.container.unwrap();
        assert_eq!(container.root, GUEST_ROOT.as_bytes());
        assert_eq!(
            (container.uid, container.gid, container.groups),
            (1000, 1001, vec![20])
        );
        assert_eq!(
            container.rlimits,
            [
                Rlimit {
                    resource: libc::RLIMIT_NOFILE,
                    soft: 1024,
                    hard: 1024
                },
                Rlimit {
                    resource: libc::RLIMIT_CORE,
                    soft: 0,
                    hard: contract::rlimit::UNLIMITED
                }
            ]
        );
        assert_eq!(
            container.capabilities,
            Some(Capabilities {
                bounding: 1 | 1 << 5 | 1 << 10,
                effective: 1 << 5,
                permitted: 1 << 5 | 1 << 10,
                inheritable: 0,
                ambient: 0,
            })
        );
        assert!(container.no_new_privileges);
        assert_eq!(
            command.tty,
            Some(WinSize {
                rows: 50,
                cols: 132
            })
        );
    }

    #[test]
    fn a_pods_sandbox_is_sized_by_the_pods_limits() {
        let (_dir, bundle) = bundle_of(serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": {
                "io.kubernetes.cri.sandbox-memory": (768u64 << 20).to_string(),
                "io.kubernetes.cri.sandbox-cpu-quota": "250000",
                "io.kubernetes.cri.sandbox-cpu-period": "100000"
            },
            "linux": {"resources": {"memory": {"limit": 64 << 20}}}
        }));
        assert_eq!(bundle.memory_mib(), Some(768));
        assert_eq!(bundle.cpus(), Some(3));
        // Unset (containerd 1.6) or not a number: the container's own.
        let (_dir, bundle) = bundle_of(serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": {"io.kubernetes.cri.sandbox-memory": "lots"},
            "linux": {"resources": {"memory": {"limit": 300 << 20}}}
        }));
        assert_eq!(bundle.memory_mib(), Some(300));
        assert_eq!(bundle.cpus(), None);
    }

    #[test]
    fn what_a_vm_cannot_be_is_left_out_or_refused() {
        let (_dir, bundle) = bundle_of(serde_json::json!({
            "ociVersion": "1.0.2",
            "hostname": "not_a_hostname",
            "process": {"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"resources": {"memory": {"limit": 1024}}}
        }));
        assert_eq!(bundle.hostname(), None);
        assert_eq!(bundle.memory_mib(), Some(MIN_MEMORY_MIB));
        assert_eq!(bundle.cpus(), None);
        assert!(matches!(
            command(bundle.process().unwrap(), "/", &[], None),
            Err(Error::NoArgs)
        ));
        let (_dir, bundle) = bundle_of(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "relative", "user": {"uid": 0, "gid": 0}}
        }));
        let err = command(bundle.process().unwrap(), "/", &[], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the container's process: its cwd relative is not an absolute path"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::read(dir.path()).err().unwrap();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    /// The command of a process whose `rlimits` are `rlimits` (JSON).
    fn command_with_rlimits(rlimits: serde_json::Value) -> Result<Command, Error> {
        let (_dir, bundle) = bundle_of(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "rlimits": rlimits}
        }));
        command(bundle.process().unwrap(), "/", &[], None)
    }

    #[test]
    fn rlimits_linux_would_refuse_are_refused_before_anything_starts() {
        let none = command_with_rlimits(serde_json::json!([])).unwrap();
        assert_eq!(none.container.unwrap().rlimits, []);
        let err = command_with_rlimits(serde_json::json!([
            {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}
        ]))
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "the container's process: its rlimits: RLIMIT_NOFILE 2048/1024: the soft limit is \
             above the hard one"
        );
        let err = command_with_rlimits(serde_json::json!([
            {"type": "RLIMIT_NPROC", "soft": 1, "hard": 2},
            {"type": "RLIMIT_NPROC", "soft": 1, "hard": 1}
        ]))
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "the container's process: its rlimits give RLIMIT_NPROC more than once"
        );
        // A type the runtime spec does not have: the spec itself is refused, naming it.
        let dir = tempfile::tempdir().unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}
        });
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        let err = Bundle::read(dir.path()).err().unwrap();
        assert!(err.to_string().contains("RLIMIT_BOGUS"), "{err}");
    }

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let options: Vec<String> = ["ro", "rbind", "index=off", "lowerdir=/a:/b"]
            .iter()
            .map(|o| o.to_string())
            .collect();
        let (flags, data) = mount_options(&options);
        assert_eq!(
            flags,
            MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(data, "index=off,lowerdir=/a:/b");
    }
}
