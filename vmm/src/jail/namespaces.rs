//! Fresh namespaces for the VMM: mount, IPC, UTS and network for the process itself, and a PID
//! namespace, which only its children enter: so it forks once, and the child is the VMM.

use super::{check, last_error, Error};

const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID;

/// The host name the VMM sees in its UTS namespace.
const HOSTNAME: &[u8] = b"nodeos-vmm";

pub(super) fn unshare() -> Result<(), Error> {
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(NAMESPACES) }, || {
        "unsharing the mount, IPC, UTS, network and PID namespaces".into()
    })?;
    // SAFETY: the pointer and length describe HOSTNAME, which outlives the call.
    check(
        unsafe { libc::sethostname(HOSTNAME.as_ptr().cast(), HOSTNAME.len()) },
        || "setting the host name in the new UTS namespace".into(),
    )
}

/// Forks into the new PID namespace. Returns in the child, PID 1 there, which dies with this
/// process; this process waits for it and exits with its status (128 + N, said on stderr,
/// when signal N killed it), holding nothing else open.
pub(super) fn fork_pid1() -> Result<(), Error> {
    // SAFETY: the process is single-threaded (the jail is entered before any thread starts),
    // so the child may run any code.
    match unsafe { libc::fork() } {
        -1 => Err(last_error("forking the VMM into its PID namespace")),
        0 => {
            // SAFETY: prctl with integer arguments.
            check(
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) },
                || "setting the VMM's parent-death signal".into(),
            )
        }
        pid => relay(pid),
    }
}

/// Waits for the VMM and exits as it did.
fn relay(pid: libc::pid_t) -> ! {
    // Only stderr stays: the parent sees the end of the VMM's status pipe when the VMM goes.
    // SAFETY: close_range and close take integers; nothing of ours uses these descriptors.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::close(0);
        libc::close(1);
    }
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            eprintln!(
                "nodeos-vm: waiting for the VMM (pid {pid}): {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(contract::status::HOST_FAILURE.into());
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        eprintln!(
            "nodeos-vm: the VMM process was killed by signal {signal} ({})",
            signal_name(signal)
        );
        std::process::exit(128 + signal);
    }
    std::process::exit(libc::WEXITSTATUS(status))
}

fn signal_name(signal: libc::c_int) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
