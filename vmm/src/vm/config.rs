//! One VM as its user asked for it, typed and checked ([`VmConfig`]), and the one place that
//! turns it into what a backend boots ([`VmConfig::spec`]): the kernel command line, the guest
//! parameters (contract::params), the disk letters (contract::disks), the network addresses
//! (contract::net) and the ordered device list.

use std::path::PathBuf;

use contract::arch::Arch;
use contract::disks::{DiskPlan, ROOT_DEVICE};
use contract::env::EnvVar;
use contract::params::{
    AgentTransport, ConsoleMode, GuestParams, ParamError, Shell, Upper, Volume,
};

use super::{Device, Disk, NetSpec, Start, VmSpec};

/// Below this, Node.js and npm run out of memory in the guest.
pub const MIN_MEMORY_MIB: u32 = 128;
/// The guest kernel is built for at most this many CPUs (kernel/config.fragment).
pub const MAX_CPUS: u8 = 32;
/// Most virtio devices one VM has: QEMU's microvm machine has eight virtio-mmio transports.
pub const MAX_VIRTIO_DEVICES: usize = 8;
/// Most volumes one VM takes: every transport but the root image's, the RNG's and the agent
/// link's. Fewer fit beside a network interface or a user disk ([`ConfigError::TooManyDisks`]).
pub const MAX_VOLUMES: usize = MAX_VIRTIO_DEVICES - 3;
/// Longest command line the x86 boot protocol takes (COMMAND_LINE_SIZE).
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Room left on the command line for the backends' `virtio_mmio.device=` entries (about 40
/// bytes each) and QEMU's TCG clock parameters.
const BACKEND_CMDLINE_ROOM: usize = 256;

/// Parameters every NodeOS boot needs, on x86-64: serial console, no ACPI (MP tables bring up
/// the vCPUs), the read-only squashfs root on the first disk, our init, and a VM that ends on a
/// triple fault instead of rebooting.
const X86_64_KERNEL_PARAMS: &str = "console=ttyS0 reboot=t panic=-1 quiet acpi=off \
8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd tsc=reliable \
rootfstype=squashfs ro init=/sbin/init";
/// The same on arm64: the console is the UART the device tree's /chosen/stdout-path names
/// (QEMU virt's PL011, our VMM's 16550), a panic resets (which ends the VM, as on x86), the
/// CPU mitigations are off as the x86 kernel has them off (kernel/config-arm64.fragment).
const AARCH64_KERNEL_PARAMS: &str = "panic=-1 quiet mitigations=off \
rootfstype=squashfs ro init=/sbin/init";

fn kernel_params(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => X86_64_KERNEL_PARAMS,
        Arch::Aarch64 => AARCH64_KERNEL_PARAMS,
    }
}

/// How the host drives the guest's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// The host terminal is in raw mode, this size; the REPL edits lines itself.
    Tty { cols: u16, rows: u16 },
    /// Host stdin/stdout are pipes: no echo, no prompt, `^D` is end of input.
    Pipe,
}

/// A host file the guest mounts as an ext4 volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDisk {
    /// The ext4 image.
    pub image: PathBuf,
    /// Where the guest mounts it: absolute, not `/`, without `.` or `..`.
    pub mount_point: String,
    pub read_only: bool,
}

