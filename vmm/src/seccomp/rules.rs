//! The syscalls each kind of VMM thread may make. Every filter allows [`common`]; each kind
//! adds its own. A syscall appears at most once per kind: either outright or with argument
//! rules, one of which must match.

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::ThreadKind;

/// A syscall and the rules its arguments must match (none: any arguments).
pub(super) type Entry = (i64, Vec<SeccompRule>);
type Result<T> = std::result::Result<T, BackendError>;

const KVMIO: u32 = 0xae;
vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
vmm_sys_util::ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_bindings::kvm_ioeventfd);
// A snapshot's reads of a paused VM's state (crate::kvm::state): each vCPU its own, the
// snapshot thread the VM's.
#[cfg(target_arch = "x86_64")]
mod state_ioctls {
    use super::KVMIO;

    vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_bindings::kvm_msrs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_bindings::kvm_lapic_state);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
    vmm_sys_util::ioctl_ior_nr!(
        KVM_GET_VCPU_EVENTS,
        KVMIO,
        0x9f,
        kvm_bindings::kvm_vcpu_events
    );
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_bindings::kvm_debugregs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_bindings::kvm_xsave);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_bindings::kvm_xcrs);
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_bindings::kvm_irqchip);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_bindings::kvm_pit_state2);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_bindings::kvm_clock_data);
}
#[cfg(target_arch = "aarch64")]
mod state_ioctls {
    use super::KVMIO;

    vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
    vmm_sys_util::ioctl_iow_nr!(KVM_GET_ONE_REG, KVMIO, 0xab, kvm_bindings::kvm_one_reg);
    vmm_sys_util::ioctl_iow_nr!(
        KVM_GET_DEVICE_ATTR,
        KVMIO,
        0xe2,
        kvm_bindings::kvm_device_attr
    );
}
pub(super) use state_ioctls::*;

fn any(nr: libc::c_long) -> Entry {
    (nr, Vec::new())
}

/// Allowed when any one of `rules` (each a list of conditions that must all hold) matches.
fn when(nr: libc::c_long, rules: Vec<Vec<SeccompCondition>>) -> Result<Entry> {
    Ok((
        nr,
        rules
            .into_iter()
            .map(SeccompRule::new)
            .collect::<Result<_>>()?,
    ))
}

/// Argument `arg` (as a 32-bit value) equals `value`.
fn eq(arg: u8, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// None of `bits` is set in argument `arg`.
fn clear(arg: u8, bits: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(bits),
        0,
    )
}

/// What any thread of ours does: allocate and free memory (never executable), lock mutexes,
/// log to stderr, close what it drops, sleep, read clocks (where the vDSO falls back to the
/// syscall), end, and abort on a panic (tgkill to its own process only).
fn common() -> Result<Vec<Entry>> {
    let exec = libc::PROT_EXEC as u64;
    Ok(vec![
        when(libc::SYS_mmap, vec![vec![clear(2, exec)?]])?,
        when(libc::SYS_mprotect, vec![vec![clear(2, exec)?]])?,
        any(libc::SYS_munmap),
        any(libc::SYS_mremap),
        any(libc::SYS_madvise),
        any(libc::SYS_brk),
        any(libc::SYS_futex),
        any(libc::SYS_write),
        any(libc::SYS_close),
        any(libc::SYS_clock_gettime),
        any(libc::SYS_clock_nanosleep),
        any(libc::SYS_nanosleep),
        any(libc::SYS_sched_yield),
        any(libc::SYS_rt_sigreturn),
        any(libc::SYS_rt_sigprocmask),
        any(libc::SYS_sigaltstack),
        any(libc::SYS_getpid),
        any(libc::SYS_gettid),
        when(
            libc::SYS_tgkill,
            vec![vec![eq(0, std::process::id().into())?]],
        )?,
        any(libc::SYS_exit),
        any(libc::SYS_exit_group),
        // Let through here, refused with EACCES by the second filter (see `refused`).
        any(libc::SYS_openat),
    ])
}

/// Syscalls that fail with EACCES instead of trapping, in a second filter: glibc's malloc
/// opens /proc/sys/vm/overcommit_memory the first time it shrinks a thread's heap, and
/// does without it when the open fails.
pub(super) fn refused() -> Vec<Entry> {
    vec![any(libc::SYS_openat)]
}

/// Waiting on descriptors (crate::poll, through glibc's poll(3)): arm64 has no poll(2), and
/// glibc makes it a ppoll(2) there.
fn polls() -> Vec<Entry> {
    vec![
        #[cfg(target_arch = "x86_64")]
        any(libc::SYS_poll),
        any(libc::SYS_ppoll),
    ]
}

fn vmm_main() -> Vec<Entry> {
    let mut rules = polls();
    // The memory report, from /proc/self/smaps opened before the filter.
    rules.push(any(libc::SYS_read));
    rules
}

