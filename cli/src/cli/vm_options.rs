//! The options every command that boots a VM shares (backend, memory, vCPUs, images,
//! network, user, seccomp, jail), parsed and typed by clap, and the [`VmConfig`] they make.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use contract::arch::Arch;
use sandbox::artifacts::{check_kernel, check_rootfs, Artifact, Store};
use sandbox::host_ca::{self, GuestCa};
use sandbox::templates::Templates;
use sandbox::users::{DiskTools, UserDisk, Users};
use sandbox::vm_config;
use vmm::backend::{detect, qemu, Backend};
use vmm::devices::virtio::net::passt;
use vmm::jail::{IdRange, Jail};
use vmm::vm::{HostLoopback, NetSpec, Protocol, PublishedPort, VmConfig};

/// Which machine monitor runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum BackendChoice {
    /// Our VMM where the host's KVM can run Linux guests, QEMU otherwise.
    Auto,
    /// nodeos-vm's own VMM on /dev/kvm.
    Kvm,
    /// QEMU's microvm machine (KVM when usable, TCG otherwise).
    Qemu,
}

/// A guest architecture, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ArchChoice {
    /// x86-64.
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    /// arm64.
    #[value(name = "aarch64", alias = "arm64")]
    Aarch64,
}

impl ArchChoice {
    pub fn host() -> ArchChoice {
        ArchChoice::from(Arch::host())
    }
}

impl From<ArchChoice> for Arch {
    fn from(choice: ArchChoice) -> Arch {
        match choice {
            ArchChoice::X86_64 => Arch::X86_64,
            ArchChoice::Aarch64 => Arch::Aarch64,
        }
    }
}

impl From<Arch> for ArchChoice {
    fn from(arch: Arch) -> ArchChoice {
        match arch {
            Arch::X86_64 => ArchChoice::X86_64,
            Arch::Aarch64 => ArchChoice::Aarch64,
        }
    }
}

/// The VM options of every command that boots one.
#[derive(Debug, clap::Args, Serialize, Deserialize)]
pub struct VmArgs {
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// The guest's architecture. Another than this host's runs under QEMU's emulation (TCG);
    /// its kernel, image and template snapshots are built once, like this host's.
    #[arg(long, value_enum, default_value_t = ArchChoice::host())]
    pub arch: ArchChoice,
    /// Guest memory: 512M, 2G, or MiB.
    #[arg(long, value_name = "SIZE", default_value = vm_config::DEFAULT_MEMORY, value_parser = vm_config::memory_mib)]
    pub memory: u32,
    /// Number of vCPUs.
    #[arg(long, default_value = "1", value_parser = vm_config::cpus)]
    pub cpus: u8,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Extra kernel command-line parameters.
    #[arg(long, value_name = "PARAMS", default_value = "")]
    pub cmdline_extra: String,
    /// Give the guest a network interface: `user` (NAT to the host's network, but not to this
    /// host's loopback), `user,host-loopback` (and this host's loopback at 10.0.2.2: every
    /// service on 127.0.0.1), `user,host-loopback=PORT` (that TCP port of it only; repeatable),
    /// or `tap:NAME`. Without it the guest has no network at all.
    #[arg(long, value_name = "user[,host-loopback[=PORT]]|tap:NAME", num_args = 0..=1, default_missing_value = "user", value_parser = parse_net)]
    pub net: Option<NetSpec>,
    /// Publish a TCP port of the guest on this host, as docker's -p: a connection to
    /// HOST_IP:HOST_PORT reaches a server listening on GUEST_PORT in the guest. HOST_IP is
    /// 127.0.0.1 unless given (0.0.0.0: every address of this host). TCP only. Repeatable.
    /// Without --net it turns on --net user (the guest then reaches the network too, as with
    /// --net); not with --net tap. A host port in use is refused before the VM boots.
    #[arg(short = 'p', long = "publish", value_name = "[HOST_IP:]HOST_PORT:GUEST_PORT", value_parser = parse_publish)]
    pub publish: Vec<PublishedPort>,
    /// Trust the CA certificates of this PEM file in the guest (a TLS-intercepting proxy's):
    /// Node and npm read them from NODE_EXTRA_CA_CERTS, a read-only file. Repeatable. With
    /// --net, the CA file of this host's npm config (cafile) and this host's
    /// NODE_EXTRA_CA_CERTS go too.
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_files: Vec<PathBuf>,
    /// With --net, leave this host's npm cafile and NODE_EXTRA_CA_CERTS out of the guest.
    #[arg(long)]
    pub no_host_ca: bool,
    #[command(flatten)]
    pub seccomp: SeccompArgs,
    #[command(flatten)]
    pub jail: JailArgs,
    /// Boot as user NAME: their own persistent writable layer (created on first use; what
    /// they write in `/` is there next time; other users never see it). `users ls` lists them.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Size of the user's disk when it is created (default 2G, sparse), or a larger size to
    /// grow it to.
    #[arg(long, value_name = "SIZE", requires = "user", value_parser = vm_config::disk_size_bytes)]
    pub disk_size: Option<u64>,
    /// Boot the kernel cold instead of restoring a snapshot of a booted VM (made once per
    /// image and VM size, in the artifact cache).
    #[arg(long)]
    pub no_snapshot: bool,
}

