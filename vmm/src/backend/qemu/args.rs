//! QEMU's command line for a [`VmSpec`], and the descriptors it is handed: QEMU opens no disk,
//! socket or network of its own (so that a jailed QEMU needs none of them in reach): the
//! boot timer and the agent link are socket pairs (`-chardev socket,fd=N`), the network is
//! passt's socket or the TAP descriptor (`-netdev socket,fd=N`, `-netdev tap,fd=N`), each disk
//! a set of descriptors of its own (`-add-fd`, `file=/dev/fdset/N`): read-only, and for a
//! writable disk read-write too (QEMU opens a writable image read-only until its device
//! writes). Only the kernel is a path.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use contract::arch::Arch;
use contract::ports::{BOOT_TIMER_PORT, EXIT_PORT, MARKS_PORT_NAME};
use contract::SERIAL_PORT_NAME;

use super::Accel;
use crate::vm::{Device, NetSpec, VmSpec};

/// The descriptors QEMU is handed, numbered from the first it is given, in the order added.
pub struct Handed {
    first: RawFd,
    /// Each descriptor as we hold it (the raw ones stay ours: passt's socket, the TAP), and
    /// the number QEMU knows it by.
    moves: Vec<(RawFd, RawFd)>,
    /// Those that are QEMU's only: closed here once it started.
    owned: Vec<OwnedFd>,
}

impl Handed {
    pub fn new(first: RawFd) -> Handed {
        Handed {
            first,
            moves: Vec::new(),
            owned: Vec::new(),
        }
    }

    /// Hands `fd` over; returns its number in QEMU.
    pub fn push(&mut self, fd: OwnedFd) -> RawFd {
        let number = self.push_raw(fd.as_raw_fd());
        self.owned.push(fd);
        number
    }

    /// Hands over a descriptor that stays open here too.
    pub fn push_raw(&mut self, fd: RawFd) -> RawFd {
        let number = self.end();
        self.moves.push((fd, number));
        number
    }

    /// The first number after QEMU's descriptors.
    pub fn end(&self) -> RawFd {
        self.first + self.moves.len() as RawFd
    }

    /// (ours, QEMU's) for each.
    pub fn moves(&self) -> &[(RawFd, RawFd)] {
        &self.moves
    }
}

/// The numbers QEMU knows its descriptors by.
pub struct Fds {
    pub timer: RawFd,
    pub agent: Option<RawFd>,
    pub net: Option<RawFd>,
    /// The set of each disk, in the spec's order.
    pub disks: Vec<Vec<RawFd>>,
    /// QEMU's end of its monitor (QMP), for a snapshot's save or restore.
    pub qmp: Option<RawFd>,
    /// The snapshot QEMU restores, at its stream.
    pub incoming: Option<RawFd>,
    /// QEMU's end of the monitor its owner pauses it through (qemu::pause).
    pub pause_monitor: Option<RawFd>,
}

