//! `nodeos-vm start` on this host: the Node.js REPL is PID 1 of a fresh microVM. Each test
//! boots real guests on the backend `auto` picks here (or `NODEOS_VM_TEST_BACKEND`); the same
//! cases run on our VMM inside the KVM box (tests/kvm_box/x86_64.rs).

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cases;
use common::BIN;

fn run_on_host(name: &str) {
    let (kernel, rootfs) = common::artifacts();
    cases::start_here(name, &["--backend", &common::backend()], kernel, rootfs);
}

case_tests!(run_on_host);

/// `nodeos-vm start` on a pseudo-terminal, as a person at a terminal runs it.
struct TerminalSession {
    child: std::process::Child,
    master: std::fs::File,
    _watchdog: common::Watchdog,
}

impl TerminalSession {
    fn start() -> TerminalSession {
        common::artifacts();
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = || Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
        let child = Command::new(BIN)
            .args(["start", "--backend", &common::backend()])
            .stdin(slave())
            .stdout(slave())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _watchdog = common::Watchdog::new(child.id(), common::BOOT_LIMIT);
        TerminalSession {
            child,
            master: std::fs::File::from(pty.master),
            _watchdog,
        }
    }

    /// Reads the terminal until `needle` shows up.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; saw {seen:?}"
            );
            let n = self.master.read(&mut buf).unwrap_or(0);
            assert!(
                n > 0,
                "the console closed while waiting for {needle:?}; saw {seen:?}"
            );
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Exit status and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code(), err)
    }
}

/// On a terminal the REPL is interactive: prompt, echo, line editing in the guest.
#[test]
fn interactive_terminal_session() {
    let mut term = TerminalSession::start();
    term.wait_for("> ");
    term.type_keys(b"process.pid * 7\r");
    term.wait_for("7");
    term.wait_for("> ");
    term.type_keys(b".exit\r");
    let (status, err) = term.finish();
    assert_eq!(status, Some(0), "{err}");
}

/// Ctrl-C belongs to the guest; Ctrl-A x is the way out of a VM from its terminal.
#[test]
fn ctrl_a_x_stops_the_vm() {
    let mut term = TerminalSession::start();
    term.wait_for("> ");
    term.type_keys(b"while (true) {}\r");
    term.type_keys(b"\x01x");
    let (status, err) = term.finish();
    assert_eq!(status, Some(130), "{err}");
    assert!(err.contains("stopped with Ctrl-A x"), "{err}");
}

/// `--backend kvm` boots on our VMM where KVM is hardware, and elsewhere fails at once with the
/// reason (no hang in a guest that cannot boot).
#[test]
fn backend_kvm_boots_or_says_why_not() {
    let doctor = Command::new(BIN).arg("doctor").output().unwrap();
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    let out = common::start_with_backend("kvm", &[], "process.pid\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if doctor.contains("auto backend: kvm") {
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    } else {
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(
            stderr.contains("KVM cannot run Linux guests on this host"),
            "{stderr}"
        );
        assert!(stderr.contains("use --backend qemu"), "{stderr}");
    }
}
