//! seccomp-BPF filters for the threads of our KVM VMM: each thread, once it has opened what it
//! needs, installs the filter of its [`ThreadKind`], which allows only the syscalls that kind
//! of thread makes (ioctl and socket with argument rules). A forbidden syscall raises SIGSYS;
//! the handler writes `nodeos-vm: seccomp: thread NAME made forbidden syscall N; the VMM
//! stopped` on stderr and ends the process with [`trap::VIOLATION_EXIT_STATUS`]
//! (docs/security.md).
//!
//! Filters are per thread (no TSYNC), and a thread's filter is inherited by the threads it
//! starts afterwards, so every thread is started before the one starting it installs its own.
//! [`apply`] also blocks the asynchronous signals in the calling thread, so that a signal meant
//! for the process (SIGINT, SIGTERM) never runs its handler on a filtered thread.
//!
//! In-process use: `backend::kvm::run` filters the threads it starts and never the calling
//! thread, which goes back to unfiltered work (the CLI, a test harness) afterwards; the wait
//! for the VM's end runs on a thread of its own, [`ThreadKind::VmmMain`]. A process that only
//! runs the VMM (a jailed child) may filter its own main thread too, with
//! `seccomp::apply(ThreadKind::VmmMain)` plus whatever it does after the VM ends.

mod rules;
mod trap;

use std::io;

use seccompiler::{BackendError, BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The kinds of VMM threads, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// Waits for the VM's end, kicks the vCPUs and joins the threads.
    VmmMain,
    /// Runs one vCPU: KVM_RUN and the device register accesses it exits for.
    Vcpu,
    /// The virtio device thread: queues, disks, entropy, vsock and network backends.
    Virtio,
    /// Moves console input into the serial port.
    ConsoleInput,
    /// Ends the VM when the host asks for it, and pauses and resumes it on the owner's
    /// requests (vm::PauseLink).
    HostControl,
    /// Keeps the end of passt's stderr.
    PasstStderr,
    /// Moves frames between the VM's network link and passt, through the guard on the host's
    /// loopback (devices::virtio::net::guard).
    PasstRelay,
    /// Saves the VM when the guest asks for it (crate::snapshot::save): KVM's VM state, the
    /// snapshot file.
    Snapshot,
    /// The main thread of a VMM in a process of its own (crate::backend::process), once the
    /// VM's threads run: waits for them, tears the machine down (the vsock socket file goes)
    /// and writes its report.
    VmmProcess,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 9] = [
        ThreadKind::VmmMain,
        ThreadKind::Vcpu,
        ThreadKind::Virtio,
        ThreadKind::ConsoleInput,
        ThreadKind::HostControl,
        ThreadKind::PasstStderr,
        ThreadKind::PasstRelay,
        ThreadKind::Snapshot,
        ThreadKind::VmmProcess,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::VmmMain => "vmm",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Virtio => "virtio",
            ThreadKind::ConsoleInput => "console-input",
            ThreadKind::HostControl => "host-control",
            ThreadKind::PasstStderr => "passt-stderr",
            ThreadKind::PasstRelay => "passt-relay",
            ThreadKind::Snapshot => "snapshot",
            ThreadKind::VmmProcess => "vmm-process",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp: cannot build the {} filter", kind.name())]
    Build {
        kind: ThreadKind,
        #[source]
        source: BackendError,
    },
    #[error("seccomp: cannot install the SIGSYS handler")]
    Handler(#[source] io::Error),
    #[error("seccomp: cannot block signals on thread {thread}")]
    Signals {
        thread: String,
        #[source]
        source: io::Error,
    },
    #[error("seccomp: cannot install the {} filter on thread {thread}", kind.name())]
    Install {
        kind: ThreadKind,
        thread: String,
        #[source]
        source: seccompiler::Error,
    },
}

/// The architecture the filters are compiled for: a filter checks it first, and kills a
/// thread whose syscall comes from another (syscall numbers differ between architectures).
#[cfg(target_arch = "x86_64")]
const TARGET_ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET_ARCH: TargetArch = TargetArch::aarch64;

/// The compiled filters of `kind`, in the order they are installed (the second installation
/// needs prctl and seccomp, which the first lets through): the syscalls refused with EACCES;
/// then its syscalls allowed, anything else trapped. Of two filters, the kernel takes the
/// stricter answer.
fn programs(kind: ThreadKind) -> Result<[BpfProgram; 2], Error> {
    let build = |source| Error::Build { kind, source };
    let compile = |rules: Vec<rules::Entry>, mismatch, matched| {
        SeccompFilter::new(rules.into_iter().collect(), mismatch, matched, TARGET_ARCH)
            .and_then(BpfProgram::try_from)
    };
    let allowed = compile(
        rules::of(kind).map_err(build)?,
        SeccompAction::Trap,
        SeccompAction::Allow,
    )
    .map_err(build)?;
    let refused = compile(
        rules::refused(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
    )
    .map_err(build)?;
    Ok([refused, allowed])
}

/// Blocks every signal but the synchronous ones (faults, SIGSYS) in this thread. (A vCPU
/// thread unblocks its kick signal itself.)
fn block_async_signals() -> io::Result<()> {
    // SAFETY: an all-zero sigset_t is valid storage for sigfillset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigfillset(&mut set);
        for s in [
            libc::SIGSYS,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGABRT,
            libc::SIGTRAP,
        ] {
            libc::sigdelset(&mut set, s);
        }
    }
    // SAFETY: `set` is initialized; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Filters the calling thread as a thread of `kind`, for the rest of its life.
pub fn apply(kind: ThreadKind) -> Result<(), Error> {
    let thread = std::thread::current()
        .name()
        .unwrap_or(kind.name())
        .to_string();
    let programs = programs(kind)?;
    trap::install().map_err(Error::Handler)?;
    block_async_signals().map_err(|source| Error::Signals {
        thread: thread.clone(),
        source,
    })?;
    trap::set_thread_name(&thread);
    for program in &programs {
        seccompiler::apply_filter(program).map_err(|source| Error::Install {
            kind,
            thread: thread.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