pub fn args(spec: &VmSpec, accel: Accel, kernel: &Path, fds: &Fds) -> Vec<OsString> {
    let accel_name = match accel {
        Accel::Kvm => "kvm",
        // A translation cache of 256 MiB at most (QEMU's default is 1 GiB), within the
        // jail's cgroup allowance (jail::cgroup::QEMU_MEMORY_ALLOWANCE_MIB).
        Accel::Tcg => "tcg,tb-size=256",
    };
    let cpu = match (accel, spec.arch) {
        (Accel::Kvm, _) => "host",
        (Accel::Tcg, Arch::X86_64) => "max",
        // Pointer authentication with QEMU's own cheap algorithm, not the architected one
        // (which TCG computes at a cost on every signed return).
        (Accel::Tcg, Arch::Aarch64) => "max,pauth-impdef=on",
    };
    // Guest memory stays out of any core dump.
    let machine = match spec.arch {
        Arch::X86_64 => "microvm,acpi=off,x-option-roms=off,dump-guest-core=off",
        // The GIC the host has under KVM; under TCG v3, which takes more than 8 vCPUs.
        Arch::Aarch64 => "virt,gic-version=max,dump-guest-core=off",
    };
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["-M", machine, "-accel", accel_name, "-cpu", cpu]);
    push(&[
        "-m",
        &format!("{}M", spec.memory_mib),
        "-smp",
        &spec.cpus.to_string(),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&[
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]);
    push(&["-chardev", &format!("socket,id=timer,fd={}", fds.timer)]);
    match spec.arch {
        Arch::X86_64 => {
            push(&[
                "-device",
                &format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=1"),
            ]);
            push(&[
                "-device",
                &format!("isa-debugcon,iobase={BOOT_TIMER_PORT:#x},chardev=timer"),
            ]);
        }
        // No I/O ports: the marks port, on the virtio-serial device the agent's port (when
        // there is one) shares.
        Arch::Aarch64 => push(&[
            "-device",
            &format!("{SERIAL_DEVICE_WITH_MARKS},id=serial0"),
            "-device",
            &format!("virtserialport,bus=serial0.0,chardev=timer,name={MARKS_PORT_NAME}"),
        ]),
    }
    a.push("-kernel".into());
    a.push(kernel.as_os_str().to_owned());
    let mut cmdline = spec.cmdline.clone();
    if accel == Accel::Tcg {
        // The TSC parameters are x86's.
        if spec.arch == Arch::X86_64 {
            cmdline = format!("{cmdline} {}", super::tcg_clock_params(&super::cpuinfo()));
        }
        cmdline = format!("{cmdline} {}", super::TCG_FIXED_MAPS);
    }
    // Each device with its disk's descriptors, in the spec's order.
    let mut sets = fds.disks.iter();
    let mut devices: Vec<_> = spec
        .devices
        .iter()
        .enumerate()
        .map(|(index, device)| {
            let set = matches!(device, Device::Block(_))
                .then(|| sets.next().expect("descriptors for each disk"));
            (index, device, set)
        })
        .collect();
    // The guest must find the devices in the spec's order (block devices are /dev/vda,
    // /dev/vdb, ... in this order). microvm places virtio-mmio devices in the order they are
    // created; virt fills its transports from the highest address down, and Linux names them
    // from the lowest up: there they are created in reverse.
    if spec.arch == Arch::Aarch64 {
        devices.reverse();
    }
    // QEMU's image locks are off: the slots a VM leaves empty share one empty file, and the
    // disks VMs could share are locked by nodeos-vm (a user's disk) or only read (the image).
    for (index, device, set) in devices {
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        match device {
            Device::Block(disk) => {
                let set = set.expect("descriptors for each disk");
                for fd in set {
                    push(&["-add-fd", &format!("fd={fd},set={index}")]);
                }
                let readonly = if disk.read_only { "on" } else { "off" };
                push(&[
                    "-drive",
                    &format!(
                        "id=disk{index},format=raw,if=none,cache=writeback,readonly={readonly},\
                         file=/dev/fdset/{index},file.locking=off"
                    ),
                    "-device",
                    &format!("virtio-blk-device,drive=disk{index}"),
                ]);
            }
            Device::Rng => push(&[
                "-object",
                "rng-builtin,id=rng",
                "-device",
                "virtio-rng-device,rng=rng",
            ]),
            Device::Net(net) => {
                let fd = fds.net.expect("a descriptor for the network");
                let kind = match net {
                    // passt, on the contract's network (contract::net), as on our VMM.
                    NetSpec::User { .. } => "socket",
                    NetSpec::Tap(_) => "tap",
                };
                push(&[
                    "-netdev",
                    &format!("{kind},id=net0,fd={fd}"),
                    "-device",
                    "virtio-net-device,netdev=net0",
                ]);
            }
            Device::AgentLink(_) => {
                let fd = fds.agent.expect("a descriptor for the agent link");
                if spec.arch == Arch::X86_64 {
                    push(&["-device", SERIAL_DEVICE]);
                }
                push(&[
                    "-chardev",
                    &format!("socket,id=agent,fd={fd}"),
                    "-device",
                    &format!("virtserialport,chardev=agent,name={SERIAL_PORT_NAME}"),
                ]);
            }
        }
    }
    a.push("-append".into());
    a.push(cmdline.into());
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    if let Some(fd) = fds.qmp {
        push(&[
            "-chardev",
            &format!("socket,id=qmp,fd={fd}"),
            "-mon",
            "chardev=qmp,mode=control",
        ]);
    }
    if let Some(fd) = fds.pause_monitor {
        push(&[
            "-chardev",
            &format!("socket,id=pause,fd={fd}"),
            "-mon",
            "chardev=pause,mode=control",
        ]);
    }
    if let Some(fd) = fds.incoming {
        push(&["-incoming", &format!("fd:{fd}")]);
    }
    if spec.seccomp {
        a.extend(["-sandbox", SANDBOX].map(OsString::from));
    }
    a
}

/// The virtio-serial device of the agent's port (port 0 is kept for a console).
const SERIAL_DEVICE: &str = "virtio-serial-device,max_ports=2";
/// On arm64, of the marks port and the agent's.
const SERIAL_DEVICE_WITH_MARKS: &str = "virtio-serial-device,max_ports=3";