/// Everything about one VM that its user chose.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The guest's architecture: the host's unless told (another one runs under QEMU's TCG).
    pub arch: Arch,
    /// ELF vmlinux with a PVH entry (or a bzImage, KVM backend only); an arm64 `Image`.
    pub kernel: PathBuf,
    /// The read-only squashfs root image.
    pub rootfs: PathBuf,
    pub memory_mib: u32,
    pub cpus: u8,
    pub console: Console,
    /// What PID 1 runs: the REPL, nsh, or nothing (the agent runs the commands).
    pub shell: Shell,
    /// The user's persistent ext4 disk, the overlay's writable layer; tmpfs without one.
    pub user_disk: Option<PathBuf>,
    pub volumes: Vec<VolumeDisk>,
    /// The host end of the guest agent's link; no agent without one.
    pub agent_socket: Option<PathBuf>,
    /// The guest's network interface; none at all without one.
    pub net: Option<NetSpec>,
    /// Added to the environment of the guest's shell and of every command its agent runs. Never
    /// on the kernel command line (nor in the VmSpec): whoever runs the VM's agent link sends it
    /// in the agent's ready handshake (sandbox::agent), so a VM with an environment needs one.
    pub env: Vec<EnvVar>,
    /// The guest's hostname (a container's, say); one of its own without. Sent in the
    /// activation, like the environment.
    pub hostname: Option<String>,
    /// Kernel parameters the user adds, as given.
    pub cmdline_extra: String,
    /// Syscall filters on the VMM (off only for debugging).
    pub seccomp: bool,
    /// A cold boot, one that ends in a template snapshot, or a restore.
    pub start: Start,
    /// Whether our VMM measures its own memory as the VM ends (`VmSpec::measure_overhead`).
    pub measure_overhead: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} volumes given; a VM takes at most {MAX_VOLUMES}")]
    TooManyVolumes(usize),
    #[error("two volumes are mounted at {0}; give each its own mount point")]
    SameMountPoint(String),
    #[error("a guest parameter the guest would refuse: {0}")]
    Param(#[from] ParamError),
    #[error("--cmdline-extra contains a control character (byte {0:#04x})")]
    ControlChar(u8),
    #[error("the kernel command line would be {len} bytes; the limit is {MAX_CMDLINE_LEN}")]
    TooLong { len: usize },
    #[error("the guest's environment ({0}, ...) travels over the agent link, and this VM has none; give it an agent socket")]
    EnvWithoutAgent(String),
    #[error("making the empty disk of unused disk slots: {0}")]
    EmptyDisk(String),
    #[error(
        "{disks} disks (volumes, and the user's disk) given; a VM takes at most {slots}{with}"
    )]
    TooManyDisks {
        disks: usize,
        slots: usize,
        with: &'static str,
    },
}

impl VmConfig {
    /// A VM of `memory_mib` and `cpus` booting `kernel` and `rootfs`, with the defaults
    /// otherwise: piped console, the REPL, no disks, agent, network or extra parameters.
    pub fn new(kernel: PathBuf, rootfs: PathBuf, memory_mib: u32, cpus: u8) -> VmConfig {
        VmConfig {
            arch: Arch::host(),
            kernel,
            rootfs,
            memory_mib,
            cpus,
            console: Console::Pipe,
            shell: Shell::Repl,
            user_disk: None,
            volumes: Vec::new(),
            agent_socket: None,
            net: None,
            env: Vec::new(),
            hostname: None,
            cmdline_extra: String::new(),
            seccomp: true,
            start: Start::Boot,
            measure_overhead: false,
        }
    }

    /// What a backend boots, the guest agent's link (when there is one) of the kind `agent`
    /// (the backend's): the disks in the plan's order, the guest parameters naming them.
    ///
    /// A VM with an agent gets its parameters from the host's activation
    /// ([`VmConfig::guest_params`]), not from its command line, and has every disk slot it can
    /// have, filled (its user disk, then its volumes) or empty (an empty file), so that one
    /// template snapshot serves every VM of its kernel, image and shape.
    pub fn spec(&self, agent: AgentTransport) -> Result<VmSpec, ConfigError> {
        Self::check_volumes(&self.volumes)?;
        if let (Some(var), None) = (self.env.first(), &self.agent_socket) {
            return Err(ConfigError::EnvWithoutAgent(var.name().to_string()));
        }
        let params = self.guest_params();
        // Every parameter checked once, the way the guest will read it.
        params.validate()?;
        let disk = |path: &PathBuf, read_only| {
            Device::Block(Disk {
                path: path.clone(),
                read_only,
            })
        };
        let mut devices = vec![disk(&self.rootfs, true)];
        let slots = self.disk_slots()?;
        let volumes = self.volumes.iter().map(|v| (&v.image, v.read_only));
        let cmdline_params = match &self.agent_socket {
            None => {
                devices.extend(self.user_disk.iter().map(|d| disk(d, false)));
                devices.extend(volumes.map(|(image, read_only)| disk(image, read_only)));
                params
            }
            Some(socket) => {
                let folder = socket.parent().unwrap_or(std::path::Path::new("/"));
                let empty = crate::runtime::empty_disk(folder)
                    .map_err(|e| ConfigError::EmptyDisk(e.to_string()))?;
                // A template's slots are writable, so any VM may fill them either way.
                let saving = matches!(self.start, Start::Save { .. });
                let mut disks: Vec<(&PathBuf, bool)> =
                    self.user_disk.iter().map(|d| (d, false)).collect();
                disks.extend(volumes);
                disks.resize(slots, (&empty, !saving));
                devices.extend(disks.into_iter().map(|(path, ro)| disk(path, ro)));
                GuestParams {
                    agent: Some(agent),
                    // A template is warmed before it is saved; a cold boot goes straight on.
                    warm: saving,
                    ..GuestParams::default()
                }
            }
        };
        devices.push(Device::Rng);
        if let Some(net) = &self.net {
            devices.push(Device::Net(net.clone()));
        }
        if let Some(socket) = &self.agent_socket {
            devices.push(Device::AgentLink(socket.clone()));
        }
        Ok(VmSpec {
            arch: self.arch,
            kernel: self.kernel.clone(),
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            cmdline: self.cmdline(&cmdline_params)?,
            devices,
            seccomp: self.seccomp,
            start: self.start.clone(),
            measure_overhead: self.measure_overhead,
        })
    }