/// KVM_RUN, and the ioeventfds a virtio driver's DRIVER_OK or reset attaches and detaches
/// (register writes are served on the vCPU thread); reading its own state for a snapshot;
/// waiting for console output to drain; eventfd reads when a device resets,
/// and what a vsock reset does to its connections and timer. (An arm64 vCPU's set-up,
/// KVM_ARM_VCPU_INIT and its registers, is done before its thread starts.)
fn vcpu() -> Result<Vec<Entry>> {
    let mut rules = polls();
    let mut ioctls = vec![vec![eq(1, KVM_RUN())?], vec![eq(1, KVM_IOEVENTFD())?]];
    #[cfg(target_arch = "aarch64")]
    for request in [KVM_GET_MP_STATE(), KVM_GET_ONE_REG()] {
        ioctls.push(vec![eq(1, request)?]);
    }
    #[cfg(target_arch = "x86_64")]
    for request in [
        KVM_GET_MP_STATE(),
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        KVM_GET_XSAVE(),
        KVM_GET_XCRS(),
        KVM_GET_DEBUGREGS(),
        KVM_GET_LAPIC(),
        KVM_GET_MSRS(),
        KVM_GET_VCPU_EVENTS(),
    ] {
        ioctls.push(vec![eq(1, request)?]);
    }
    rules.extend([
        when(libc::SYS_ioctl, ioctls)?,
        any(libc::SYS_read),
        any(libc::SYS_epoll_ctl),
        any(libc::SYS_shutdown),
        any(libc::SYS_timerfd_settime),
    ]);
    Ok(rules)
}

/// The device thread: its epoll loop, eventfds, disk I/O, entropy, vsock's Unix streams (it
/// creates no socket and connects none: the connections it makes to the host come from the
/// host side's connector, devices::virtio::vsock::host), the network link, and a broken
/// queue's ioeventfds.
fn virtio() -> Result<Vec<Entry>> {
    Ok(vec![
        // glibc's epoll_wait(3), an epoll_pwait(2) on arm64, which has no epoll_wait(2).
        #[cfg(target_arch = "x86_64")]
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        any(libc::SYS_epoll_ctl),
        any(libc::SYS_read),
        any(libc::SYS_readv),
        any(libc::SYS_writev),
        any(libc::SYS_pread64),
        any(libc::SYS_pwrite64),
        any(libc::SYS_preadv),
        any(libc::SYS_pwritev),
        any(libc::SYS_fsync),
        any(libc::SYS_fdatasync),
        any(libc::SYS_getrandom),
        any(libc::SYS_accept4),
        any(libc::SYS_sendto),
        any(libc::SYS_sendmsg),
        any(libc::SYS_recvfrom),
        any(libc::SYS_recvmsg),
        any(libc::SYS_shutdown),
        // Non-blocking accepted sockets; ioeventfds detached when a queue breaks.
        when(
            libc::SYS_ioctl,
            vec![vec![eq(1, libc::FIONBIO)?], vec![eq(1, KVM_IOEVENTFD())?]],
        )?,
        any(libc::SYS_fcntl),
        any(libc::SYS_timerfd_settime),
        // passt's exit status, when it closed its socket.
        any(libc::SYS_wait4),
        any(libc::SYS_waitid),
    ])
}

/// The snapshot thread: waits for the save byte or the VM's end, reads the VM's interrupt
/// controllers (x86-64: and PIT and clock), and writes the snapshot file it was given
/// (positioned writes, truncation to empty and to its length, fsync): it opens nothing.
fn snapshot() -> Result<Vec<Entry>> {
    #[cfg(target_arch = "x86_64")]
    let reads = vec![
        vec![eq(1, KVM_GET_IRQCHIP())?],
        vec![eq(1, KVM_GET_PIT2())?],
        vec![eq(1, KVM_GET_CLOCK())?],
    ];
    #[cfg(target_arch = "aarch64")]
    let reads = vec![vec![eq(1, KVM_GET_DEVICE_ATTR())?]];
    let mut rules = polls();
    rules.extend([
        when(libc::SYS_ioctl, reads)?,
        any(libc::SYS_pwrite64),
        any(libc::SYS_ftruncate),
        any(libc::SYS_fsync),
    ]);
    Ok(rules)
}

/// The filter of `kind`: [`common`] and its own.
pub(super) fn of(kind: ThreadKind) -> Result<Vec<Entry>> {
    let mut rules = common()?;
    rules.extend(match kind {
        ThreadKind::VmmMain => vmm_main(),
        ThreadKind::Vcpu => vcpu()?,
        ThreadKind::Virtio => virtio()?,
        ThreadKind::ConsoleInput => {
            let mut rules = polls();
            rules.push(any(libc::SYS_read));
            rules
        }
        // The pause link's requests, read once polled; its answers are writes.
        ThreadKind::HostControl => {
            let mut rules = polls();
            rules.push(any(libc::SYS_read));
            rules
        }
        ThreadKind::PasstStderr => vec![any(libc::SYS_read)],
        // Two non-blocking Unix streams, waited on together.
        ThreadKind::PasstRelay => {
            let mut rules = polls();
            rules.extend([any(libc::SYS_recvfrom), any(libc::SYS_sendto)]);
            rules
        }
        ThreadKind::Snapshot => snapshot()?,
        ThreadKind::VmmProcess => {
            let mut rules = vmm_main();
            // Dropping the devices: vsock connections are shut down. (The socket file is the
            // parent's to remove.)
            rules.push(any(libc::SYS_shutdown));
            rules
        }
    });
    Ok(rules)
}