impl VmArgs {
    /// Makes `config` a restore of its template snapshot on `backend` (made first when
    /// missing), unless `--no-snapshot`.
    pub fn restore_or_boot(&self, backend: &Backend, config: &mut VmConfig) -> anyhow::Result<()> {
        if !self.no_snapshot {
            Templates::in_cache(Store::from_env()?.cache_dir()).restore(backend, config);
        }
        Ok(())
    }

    /// The `--user`'s disk, locked for this VM (created on first use; grown, by e2fsprogs in
    /// the VMM's jail, when `--disk-size` asks for more).
    pub fn user_disk(&self) -> anyhow::Result<Option<UserDisk>> {
        let Some(name) = &self.user else {
            return Ok(None);
        };
        let tools = DiskTools::new(self.jail.jail())?;
        Ok(Some(Users::from_env()?.acquire(
            name,
            self.disk_size,
            &tools,
        )?))
    }

    /// The VM these options describe, and what it holds on the host while it runs: what every
    /// command that boots a VM starts from (it sets the console, the shell, volumes and the
    /// agent). Builds the kernel and image first when they are missing.
    pub fn config(&self) -> anyhow::Result<(VmConfig, Held)> {
        // Before anything is built: a bad CA file or a busy port costs nothing.
        let net = self.net()?;
        let carry_host_ca = net.is_some() && !self.no_host_ca;
        let ca = host_ca::bundle(&host_ca::ca_files(&self.ca_files, carry_host_ca))?;
        let arch = Arch::from(self.arch);
        let (kernel, rootfs) = images(&self.images, arch)?;
        let user = self.user_disk()?;
        let mut config = VmConfig::new(kernel, rootfs, self.memory, self.cpus);
        config.arch = arch;
        let ca = ca.map(|bundle| GuestCa::pack(&bundle)).transpose()?;
        if let Some(ca) = &ca {
            config.volumes.push(ca.disk.clone());
            config.env.push(ca.env.clone());
        }
        config.user_disk = user.as_ref().map(|u| u.path().to_path_buf());
        config.net = net;
        if let Some(registry) = sandbox::npm_registry::guest_registry(config.net.as_ref()) {
            if let (Some(port), Some(NetSpec::User { host_loopback, .. })) =
                (registry.loopback_port, &mut config.net)
            {
                open_registry_port(host_loopback, port);
            }
            config.env.push(registry.env);
        }
        config.cmdline_extra = self.cmdline_extra.clone();
        config.seccomp = !self.seccomp.no_seccomp;
        Ok((
            config,
            Held {
                _user: user,
                _ca: ca,
            },
        ))
    }

    /// The guest's network: `--net`'s, with the `--publish`ed ports (`--net user` when only
    /// those are given), their host ports checked free.
    fn net(&self) -> anyhow::Result<Option<NetSpec>> {
        if self.publish.is_empty() {
            return Ok(self.net.clone());
        }
        let mut net = self.net.clone().unwrap_or(NetSpec::USER);
        match &mut net {
            NetSpec::User { published, .. } => published.clone_from(&self.publish),
            NetSpec::Tap(name) => bail!(
                "--publish forwards ports through --net user; with --net tap:{name}, forward them \
                 to the guest's address on this host yourself"
            ),
        }
        passt::check_host_ports(&self.publish)?;
        Ok(Some(net))
    }
}