    /// How many disks besides the root image this VM has room for; refuses more given.
    fn disk_slots(&self) -> Result<usize, ConfigError> {
        let fixed = 2 + usize::from(self.net.is_some()) + usize::from(self.agent_socket.is_some());
        let slots = MAX_VIRTIO_DEVICES - fixed;
        let disks = self.volumes.len() + usize::from(self.user_disk.is_some());
        if disks > slots {
            return Err(ConfigError::TooManyDisks {
                disks,
                slots,
                with: match (self.net.is_some(), self.agent_socket.is_some()) {
                    (true, true) => " beside its network and agent link",
                    (true, false) => " beside its network",
                    (false, true) => " beside its agent link",
                    (false, false) => "",
                },
            });
        }
        Ok(slots)
    }

    /// The guest parameters of this VM (without its agent's transport): on the kernel command
    /// line of a VM without agent, in the host's activation of one with.
    pub fn guest_params(&self) -> GuestParams {
        let plan = DiskPlan::new(self.user_disk.is_some());
        let mut params = GuestParams::default();
        match self.console {
            Console::Tty { cols, rows } => {
                params.console = ConsoleMode::Tty;
                params.cols = Some(cols);
                params.rows = Some(rows);
            }
            Console::Pipe => params.console = ConsoleMode::Pipe,
        }
        params.shell = self.shell;
        if let (Some(_), Some(device)) = (&self.user_disk, plan.upper_device()) {
            params.upper = Upper::Disk(device);
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            params.volumes.push(Volume {
                device: plan.volume_device(i),
                mount_point: volume.mount_point.clone(),
                read_only: volume.read_only,
            });
        }
        if self.net.is_some() {
            params.net = Some(contract::net::USER_NET);
        }
        params
    }

    /// Checks a VM's volumes as [`VmConfig::spec`] does: few enough, each mount point once and
    /// one the guest takes; for callers that would rather fail before preparing them.
    pub fn check_volumes(volumes: &[VolumeDisk]) -> Result<(), ConfigError> {
        if volumes.len() > MAX_VOLUMES {
            return Err(ConfigError::TooManyVolumes(volumes.len()));
        }
        for (i, v) in volumes.iter().enumerate() {
            if volumes[..i].iter().any(|w| w.mount_point == v.mount_point) {
                return Err(ConfigError::SameMountPoint(v.mount_point.clone()));
            }
            Volume::new(ROOT_DEVICE, v.mount_point.clone(), v.read_only)?;
        }
        Ok(())
    }

