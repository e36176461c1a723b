//! The command line's parsers: volumes (`-v HOST:GUEST[:ro|:rw]`), environment entries, the
//! working folder, `--net`, `--publish`, memory and disk sizes, durations, vCPU counts. What
//! they accept must be what the VMM and the guest take: a volume the CLI accepts passes the
//! VMM's checks, and its guest parameter reaches the guest with the mount point the user gave;
//! a published port reads back as it is written.
#![no_main]

use std::path::{Component, Path, PathBuf};

use arbitrary::Arbitrary;
use contract::params::{self, GuestParams};
use libfuzzer_sys::fuzz_target;
use nodeos_vm::fuzzing::{env_entry, workdir};
use nodeos_vm::fuzzing::{parse_net, parse_publish};
use sandbox::vm_config;
use sandbox::volume::Volume;
use vmm::vm::{NetSpec, VmConfig, MAX_CPUS, MIN_MEMORY_MIB};

#[derive(Arbitrary, Debug)]
enum Case {
    Volume(String),
    Env(String),
    Workdir(String),
    Net(String),
    Publish(String),
    Memory(String),
    DiskSize(String),
    Duration(String),
    Cpus(String),
}

fn check_volume(spec: &str) {
    let Ok(v) = Volume::parse(spec) else {
        return;
    };
    assert!(v.host.is_dir());
    let guest = Path::new(&v.guest);
    assert!(guest.is_absolute() && guest.components().count() >= 2);
    assert!(guest
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
    // The folder the user named, only written the one way.
    let given = spec.split(':').nth(1).unwrap();
    assert!(Path::new(given).components().eq(guest.components()));
    let disk = v.disk(PathBuf::from("/volume.ext4"));
    assert_eq!(disk.read_only, spec.ends_with(":ro"));
    VmConfig::check_volumes(std::slice::from_ref(&disk))
        .unwrap_or_else(|e| panic!("{spec:?} parses, but the VMM refuses it: {e}"));
    let volume = params::Volume::new("/dev/vdc", disk.mount_point, disk.read_only)
        .unwrap_or_else(|e| panic!("{spec:?} parses, but the guest refuses it: {e}"));
    let p = GuestParams {
        volumes: vec![volume],
        ..GuestParams::default()
    };
    assert_eq!(GuestParams::parse(&p.to_string()), Ok(p));
}

fuzz_target!(|case: Case| match case {
    Case::Volume(spec) => check_volume(&spec),
    Case::Env(given) => {
        if let Ok(entry) = env_entry(&given) {
            let eq = entry.iter().position(|b| *b == b'=').expect("NAME=VALUE");
            assert!(eq > 0 && !entry.contains(&0));
        }
    }
    Case::Workdir(dir) => {
        if let Ok(dir) = workdir(dir) {
            assert!(dir.starts_with(b"/") && !dir.contains(&0));
        }
    }
    Case::Net(text) => {
        if let Ok(NetSpec::Tap(name)) = parse_net(&text) {
            assert!(!name.is_empty() && name.len() < 16 && !name.contains(['/', ' ', '\0']));
        }
    }
    Case::Publish(text) => {
        // What is accepted is written back the one way, and read again the same.
        if let Ok(port) = parse_publish(&text) {
            assert!(port.host.port() > 0 && port.guest_port > 0);
            assert_eq!(parse_publish(&port.to_string()), Ok(port));
        }
    }
    Case::Memory(given) => {
        if let Ok(mib) = vm_config::memory_mib(&given) {
            assert!(mib >= MIN_MEMORY_MIB);
            assert_eq!(vm_config::size_mib(&given), Some(u64::from(mib)));
        }
    }
    Case::DiskSize(given) => {
        if let Ok(bytes) = vm_config::disk_size_bytes(&given) {
            let mib = bytes >> 20;
            assert_eq!(mib << 20, bytes);
            assert!((vm_config::MIN_DISK_MIB..=vm_config::MAX_DISK_MIB).contains(&mib));
        }
    }
    Case::Duration(text) => {
        if let Ok(d) = vm_config::duration(&text) {
            assert!(!d.is_zero());
        }
    }
    Case::Cpus(given) => {
        if let Ok(n) = vm_config::cpus(&given) {
            assert!((1..=MAX_CPUS).contains(&n));
            assert_eq!(given.trim().parse::<u64>(), Ok(u64::from(n)));
        }
    }
});
