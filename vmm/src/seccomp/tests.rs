//! Each kind's filter in a child process (this test binary run again, filtered to [`child`]):
//! an allowed syscall of that kind works, a forbidden one ends the process with the line and
//! the status documented.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::trap::VIOLATION_EXIT_STATUS;
use super::*;

/// Set in the child process: the name of the kind to filter.
const CHILD_ENV: &str = "NODEOS_VM_SECCOMP_CHILD";
const ALLOWED_OK: &str = "allowed syscalls work";
const SURVIVED: &str = "the forbidden syscall returned";

fn thread_name(kind: ThreadKind) -> &'static str {
    match kind {
        ThreadKind::Vcpu => "vcpu0",
        other => other.name(),
    }
}

/// Makes KVM ioctl `request` on `evt`: the filter lets it through (the process is not killed),
/// and the kernel refuses it (an eventfd is no KVM descriptor).
fn kernel_refuses_kvm_ioctl(evt: &EventFd, request: u64) {
    // SAFETY: the kernel refuses the ioctl on an eventfd before it reads or writes through its
    // null argument.
    let rc = unsafe { libc::ioctl(evt.as_raw_fd(), request as _, 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
}

/// Calls that `kind`'s filter allows, on descriptors opened before it was installed: `evt` is
/// readable, and so is `pipe`; `epoll` watches `evt`.
fn allowed(kind: ThreadKind, evt: &EventFd, pipe: &OwnedFd, epoll: &Epoll) {
    let mut byte = [0u8; 1];
    match kind {
        ThreadKind::VmmMain | ThreadKind::HostControl | ThreadKind::VmmProcess => {
            assert_eq!(
                crate::poll::first_readable(&[evt.as_raw_fd()], Some(Duration::ZERO)),
                Some(0)
            );
            // SAFETY: reads at most one byte into `byte`.
            let got = unsafe { libc::read(pipe.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
            assert_eq!(got, 1);
        }
        ThreadKind::Vcpu => {
            // KVM_RUN passes the filter; on an eventfd the kernel refuses it.
            kernel_refuses_kvm_ioctl(evt, rules::KVM_RUN());
            // So does reading its state for a snapshot.
            #[cfg(target_arch = "x86_64")]
            kernel_refuses_kvm_ioctl(evt, rules::KVM_GET_REGS());
            #[cfg(target_arch = "aarch64")]
            kernel_refuses_kvm_ioctl(evt, rules::KVM_GET_ONE_REG());
            evt.write(1).unwrap();
        }
        ThreadKind::Snapshot => {
            // The VM's state (x86-64: its clock; arm64: a GIC attribute), refused by the kernel
            // on an eventfd, and a positioned write (refused on a pipe).
            #[cfg(target_arch = "x86_64")]
            kernel_refuses_kvm_ioctl(evt, rules::KVM_GET_CLOCK());
            #[cfg(target_arch = "aarch64")]
            kernel_refuses_kvm_ioctl(evt, rules::KVM_GET_DEVICE_ATTR());
            // SAFETY: pwrite reads one byte from `byte`.
            let rc = unsafe { libc::pwrite(pipe.as_raw_fd(), byte.as_ptr().cast(), 1, 0) };
            assert_eq!(rc, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ESPIPE)
            );
        }
        ThreadKind::Virtio => {
            // The device loop's wait (glibc's epoll_wait(3): an epoll_pwait(2) on arm64).
            let mut events = [EpollEvent::default(); 1];
            assert_eq!(epoll.wait(0, &mut events).unwrap(), 1);
            // SAFETY: getrandom writes at most one byte into `byte`.
            let got = unsafe { libc::getrandom(byte.as_mut_ptr().cast(), 1, 0) };
            assert_eq!(got, 1);
        }
        ThreadKind::ConsoleInput | ThreadKind::PasstStderr => {
            // SAFETY: reads at most one byte into `byte`.
            let got = unsafe { libc::read(pipe.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
            assert_eq!(got, 1);
        }
        ThreadKind::PasstRelay => {
            // SAFETY: recv writes at most one byte into `byte` (a pipe is not a socket).
            let got = unsafe { libc::recv(pipe.as_raw_fd(), byte.as_mut_ptr().cast(), 1, 0) };
            assert_eq!(got, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOTSOCK)
            );
        }
    }
}

/// The syscall [`forbidden`] makes for `kind`.
fn forbidden_syscall(kind: ThreadKind) -> libc::c_long {
    match kind {
        ThreadKind::Vcpu | ThreadKind::Snapshot => libc::SYS_ioctl,
        // glibc's unlink(3) is an unlinkat(2) on arm64, which has no unlink(2).
        #[cfg(target_arch = "x86_64")]
        ThreadKind::VmmProcess => libc::SYS_unlink,
        #[cfg(not(target_arch = "x86_64"))]
        ThreadKind::VmmProcess => libc::SYS_unlinkat,
        _ => libc::SYS_socket,
    }
}

/// A call that `kind`'s filter forbids.
fn forbidden(kind: ThreadKind, evt: &EventFd) {
    match kind {
        // Any ioctl but the vCPU's own: KVM_GET_API_VERSION.
        ThreadKind::Vcpu => {
            // SAFETY: the ioctl takes no argument (and is not made).
            unsafe { libc::ioctl(evt.as_raw_fd(), 0xae00, 0) };
        }
        // Running a vCPU: the snapshot thread only reads the VM's state.
        ThreadKind::Snapshot => {
            // SAFETY: KVM_RUN takes no argument (and is not made).
            unsafe { libc::ioctl(evt.as_raw_fd(), rules::KVM_RUN() as _, 0) };
        }
        // Removing a file: the socket files are the parent's to remove.
        ThreadKind::VmmProcess => {
            // SAFETY: unlink reads a NUL-terminated path (and is not made).
            unsafe { libc::unlink(c"/nonexistent".as_ptr()) };
        }
        // Any socket, even a Unix one on the device thread: what it connects to the host
        // comes from the host side's connector.
        _ => {
            // SAFETY: socket() takes no pointers.
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        }
    }
}

/// The child's part (does nothing in a normal test run): a thread named as `kind`'s, filtered.
#[test]
fn child() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let kind = ThreadKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .expect("a thread kind");
    let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    evt.write(1).unwrap();
    let (rx, tx) = nix::unistd::pipe().unwrap();
    nix::unistd::write(&tx, b"x").unwrap();
    let epoll = Epoll::new().unwrap();
    epoll
        .ctl(
            ControlOperation::Add,
            evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )
        .unwrap();
    std::thread::Builder::new()
        .name(thread_name(kind).into())
        .spawn(move || {
            apply(kind).unwrap();
            allowed(kind, &evt, &rx, &epoll);
            let _ = std::io::stderr().write_all(format!("{ALLOWED_OK}\n").as_bytes());
            forbidden(kind, &evt);
            let _ = std::io::stderr().write_all(format!("{SURVIVED}\n").as_bytes());
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Every kind's filters build for this architecture, and each names a syscall at most once
/// (a filter's rules are a map: a second entry would silently replace the first's).
#[test]
fn every_kind_builds_and_names_each_syscall_once() {
    for kind in ThreadKind::ALL {
        programs(kind).unwrap();
        let mut seen = std::collections::HashSet::new();
        for (nr, _) in rules::of(kind).unwrap() {
            assert!(seen.insert(nr), "{kind:?}: syscall {nr} listed twice");
        }
    }
}

/// Runs the test `name` of this binary alone in a child process, with `env` set.
pub(crate) fn run_child(name: &str, env: (&str, &str)) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .output()
        .unwrap()
}

fn violation_ends_the_process(kind: ThreadKind) {
    let out = run_child("seccomp::tests::child", (CHILD_ENV, kind.name()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let syscall = forbidden_syscall(kind);
    let line = format!(
        "nodeos-vm: seccomp: thread {} made forbidden syscall {syscall}; the VMM stopped\n",
        thread_name(kind)
    );
    assert!(stderr.contains(ALLOWED_OK), "{kind:?}: {stderr}");
    assert!(stderr.contains(&line), "{kind:?}: {stderr}");
    assert!(!stderr.contains(SURVIVED), "{kind:?}: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(VIOLATION_EXIT_STATUS),
        "{kind:?}: {stderr}"
    );
}

#[test]
fn vmm_main_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::VmmMain);
}

#[test]
fn vmm_process_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::VmmProcess);
}

#[test]
fn vcpu_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::Vcpu);
}

#[test]
fn virtio_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::Virtio);
}

#[test]
fn console_input_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::ConsoleInput);
}

#[test]
fn host_control_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::HostControl);
}

#[test]
fn passt_stderr_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::PasstStderr);
}

#[test]
fn passt_relay_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::PasstRelay);
}

#[test]
fn snapshot_violation_ends_the_process() {
    violation_ends_the_process(ThreadKind::Snapshot);
}