    fn cmdline(&self, params: &GuestParams) -> Result<String, ConfigError> {
        if let Some(b) = self.cmdline_extra.bytes().find(|b| b.is_ascii_control()) {
            return Err(ConfigError::ControlChar(b));
        }
        let mut line = format!("{} root={ROOT_DEVICE}", kernel_params(self.arch));
        for words in [params.to_string().as_str(), self.cmdline_extra.trim()] {
            if !words.is_empty() {
                line.push(' ');
                line.push_str(words);
            }
        }
        let len = line.len() + BACKEND_CMDLINE_ROOM;
        if len > MAX_CMDLINE_LEN {
            return Err(ConfigError::TooLong { len });
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig::new("/k".into(), "/root.img".into(), 512, 1)
    }

    fn params(spec: &VmSpec) -> GuestParams {
        GuestParams::parse(&spec.cmdline).unwrap()
    }

    fn disks(spec: &VmSpec) -> Vec<(&str, bool)> {
        spec.disks()
            .map(|d| (d.path.to_str().unwrap(), d.read_only))
            .collect()
    }

    #[test]
    fn an_arm64_vm_boots_with_the_device_trees_console_and_the_same_guest_parameters() {
        let mut c = config();
        c.arch = Arch::Aarch64;
        let spec = c.spec(AgentTransport::Serial).unwrap();
        assert_eq!(spec.arch, Arch::Aarch64);
        assert!(spec.cmdline.starts_with("panic=-1 "), "{}", spec.cmdline);
        assert!(spec.cmdline.contains(" root=/dev/vda "));
        assert!(
            !spec.cmdline.split(' ').any(|p| p.starts_with("console=")),
            "{}",
            spec.cmdline
        );
        for x86 in ["ttyS0", "i8042", "8250", "acpi", "reboot=t", "tsc"] {
            assert!(!spec.cmdline.contains(x86), "{x86}: {}", spec.cmdline);
        }
        assert_eq!(
            params(&spec),
            params(&config().spec(AgentTransport::Serial).unwrap())
        );
    }

    #[test]
    fn a_plain_vm_has_the_root_image_and_rng_only() {
        let spec = config().spec(AgentTransport::Vsock).unwrap();
        assert_eq!(
            spec.devices,
            [
                Device::Block(Disk {
                    path: "/root.img".into(),
                    read_only: true
                }),
                Device::Rng
            ]
        );
        assert!(spec.cmdline.starts_with("console=ttyS0 "));
        assert!(spec.cmdline.contains(" root=/dev/vda "));
        let p = params(&spec);
        assert_eq!(p.console, ConsoleMode::Pipe);
        assert_eq!((p.upper, p.agent, p.net), (Upper::Tmpfs, None, None));
    }

    #[test]
    fn disks_get_the_plans_letters_after_the_user_disk() {
        let mut c = config();
        c.user_disk = Some("/users/ann.ext4".into());
        c.volumes = vec![
            VolumeDisk {
                image: "/v0.img".into(),
                mount_point: "/app".into(),
                read_only: false,
            },
            VolumeDisk {
                image: "/v1.img".into(),
                mount_point: "/my data/ü".into(),
                read_only: true,
            },
        ];
        let spec = c.spec(AgentTransport::Serial).unwrap();
        assert_eq!(
            disks(&spec),
            [
                ("/root.img", true),
                ("/users/ann.ext4", false),
                ("/v0.img", false),
                ("/v1.img", true)
            ]
        );
        let p = params(&spec);
        assert_eq!(p.upper, Upper::Disk("/dev/vdb".into()));
        let vols: Vec<_> = p
            .volumes
            .iter()
            .map(|v| (v.device.as_str(), v.mount_point.as_str(), v.read_only))
            .collect();
        assert_eq!(
            vols,
            [
                ("/dev/vdc", "/app", false),
                ("/dev/vdd", "/my data/ü", true)
            ]
        );
    }

    #[test]
    fn a_vm_with_an_agent_gets_its_parameters_by_activation_and_every_slot() {
        let mut c = config();
        c.console = Console::Tty {
            cols: 120,
            rows: 40,
        };
        c.shell = Shell::Nsh;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        c.agent_socket = Some(socket.clone());
        c.net = Some(NetSpec::USER);
        c.cmdline_extra = " loglevel=7 ".into();
        c.user_disk = Some("/users/ann.ext4".into());
        c.volumes = vec![VolumeDisk {
            image: "/v0.img".into(),
            mount_point: "/app".into(),
            read_only: true,
        }];
        let spec = c.spec(AgentTransport::Vsock).unwrap();
        assert_eq!(spec.agent_socket(), Some(socket.as_path()));
        assert_eq!(spec.net(), Some(&NetSpec::USER));
        assert!(spec.cmdline.ends_with(" loglevel=7"));
        // Only the agent's transport is on the command line: the rest is the activation's.
        let on_cmdline = params(&spec);
        assert_eq!(
            on_cmdline,
            GuestParams {
                agent: Some(AgentTransport::Vsock),
                ..GuestParams::default()
            }
        );
        let p = c.guest_params();
        assert_eq!(
            (p.console, p.cols, p.rows, p.shell),
            (ConsoleMode::Tty, Some(120), Some(40), Shell::Nsh)
        );
        assert_eq!(p.upper, Upper::Disk("/dev/vdb".into()));
        assert_eq!(p.volumes[0].device, "/dev/vdc");
        assert_eq!(p.net, Some(contract::net::USER_NET));
        // The root, then every slot: 8 devices less root, RNG, network and agent link.
        let empty = dir.path().join("empty-disk");
        let empty = empty.to_str().unwrap();
        assert_eq!(
            disks(&spec),
            [
                ("/root.img", true),
                ("/users/ann.ext4", false),
                ("/v0.img", true),
                (empty, true),
                (empty, true),
            ]
        );
        assert_eq!(spec.devices.len(), MAX_VIRTIO_DEVICES);
        // A template's empty slots are writable: any VM may fill them either way.
        c.start = Start::Save {
            to: "/t".into(),
            at: b'T',
            identity: "i".into(),
        };
        let template = c.spec(AgentTransport::Vsock).unwrap();
        assert_eq!(disks(&template)[3], (empty, false));
        assert!(params(&template).warm, "a template is warmed");
        assert!(!on_cmdline.warm, "a cold boot is not");
    }

    #[test]
    fn disks_beyond_the_slots_are_refused() {
        let volume = |i| VolumeDisk {
            image: "/v.img".into(),
            mount_point: format!("/v{i}"),
            read_only: true,
        };
        let mut c = config();
        let dir = tempfile::tempdir().unwrap();
        c.agent_socket = Some(dir.path().join("agent.sock"));
        c.volumes = (0..MAX_VOLUMES).map(volume).collect();
        assert!(c.spec(AgentTransport::Serial).is_ok());
        c.net = Some(NetSpec::USER);
        assert_eq!(
            c.spec(AgentTransport::Serial).unwrap_err().to_string(),
            "5 disks (volumes, and the user's disk) given; a VM takes at most 4 beside its \
             network and agent link"
        );
    }

    #[test]
    fn the_environment_stays_off_the_command_line() {
        let mut c = config();
        c.env =
            vec![EnvVar::new("npm_config_registry", "http://me:secret@10.0.2.2:4873/").unwrap()];
        // It travels over the agent link: without one it could not reach the guest.
        assert_eq!(
            c.spec(AgentTransport::Vsock).unwrap_err(),
            ConfigError::EnvWithoutAgent("npm_config_registry".into())
        );
        let dir = tempfile::tempdir().unwrap();
        c.agent_socket = Some(dir.path().join("agent.sock"));
        let spec = c.spec(AgentTransport::Serial).unwrap();
        let everything = serde_json::to_string(&spec).unwrap();
        assert!(!everything.contains("secret"), "{everything}");
        assert!(!everything.contains("npm_config_registry"), "{everything}");
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let volume = |mount_point: &str| VolumeDisk {
            image: "/v.img".into(),
            mount_point: mount_point.into(),
            read_only: true,
        };
        let mut c = config();
        c.volumes = vec![volume("/a"), volume("/a")];
        assert_eq!(
            c.spec(AgentTransport::Vsock).unwrap_err(),
            ConfigError::SameMountPoint("/a".into())
        );
        c.volumes = (0..=MAX_VOLUMES)
            .map(|i| volume(&format!("/v{i}")))
            .collect();
        assert_eq!(
            c.spec(AgentTransport::Vsock).unwrap_err(),
            ConfigError::TooManyVolumes(MAX_VOLUMES + 1)
        );
        c.volumes = vec![volume("/a/../etc")];
        assert!(matches!(
            c.spec(AgentTransport::Vsock),
            Err(ConfigError::Param(_))
        ));
        let mut c = config();
        c.cmdline_extra = "a\nb".into();
        assert_eq!(
            c.spec(AgentTransport::Vsock).unwrap_err(),
            ConfigError::ControlChar(b'\n')
        );
        c.cmdline_extra = "x".repeat(MAX_CMDLINE_LEN);
        assert!(matches!(
            c.spec(AgentTransport::Vsock),
            Err(ConfigError::TooLong { .. })
        ));
    }
}
