//! `--no-seccomp` and `--no-jail` say loudly that they are on, before anything else happens
//! (here the VM never boots: its kernel does not exist).

use std::process::Command;

use nodeos_vm::cli::{NO_JAIL_WARNING, NO_SECCOMP_WARNING};

const BIN: &str = env!("CARGO_BIN_EXE_nodeos-vm");

fn stderr_of(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn no_seccomp_prints_the_warning() {
    prints_the_warning("--no-seccomp", NO_SECCOMP_WARNING);
}

#[test]
fn no_jail_prints_the_warning() {
    prints_the_warning("--no-jail", NO_JAIL_WARNING);
}

fn prints_the_warning(option: &str, warning: &str) {
    let images = [
        "--kernel",
        "/nonexistent/vmlinux",
        "--rootfs",
        "/nonexistent/rootfs",
    ];
    for command in [
        &["start", "--pipe"][..],
        &["start", "--detach"],
        &["run"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let mut args = command.to_vec();
        args.push(option);
        args.extend(images);
        if command == ["run"] {
            args.extend(["--", "true"]);
        }
        let stderr = stderr_of(&args);
        assert_eq!(stderr.lines().next(), Some(warning), "{args:?}: {stderr}");
        args.retain(|a| *a != option);
        let stderr = stderr_of(&args);
        assert!(!stderr.contains(option), "{args:?}: {stderr}");
    }
}
