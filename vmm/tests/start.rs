//! `nodeos-vm start` on this host: the Node.js REPL is PID 1 of a fresh microVM. Each test
//! boots real guests on the backend `auto` picks here (or `NODEOS_VM_TEST_BACKEND`); the same
//! cases run on our VMM inside the KVM box (tests/kvm_box.rs).

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cases::{self, Outcome};
use common::BIN;

fn run_on_host(name: &str) {
    let case = cases::case(name);
    let (kernel, rootfs) = common::artifacts();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.img");
    let image = std::fs::read(rootfs).unwrap();
    std::fs::write(&truncated, &image[..image.len() / 2]).unwrap();
    let outcomes: Vec<Outcome> = case
        .boots
        .iter()
        .map(|boot| {
            let args = cases::args(boot, kernel.to_str().unwrap(), rootfs.to_str().unwrap(), truncated.to_str().unwrap());
            let out = common::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), boot.input);
            Outcome {
                status: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .collect();
    if let Err(why) = (case.check)(&outcomes) {
        panic!("{name}: {why}");
    }
}

macro_rules! host_cases {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            run_on_host(stringify!($name));
        }
    )*};
}

host_cases!(
    repl_is_pid_1,
    unprivileged_user_and_no_root_account,
    overlay_root_over_a_read_only_image_and_ephemeral_writes,
    node_is_the_pinned_version,
    two_vcpus,
    exit_statuses,
    no_zombies_under_pid_1,
    missing_kernel_error,
    truncated_image_error,
    bad_memory_errors,
);

#[test]
fn every_case_runs_here() {
    let listed = include_str!("start.rs");
    for case in cases::CASES {
        assert!(listed.contains(&format!("    {},\n", case.name)), "{} is not in host_cases!", case.name);
    }
}

/// On a terminal the REPL is interactive: prompt, echo, line editing in the guest.
#[test]
fn interactive_terminal_session() {
    common::artifacts();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
    let mut child = Command::new(BIN)
        .args(["start", "--backend", &common::backend()])
        .stdin(slave())
        .stdout(slave())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let mut wait_for = |master: &mut std::fs::File, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            assert!(Instant::now() < deadline, "timed out waiting for {needle:?}; saw {seen:?}");
            let n = master.read(&mut buf).unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen.clear();
    };
    wait_for(&mut master, "> ");
    master.write_all(b"process.pid * 7\r").unwrap();
    wait_for(&mut master, "7");
    wait_for(&mut master, "> ");
    master.write_all(b".exit\r").unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
}
