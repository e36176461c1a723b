//! The command line's parsers: volumes (`-v HOST:GUEST[:ro|:rw]`), environment entries, the
//! working folder, `--net`, memory sizes, durations, vCPU counts. What they accept must be
//! what the guest expects, and a volume's kernel parameter must carry its guest path intact.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, PathBuf};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nodeos_vm::backend::NetSpec;
use nodeos_vm::fuzzing::{env_entry, parse_net, workdir};
use nodeos_vm::vm_config;
use nodeos_vm::volume::Volume;

#[derive(Arbitrary, Debug)]
enum Case {
    Volume(String),
    Env(String),
    Workdir(String),
    Net(String),
    Memory(String),
    Duration(String),
    Cpus(u32),
}

/// Undoes the `%XX` encoding of a kernel parameter.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn check_volume(spec: &str) {
    let Ok(v) = Volume::parse(spec) else {
        return;
    };
    assert!(v.host.is_dir());
    assert!(v.guest.is_absolute() && v.guest.components().count() >= 2);
    assert!(v
        .guest
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
    let param = v.cmdline_param("/dev/vdb");
    let rest = param.strip_prefix("nodeos.vol=/dev/vdb:").unwrap();
    let (path, mode) = rest.rsplit_once(':').unwrap();
    assert!(mode == "ro" || mode == "rw");
    assert!(path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-%".contains(&b)));
    assert_eq!(
        PathBuf::from(OsStr::from_bytes(&percent_decode(path))),
        v.guest
    );
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
    Case::Memory(given) => {
        if let Ok(mib) = vm_config::memory_mib(&given) {
            assert!(mib >= vm_config::MIN_MEMORY_MIB);
        }
    }
    Case::Duration(text) => {
        if let Ok(d) = vm_config::duration(&text) {
            assert!(!d.is_zero());
        }
    }
    Case::Cpus(n) => {
        if let Ok(c) = vm_config::cpus(n) {
            assert!((1..=vm_config::MAX_CPUS).contains(&c) && u32::from(c) == n);
        }
    }
});