/// QEMU's own seccomp filter: no obsolete syscalls, no privilege changes, no new processes,
/// no scheduling or resource changes.
const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Disk;

    #[test]
    fn qemu_gets_descriptors_not_paths() {
        let spec = VmSpec {
            arch: contract::arch::Arch::X86_64,
            kernel: "/host/vmlinux".into(),
            devices: vec![
                Device::Block(Disk {
                    path: "/host/rootfs.img".into(),
                    read_only: true,
                }),
                Device::Block(Disk {
                    path: "/host/user.img".into(),
                    read_only: false,
                }),
                Device::Rng,
                Device::Net(NetSpec::USER),
                Device::AgentLink("/host/agent.sock".into()),
            ],
            memory_mib: 256,
            cpus: 2,
            cmdline: "console=ttyS0".into(),
            seccomp: true,
            start: Default::default(),
            measure_overhead: false,
        };
        let fds = Fds {
            timer: 5,
            agent: Some(6),
            net: Some(7),
            disks: vec![vec![8], vec![9, 10]],
            qmp: Some(11),
            incoming: Some(12),
            pause_monitor: Some(13),
        };
        let args: Vec<String> = args(&spec, Accel::Kvm, Path::new("/kernel"), &fds)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let line = args.join(" ");
        for expected in [
            "-chardev socket,id=timer,fd=5",
            "-kernel /kernel",
            "-add-fd fd=8,set=0 -drive id=disk0,format=raw,if=none,cache=writeback,readonly=on,file=/dev/fdset/0,file.locking=off",
            "-add-fd fd=9,set=1 -add-fd fd=10,set=1 -drive id=disk1,format=raw,if=none,cache=writeback,readonly=off,file=/dev/fdset/1,file.locking=off",
            "-object rng-builtin,id=rng",
            "-netdev socket,id=net0,fd=7",
            "-chardev socket,id=agent,fd=6",
            "dump-guest-core=off",
            "-sandbox on,",
            "-chardev socket,id=qmp,fd=11 -mon chardev=qmp,mode=control",
            "-incoming fd:12",
            "-chardev socket,id=pause,fd=13 -mon chardev=pause,mode=control",
        ] {
            assert!(line.contains(expected), "{expected}: {line}");
        }
        assert!(!line.contains("/host/"), "no host path: {line}");
    }

    #[test]
    fn an_arm64_guest_gets_virt_the_marks_port_and_its_disks_in_reverse() {
        let disk = |path: &str| {
            Device::Block(Disk {
                path: path.into(),
                read_only: true,
            })
        };
        let spec = VmSpec {
            arch: contract::arch::Arch::Aarch64,
            kernel: "/host/Image".into(),
            devices: vec![
                disk("/host/rootfs.img"),
                disk("/host/volume.img"),
                Device::AgentLink("/host/agent.sock".into()),
            ],
            memory_mib: 256,
            cpus: 1,
            cmdline: "console=ttyAMA0".into(),
            seccomp: true,
            start: Default::default(),
            measure_overhead: false,
        };
        let fds = Fds {
            timer: 5,
            agent: Some(6),
            net: None,
            disks: vec![vec![8], vec![9]],
            qmp: None,
            incoming: None,
            pause_monitor: None,
        };
        let line = args(&spec, Accel::Tcg, Path::new("/kernel"), &fds)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        for expected in [
            "-M virt,",
            "-cpu max,pauth-impdef=on",
            "-device virtio-serial-device,max_ports=3,id=serial0 -device virtserialport,bus=serial0.0,chardev=timer,name=org.nodeos.marks",
            "-chardev socket,id=agent,fd=6 -device virtserialport,chardev=agent,name=org.nodeos.agent",
            "console=ttyAMA0 norandmaps",
        ] {
            assert!(line.contains(expected), "{expected}: {line}");
        }
        for absent in ["isa-", "tsc", "microvm"] {
            assert!(!line.contains(absent), "{absent}: {line}");
        }
        // virt's transports are filled from the top: the root image's device comes last, so
        // that the guest finds it first (/dev/vda), with the descriptors of its own set.
        let volume = line.find("file=/dev/fdset/1").unwrap();
        let root = line.find("file=/dev/fdset/0").unwrap();
        assert!(volume < root, "{line}");
        assert!(line.contains("-add-fd fd=8,set=0"), "{line}");
        assert!(line.contains("-add-fd fd=9,set=1"), "{line}");
    }

    #[test]
    fn only_tcg_guests_get_fixed_mappings() {
        let spec = VmSpec {
            arch: contract::arch::Arch::X86_64,
            kernel: "/host/vmlinux".into(),
            devices: vec![],
            memory_mib: 256,
            cpus: 1,
            cmdline: "console=ttyS0".into(),
            seccomp: false,
            start: Default::default(),
            measure_overhead: false,
        };
        let fds = Fds {
            timer: 5,
            agent: None,
            net: None,
            disks: vec![],
            qmp: None,
            incoming: None,
            pause_monitor: None,
        };
        let cmdline = |accel| {
            let args = args(&spec, accel, Path::new("/kernel"), &fds);
            let at = args.iter().position(|a| a == "-append").unwrap();
            args[at + 1].clone().into_string().unwrap()
        };
        assert!(
            cmdline(Accel::Tcg).ends_with(" norandmaps"),
            "{}",
            cmdline(Accel::Tcg)
        );
        assert!(!cmdline(Accel::Kvm).contains("norandmaps"));
    }

    #[test]
    fn descriptors_are_numbered_in_order() {
        let mut handed = Handed::new(5);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(handed.push(a.into()), 5);
        assert_eq!(handed.push_raw(b.as_raw_fd()), 6);
        assert_eq!(handed.end(), 7);
        assert_eq!(handed.moves()[1], (b.as_raw_fd(), 6));
    }
}
