//! Fresh namespaces for the jailed process: mount, IPC, UTS and network for the process itself,
//! and a PID namespace, which only its children enter: so it forks once, and the child is the
//! jailed process. For a jail of an unprivileged user ([`Identity::User`]) they all belong to a new
//! user namespace, which maps only that user's own uid and gid: the process may mount and pivot
//! there, and nothing it does there reaches anything but what its namespaces hold.

use std::io::Write;

use super::{check, last_error, Error, Identity};

const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID;

/// The host name the VMM sees in its UTS namespace.
const HOSTNAME: &[u8] = b"nodeos-vmm";

/// Where unprivileged user namespaces are switched off, unsharing one fails: this says where.
const USERNS_OFF: &str = "are unprivileged user namespaces allowed? (sysctl \
    user.max_user_namespaces, kernel.unprivileged_userns_clone, \
    kernel.apparmor_restrict_unprivileged_userns); run as root, or with --no-jail to run the VMM \
    without any confinement";

pub(super) fn unshare(identity: &Identity) -> Result<(), Error> {
    match identity {
        Identity::Root { .. } => {
            // SAFETY: unshare takes flags only.
            check(unsafe { libc::unshare(NAMESPACES) }, || {
                "unsharing the mount, IPC, UTS, network and PID namespaces".into()
            })?
        }
        Identity::User => {
            // SAFETY: the id getters have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            // SAFETY: unshare takes flags only.
            let ret = unsafe { libc::unshare(libc::CLONE_NEWUSER | NAMESPACES) };
            check(ret, || {
                format!(
                    "unsharing the user, mount, IPC, UTS, network and PID namespaces \
                     ({USERNS_OFF})"
                )
            })?;
            map_ids(uid, gid)?;
        }
    }
    // SAFETY: the pointer and length describe HOSTNAME, which outlives the call.
    check(
        unsafe { libc::sethostname(HOSTNAME.as_ptr().cast(), HOSTNAME.len()) },
        || "setting the host name in the new UTS namespace".into(),
    )
}

/// Maps `uid` and `gid`, and nothing else, in the new user namespace to themselves. The
/// process keeps its supplementary groups (the kernel lets no unprivileged process drop them
/// there: `setgroups` is denied first, as it must be for an unprivileged `gid_map`).
fn map_ids(uid: u32, gid: u32) -> Result<(), Error> {
    for (file, text) in [
        ("/proc/self/uid_map", format!("{uid} {uid} 1\n")),
        ("/proc/self/setgroups", "deny\n".to_string()),
        ("/proc/self/gid_map", format!("{gid} {gid} 1\n")),
    ] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|source| Error::Step {
                step: format!("writing {:?} to {file}", text.trim()),
                source,
            })?;
    }
    Ok(())
}

/// Forks into the new PID namespace. Returns in the child, PID 1 there, which dies with this
/// process; this process waits for it and ends as it did: with its exit status, or killed by
/// the same signal (said on stderr), holding nothing else open.
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

/// Waits for the jailed process and ends as it did.
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
                "nodeos-vm: waiting for the jailed process (pid {pid}): {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(contract::status::HOST_FAILURE.into());
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        eprintln!(
            "nodeos-vm: the jailed process was killed by signal {signal} ({})",
            signal_name(signal)
        );
        // The same end, so that our parent sees what happened (QEMU's exit statuses are
        // the guest's: 128 + N could be one). No core: RLIMIT_CORE is 0 (crate::jail::limits).
        // SAFETY: restoring a signal's default action and raising it take integers.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            let mut unblock: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut unblock);
            libc::sigaddset(&mut unblock, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
            libc::raise(signal);
        }
        std::process::exit(128 + signal);
    }
    std::process::exit(libc::WEXITSTATUS(status))
}

fn signal_name(signal: libc::c_int) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