/// What a VM of [`VmArgs::config`] holds on the host until it is dropped: the `--user`'s disk,
/// locked, and the guest's CA certificates' volume.
#[derive(Debug)]
pub struct Held {
    _user: Option<UserDisk>,
    _ca: Option<GuestCa>,
}

/// Opens the port of the host's npm registry, which is on the host's loopback, to the guest
/// (that port only, unless more is open already), and says so: the user configured that
/// registry for npm, and npm in the guest uses it.
fn open_registry_port(host_loopback: &mut HostLoopback, port: u16) {
    let before = host_loopback.clone();
    host_loopback.open_tcp_port(port);
    if *host_loopback == before {
        return;
    }
    let note = format!(
        "nodeos-vm: note: your npm registry is on this host's loopback: the guest reaches it at \
         {}:{port}, and no other port of the loopback (--net user,host-loopback opens them all)",
        contract::net::GATEWAY
    );
    // On a terminal; a pipe (run's stderr is the command's) gets only what it asked for.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("{note}");
    } else {
        tracing::info!("{note}");
    }
}

/// Turns the VMM's syscall filters off, for debugging.
#[derive(Debug, clap::Args, Serialize, Deserialize)]
pub struct SeccompArgs {
    /// Run without seccomp filters (our VMM's threads; QEMU's -sandbox): debugging only.
    #[arg(long)]
    pub no_seccomp: bool,
}

/// The VMM's jail (vmm::jail; docs/security.md), on by default for every user.
#[derive(Debug, clap::Args, Serialize, Deserialize)]
pub struct JailArgs {
    /// Run the VMM (ours or QEMU) without any confinement but its syscall filter: in the
    /// host's namespaces, with the host's files, as the user nodeos-vm runs as (root too):
    /// debugging only.
    #[arg(long)]
    pub no_jail: bool,
    /// As root, each jailed VMM (and disk tool) runs as a uid and gid of its own, the same
    /// number: the first that no other running jail holds among the 65536 from ID up that the
    /// host neither names (/etc/passwd, /etc/group) nor delegates (/etc/subuid, /etc/subgid).
    #[arg(long, value_name = "ID", default_value_t = IdRange::default())]
    pub jail_id_base: IdRange,
}

impl JailArgs {
    /// The jail, unless `--no-jail` is given: as root, one whose ids come from
    /// `--jail-id-base`; as any other user, that user's own in a user namespace.
    pub fn jail(&self) -> Option<Jail> {
        (!self.no_jail).then(|| Jail::for_this_process(self.jail_id_base))
    }

    /// Says loudly on stderr when the VMM will not be confined.
    pub fn warn_if_off(&self) {
        if self.no_jail {
            eprintln!("{NO_JAIL_WARNING}");
        }
    }
}

/// What stderr says when `--no-jail` is given.
pub const NO_JAIL_WARNING: &str =
    "nodeos-vm: WARNING: --no-jail: the VMM runs WITHOUT its jail (host namespaces, host files, your user); use it for debugging only";

/// What stderr says when `--no-seccomp` is given.
pub const NO_SECCOMP_WARNING: &str =
    "nodeos-vm: WARNING: --no-seccomp: the VMM runs WITHOUT syscall filters; use it for debugging only";

impl SeccompArgs {
    /// Says loudly on stderr when the VMM will not filter its syscalls.
    pub fn warn_if_off(&self) {
        if self.no_seccomp {
            eprintln!("{NO_SECCOMP_WARNING}");
        }
    }
}

/// `user[,host-loopback[=PORT]]...` or `tap:NAME`.
pub fn parse_net(text: &str) -> Result<NetSpec, String> {
    if let Some(name) = text.strip_prefix("tap:") {
        let valid = !name.is_empty()
            && name.len() < libc::IFNAMSIZ
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if valid {
            return Ok(NetSpec::Tap(name.to_string()));
        }
    }
    let mut options = text.split(',');
    if options.next() != Some("user") {
        return Err(format!(
            "{text:?}: write --net (or --net user) for NAT, --net user,host-loopback to reach \
             this host's loopback too, or --net tap:NAME for a host TAP interface"
        ));
    }
    let mut host_loopback = HostLoopback::Closed;
    for option in options {
        match option.split_once('=') {
            None if option == "host-loopback" => host_loopback = HostLoopback::All,
            Some(("host-loopback", port)) => match port.parse::<u16>() {
                Ok(port) if port > 0 => host_loopback.open_tcp_port(port),
                _ => {
                    return Err(format!(
                        "--net {text}: {port:?} is not a TCP port (1-65535)"
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "--net {text}: unknown option {option:?}; user takes host-loopback (every \
                     port of this host's loopback) or host-loopback=PORT (that TCP port)"
                ))
            }
        }
    }
    Ok(NetSpec::User {
        host_loopback,
        published: Vec::new(),
    })
}

/// The host address `--publish` listens on when none is given: this host's loopback, as
/// nothing else of this host should reach the guest unless asked for.
const PUBLISH_ADDRESS: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]`. (clap names the value and the option before
/// the message.)
pub fn parse_publish(text: &str) -> Result<PublishedPort, String> {
    const USAGE: &str =
        "write [HOST_IP:]HOST_PORT:GUEST_PORT[/udp], e.g. 8080:80, 0.0.0.0:8080:80 or 5353:53/udp";
    let (spec, protocol) = match text.rsplit_once('/') {
        None => (text, Protocol::Tcp),
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((_, "sctp")) => return Err("SCTP ports are not published (TCP and UDP are)".into()),
        Some(_) => return Err(USAGE.into()),
    };
    let port = |what: &str, port: &str| match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{what} {port:?} is not a port (1-65535); {USAGE}")),
    };
    let (ip, host_port, guest_port) = match spec.split(':').collect::<Vec<_>>()[..] {
        [host_port, guest_port] => (PUBLISH_ADDRESS, host_port, guest_port),
        [ip, host_port, guest_port] => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => (ip, host_port, guest_port),
            Err(_) => {
                return Err(format!(
                    "{ip:?} is not an IPv4 address (the guest's network is IPv4 only); {USAGE}"
                ))
            }
        },
        _ => return Err(USAGE.into()),
    };
    Ok(PublishedPort {
        host: SocketAddrV4::new(ip, port("host port", host_port)?),
        guest_port: port("guest port", guest_port)?,
        protocol,
    })
}

/// Kernel and image options shared by the commands that boot a VM.
#[derive(Debug, clap::Args, Serialize, Deserialize)]
pub struct ImageArgs {
    /// Boot this kernel (ELF vmlinux or bzImage; for --arch aarch64 an Image) instead of the
    /// cached build.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Boot this squashfs root image instead of the cached build.
    #[arg(long, value_name = "PATH")]
    pub rootfs: Option<PathBuf>,
}

/// The backend for `choice` on this host, our VMM jailed as `jail` says; says so on stderr
/// when `auto` falls back to TCG, unless `quiet` (commands whose stderr is the guest command's:
/// `run` into a pipe).
pub fn choose_backend(
    choice: BackendChoice,
    arch: ArchChoice,
    jail: &JailArgs,
    quiet: bool,
) -> anyhow::Result<Backend> {
    let arch = Arch::from(arch);
    if arch != Arch::host() {
        // KVM runs the host's own instruction set only: another one is emulated.
        if choice == BackendChoice::Kvm {
            bail!(
                "--backend kvm runs {} guests on this host; an {arch} guest runs under QEMU's \
                 emulation: leave --backend out, or give --backend qemu",
                Arch::host()
            );
        }
        return Ok(sandbox::vmm_program::backend(
            Some(qemu::Accel::Tcg),
            jail.jail(),
        )?);
    }
    let kvm = detect::probe();
    let accel = match (choice, kvm) {
        (BackendChoice::Kvm, detect::KvmSupport::Unusable(why)) => {
            bail!("--backend kvm: KVM cannot run Linux guests on this host: {why}; use --backend qemu")
        }
        (BackendChoice::Kvm | BackendChoice::Auto, detect::KvmSupport::Usable) => None,
        (BackendChoice::Qemu, detect::KvmSupport::Usable) => Some(qemu::Accel::Kvm),
        (_, detect::KvmSupport::Unusable(why)) => {
            if quiet {
                tracing::info!("{why}; using QEMU with TCG (slower)");
            } else {
                eprintln!("nodeos-vm: {why}; using QEMU with TCG (slower)");
            }
            Some(qemu::Accel::Tcg)
        }
    };
    // Our VMM's program: the VMM itself, or the helper that jails QEMU.
    Ok(sandbox::vmm_program::backend(accel, jail.jail())?)
}

/// The kernel and root image to boot, for `arch`: the user's, checked, or the cached builds
/// (built now when missing).
pub fn images(args: &ImageArgs, arch: Arch) -> anyhow::Result<(PathBuf, PathBuf)> {
    let store = || {
        Store::from_env()
            .map(|store| store.for_arch(arch))
            .context("finding the kernel and root image")
    };
    let kernel = match &args.kernel {
        Some(path) => path.clone(),
        None => store()?.ensure(Artifact::Kernel, false)?,
    };
    let rootfs = match &args.rootfs {
        Some(path) => path.clone(),
        None => store()?.ensure(Artifact::Rootfs, false)?,
    };
    check_kernel(&kernel, arch)?;
    check_rootfs(&rootfs)?;
    Ok((kernel, rootfs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        assert_eq!(parse_net("user"), Ok(NetSpec::USER));
        assert_eq!(
            parse_net("user,host-loopback"),
            Ok(NetSpec::User {
                host_loopback: HostLoopback::All,
                published: Vec::new(),
            })
        );
        assert_eq!(
            parse_net("user,host-loopback=4873,host-loopback=8080,host-loopback=4873"),
            Ok(NetSpec::User {
                host_loopback: HostLoopback::TcpPorts(vec![4873, 8080]),
                published: Vec::new(),
            })
        );
        // Every port includes any one.
        assert_eq!(
            parse_net("user,host-loopback=4873,host-loopback"),
            parse_net("user,host-loopback=80,host-loopback")
        );
        assert_eq!(parse_net("tap:tap0"), Ok(NetSpec::Tap("tap0".into())));
        for bad in [
            "",
            "tap:",
            "tap:a,b",
            "tap:waytoolonginterfacename",
            "slirp",
            "user,",
            "user,host-loopback=",
            "user,host-loopback=0",
            "user,host-loopback=65536",
            "user,host-loopback=http",
            "user,loopback",
            "users",
        ] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn published_ports() {
        let published = |ip: [u8; 4], host_port, guest_port| PublishedPort {
            host: SocketAddrV4::new(ip.into(), host_port),
            guest_port,
            protocol: Protocol::Tcp,
        };
        assert_eq!(
            parse_publish("8080:80"),
            Ok(published([127, 0, 0, 1], 8080, 80))
        );
        assert_eq!(
            parse_publish("0.0.0.0:3000:3000/tcp"),
            Ok(published([0, 0, 0, 0], 3000, 3000))
        );
        assert_eq!(
            parse_publish("192.168.1.5:65535:1"),
            Ok(published([192, 168, 1, 5], 65535, 1))
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80").unwrap().to_string(),
            "127.0.0.1:8080:80"
        );
        for bad in [
            "",
            "80",
            "70000:80",
            "80:70000",
            "0:80",
            "80:0",
            "a:b",
            "8080:",
            ":80",
            "localhost:8080:80",
            "::1:8080:80",
            "[::1]:8080:80",
            "1.2.3.4:5:6:7",
            "8080:80/tcp/tcp",
            "8080:80/http",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        let udp = parse_publish("5353:53/udp").unwrap();
        assert_eq!(udp.protocol, Protocol::Udp);
        assert_eq!(udp.to_string(), "127.0.0.1:5353:53/udp");
        let sctp = parse_publish("5353:53/sctp").unwrap_err();
        assert!(sctp.contains("TCP and UDP are"), "{sctp}");
    }
}
