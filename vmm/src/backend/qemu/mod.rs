//! The fallback backend: QEMU's `microvm` machine, with KVM where the host's KVM can run Linux
//! guests and TCG elsewhere. It gives the guest the same devices, ports and console as our own
//! VMM (docs/guest-contract.md), so callers cannot tell the two apart.
//!
//! QEMU opens nothing of the host's but its kernel: its disks, sockets and network link are
//! descriptors we hand over ([`args`]). Jailed (crate::jail), it starts in its own namespaces
//! and root, unprivileged, through the jail's helper ([`jail`]).

mod agent;
mod args;
mod jail;
mod pause;
mod qmp;
mod snapshot;

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use contract::arch::Arch;
use contract::ports::{CONSOLE_READY, EXIT_MARK, INIT_STARTED, MAX_EXIT_STATUS, TEMPLATE_READY};

use self::agent::AgentMux;
use self::args::{Fds, Handed};
use self::pause::Pauser;
use self::snapshot::{Done, SaveTrigger, Snapshot, SnapshotError};
use super::handover::{self, MAX_MOVES};
use super::process::Jailed;
use crate::devices::virtio::net::{self, HelperThreads, HostEnd};
use crate::jail as jails;
use crate::jail::exec::{self, FIRST_PROGRAM_FD};
use crate::vm::{ConsoleIo, ConsoleReady, PauseLink, RunReport, StopSignal, VmExit, VmSpec};

/// QEMU's system emulator for guests of `arch`, and Debian's package of it.
pub fn emulator(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
        Arch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
    }
}
/// How long, after QEMU ended, the marks thread may take to hand over the exit status it read.
const EXIT_MARK_WAIT: Duration = Duration::from_secs(1);
/// Most of QEMU's stderr we keep to explain a failure.
const STDERR_LIMIT: u64 = 64 * 1024;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(transparent)]
    NotInstalled(#[from] crate::host_packages::HostPackageError),
    #[error("starting QEMU")]
    Spawn(#[source] io::Error),
    #[error("creating the boot-timer socket pair")]
    TimerSocket(#[source] io::Error),
    #[error("creating the guest agent's socket {0}")]
    AgentSocket(std::path::PathBuf, #[source] io::Error),
    #[error("opening the disk {0}")]
    Disk(std::path::PathBuf, #[source] io::Error),
    #[error("QEMU would be handed {0} descriptors; at most {MAX_MOVES}")]
    TooManyDescriptors(usize),
    #[error(transparent)]
    Net(#[from] net::Error),
    #[error(transparent)]
    Jail(#[from] jails::Error),
    #[error(transparent)]
    Exec(#[from] exec::Error),
    #[error("waiting for QEMU")]
    Wait(#[source] io::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("QEMU failed (exit status {status}): {stderr}")]
    Failed { status: String, stderr: String },
}

/// Boots `spec` under QEMU, in a jail when `jailed` is given, pausing it on the requests of
/// `pause`'s owner, and waits for the VM to end.
pub fn run(
    spec: &VmSpec,
    console: ConsoleIo,
    accel: Accel,
    stop: &StopSignal,
    pause: Option<PauseLink>,
    jailed: Option<Jailed<'_>>,
) -> Result<RunReport, QemuError> {
    let (program, package) = emulator(spec.arch);
    let qemu = crate::host_packages::ensure(program, package)?;
    let started = Instant::now();
    let ConsoleIo {
        input,
        output,
        ready,
        template,
    } = console;

    let mut handed = Handed::new(FIRST_PROGRAM_FD);
    let (timer, qemus_timer) = UnixStream::pair().map_err(QemuError::TimerSocket)?;
    let timer_fd = handed.push(qemus_timer.into());
    let mut agent = None;
    let mut agent_fd = None;
    if let Some(socket) = spec.agent_socket() {
        let (mux, qemus) = AgentMux::listen(socket)?;
        agent = Some(mux);
        agent_fd = Some(handed.push(qemus));
    }
    // passt runs beside us, on the host's network; QEMU gets its socket, or the TAP.
    let net = spec
        .net()
        .map(|net| HostEnd::open(net, HelperThreads::Unfiltered))
        .transpose()?;
    let net_fd = net.as_ref().map(|n| handed.push_raw(n.fd.as_raw_fd()));
    let snapshot = Snapshot::prepare(spec, accel, &mut handed)?;
    let pauser = pause
        .map(|link| Pauser::prepare(link, &mut handed))
        .transpose()?;
    let disks = spec
        .disks()
        .map(|disk| {
            let mut open = |write| {
                OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(&disk.path)
                    .map(|file| handed.push(file.into()))
                    .map_err(|e| QemuError::Disk(disk.path.clone(), e))
            };
            let mut set = vec![open(false)?];
            if !disk.read_only {
                set.push(open(true)?);
            }
            Ok(set)
        })
        .collect::<Result<_, QemuError>>()?;
    let fds = Fds {
        timer: timer_fd,
        agent: agent_fd,
        net: net_fd,
        disks,
        qmp: snapshot.as_ref().map(|s| s.qmp_fd),
        incoming: snapshot.as_ref().and_then(|s| s.incoming_fd),
        pause_monitor: pauser.as_ref().map(|p| p.monitor_fd),
    };

    let stdio = (input, output);
    let (mut child, _jail) = match jailed {
        None => {
            let mut command = Command::new(&qemu);
            command.args(args::args(spec, accel, &spec.kernel, &fds));
            (
                spawn(command, handed.moves(), handed.end(), None, stdio)?,
                None,
            )
        }
        Some(jailed) => {
            let (child, host) = jail::start(&jailed, spec, accel, &qemu, &handed, &fds, stdio)?;
            (child, Some(host))
        }
    };
    // QEMU's ends are QEMU's alone now.
    drop(handed);
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.take(STDERR_LIMIT).read_to_string(&mut text);
        text
    });
    let init_reached = Arc::new(Mutex::new(None));
    let failed = StopSignal::new().map_err(QemuError::Spawn)?;
    let (save_at, snapshot) = match snapshot {
        Some(s) => {
            let (save_at, thread) = s.start(failed.clone(), Arc::clone(&init_reached), started)?;
            (save_at, Some(thread))
        }
        None => (None, None),
    };
    let marks = Marks {
        ready,
        template,
        save_at,
    };
    let exit_mark = watch_boot_timer(timer, started, marks, Arc::clone(&init_reached));
    let stopper = Stopper::watch(&[stop, &failed], child.id())?;
    let agent = agent.map(AgentMux::serve).transpose()?;
    let pauser = pauser.map(Pauser::serve).transpose()?;

    let status = child.wait().map_err(QemuError::Wait)?;
    if let Some(pauser) = pauser {
        pauser.finish();
    }
    if let Some(agent) = agent {
        agent.finish();
    }
    drop(net);
    let killed = stopper.finish();
    // The boot timer's thread has ended with QEMU: a save still waiting for its byte gives up.
    let snapshot = snapshot.map(|t| t.join().unwrap_or(Err(SnapshotError::NoSavePoint)));
    match snapshot {
        // QEMU or the guest ended first: how they ended says why.
        Some(Err(e)) if !e.qemu_ended() => return Err(QemuError::Snapshot(e)),
        _ => {}
    }
    if let (Some(Ok(Done::Saved)), Some(0)) = (&snapshot, status.code()) {
        return Ok(RunReport {
            exit: VmExit::Saved,
            init_reached: *init_reached.lock().unwrap(),
            vmm_overhead_kib: None,
            memory: None,
        });
    }
    if killed {
        return Ok(RunReport {
            exit: VmExit::Stopped,
            init_reached: *init_reached.lock().unwrap(),
            vmm_overhead_kib: None,
            memory: None,
        });
    }
    let stderr = stderr.join().unwrap_or_default();
    let init_reached = *init_reached.lock().unwrap();
    let exit = match spec.arch {
        Arch::X86_64 => decode_exit(status.code(), init_reached.is_some()),
        Arch::Aarch64 => {
            decode_marked_exit(status.code(), exit_mark.recv_timeout(EXIT_MARK_WAIT).ok())
        }
    };
    let exit = exit.ok_or_else(|| QemuError::Failed {
        status: status.to_string(),
        stderr: stderr.trim().to_string(),
    })?;
    Ok(RunReport {
        exit,
        init_reached,
        vmm_overhead_kib: None,
        memory: None,
    })
}

/// Starts `command` (QEMU, or the jail's helper) on the console, its stderr piped, handing it
/// `moves` (below `first_free`) and putting it in the cgroup whose `cgroup.procs` is open as
/// `cgroup_procs`. QEMU must not outlive nodeos-vm, however nodeos-vm ends: it gets the
/// parent-death signal.
pub(super) fn spawn(
    mut command: Command,
    moves: &[(std::os::fd::RawFd, std::os::fd::RawFd)],
    first_free: std::os::fd::RawFd,
    cgroup_procs: Option<std::os::fd::RawFd>,
    (input, output): (OwnedFd, OwnedFd),
) -> Result<Child, QemuError> {
    if moves.len() > MAX_MOVES {
        return Err(QemuError::TooManyDescriptors(moves.len()));
    }
    command
        .stdin(Stdio::from(input))
        .stdout(Stdio::from(output))
        .stderr(Stdio::piped());
    handover::spawn(command, moves, first_free, cgroup_procs).map_err(QemuError::Spawn)
}

/// Kills QEMU when the host asks the VM to stop, or when a snapshot fails (QEMU would be left
/// stopped or loading for ever).
struct Stopper {
    /// Set by the watcher when it killed QEMU; `None` once QEMU was reaped (no more kills).
    state: Arc<Mutex<Option<bool>>>,
    done: vmm_sys_util::eventfd::EventFd,
    thread: thread::JoinHandle<()>,
}

impl Stopper {
    fn watch(stops: &[&StopSignal], pid: u32) -> Result<Stopper, QemuError> {
        let done =
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).map_err(QemuError::Spawn)?;
        let done_fd = done.try_clone().map_err(QemuError::Spawn)?;
        let state = Arc::new(Mutex::new(Some(false)));
        let s = state.clone();
        let mut fds = vec![done_fd.as_raw_fd()];
        fds.extend(stops.iter().map(|stop| stop.fd()));
        let stops: Vec<StopSignal> = stops.iter().map(|&stop| stop.clone()).collect();
        let thread = thread::Builder::new()
            .name("qemu-stop".into())
            .spawn(move || {
                // The descriptors polled stay open with their owners.
                let _open = (done_fd, stops);
                if crate::poll::first_readable(&fds, None).is_some_and(|i| i > 0) {
                    let mut state = s.lock().unwrap();
                    if let Some(killed) = state.as_mut() {
                        // QEMU is not reaped yet (state is Some), so the pid is still its own.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        *killed = true;
                    }
                }
            })
            .map_err(QemuError::Spawn)?;
        Ok(Stopper {
            state,
            done,
            thread,
        })
    }

    /// QEMU was reaped: ends the watcher. True when the watcher killed it.
    fn finish(self) -> bool {
        let killed = self.state.lock().unwrap().take().unwrap_or(false);
        let _ = self.done.write(1);
        let _ = self.thread.join();
        killed
    }
}

/// QEMU reports the exit port's byte `b` as process status `(b << 1) | 1`, and a guest reset
/// (with `-no-reboot`) as 0; it also exits with 1 on its own errors, which we tell from a
/// guest exit with byte 0 by whether the guest ever reached init.
fn decode_exit(code: Option<i32>, init_reached: bool) -> Option<VmExit> {
    match code? {
        0 => Some(VmExit::Reset),
        1 if !init_reached => None,
        c if c & 1 == 1 && (1..=255).contains(&c) => Some(VmExit::Guest((c >> 1) as u8)),
        _ => None,
    }
}

/// Where the guest says its exit status on the marks port (arm64) and then powers off: QEMU's
/// status 0 with the status it said (`marked`) is the guest's exit, within the contract's
/// range as x86's exit device gives it (the statuses above are the host's own); without one a
/// reset or power-off of its own; any other status is QEMU's failure.
fn decode_marked_exit(code: Option<i32>, marked: Option<u8>) -> Option<VmExit> {
    match (code?, marked) {
        (0, Some(status)) => Some(VmExit::Guest(status.min(MAX_EXIT_STATUS))),
        (0, None) => Some(VmExit::Reset),
        _ => None,
    }
}

/// Who hears of the guest's boot-timer bytes.
struct Marks {
    /// Opened at `R`.
    ready: ConsoleReady,
    /// Signalled at `T`.
    template: ConsoleReady,
    /// Told when its byte comes.
    save_at: Option<SaveTrigger>,
}

/// Timestamps the guest's first boot-timer byte and tells `marks` of the others. Where the
/// boot-timer bytes come on the marks port (arm64), so does the exit status, after
/// [`EXIT_MARK`]: the receiver gets the first one (a guest that says more is not queued).
fn watch_boot_timer(
    mut conn: UnixStream,
    started: Instant,
    marks: Marks,
    init_reached: Arc<Mutex<Option<Duration>>>,
) -> mpsc::Receiver<u8> {
    let (exit_tx, exit_rx) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name("boot-timer".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            let mut exit_next = false;
            while let Ok(1) = conn.read(&mut byte) {
                if exit_next {
                    exit_next = false;
                    let _ = exit_tx.try_send(byte[0]);
                    continue;
                }
                if let Some((at, trigger)) = &marks.save_at {
                    if byte[0] == *at {
                        let _ = trigger.send(());
                    }
                }
                match byte[0] {
                    INIT_STARTED => {
                        init_reached
                            .lock()
                            .unwrap()
                            .get_or_insert(started.elapsed());
                    }
                    CONSOLE_READY => marks.ready.signal(),
                    TEMPLATE_READY => marks.template.signal(),
                    EXIT_MARK => exit_next = true,
                    _ => {}
                }
            }
            // The VM is gone: let the console relay run (and end) rather than wait forever.
            marks.ready.signal();
        })
        .expect("spawning the boot-timer thread");
    exit_rx
}

/// QEMU's translation cache is keyed by virtual address as well as physical: with the guest's
/// address-space randomisation, every exec maps ld.so, libc and a PIE binary at new addresses
/// and TCG translates all of their code again — 20-40 ms per command instead of 2-5 ms
/// (`sh -c true`: 34 → 3.3 ms; `ls /`: 43 → 4.7 ms, measured in the guest). Under TCG the
/// guest's own processes therefore get fixed mappings; the VM boundary, not ASLR inside it,
/// is what stands between a guest and the host (docs/security.md). Under KVM there is nothing
/// to translate and the guest keeps ASLR.
pub(super) const TCG_FIXED_MAPS: &str = "norandmaps";

/// TCG offers the guest no kvm-clock and no HPET, so its kernel calibrates the TSC, the delay
/// loop and the local APIC timer against the PIT — about 0.4 s of a sub-second boot — and, when
/// calibration wobbles on a busy host, falls back to a 10 ms clock. The host knows its TSC
/// rate; tell the guest. (Under KVM the kernel gets all of this from kvm-clock.)
pub(super) fn tcg_clock_params(cpuinfo: &str) -> String {
    let mut params = String::from("tsc=reliable no_timer_check noapictimer");
    let mhz = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("cpu MHz")?
            .split(':')
            .nth(1)?
            .trim()
            .parse::<f64>()
            .ok()
    });
    if let Some(khz) = mhz.map(|mhz| (mhz * 1000.0) as u64).filter(|&khz| khz > 0) {
        // loops per jiffy at HZ=100 (kernel/config.fragment)
        params.push_str(&format!(" tsc_early_khz={khz} lpj={}", khz * 10));
    }
    params
}

/// Where the emulator for `arch` guests is on PATH, if it is.
pub fn emulator_path(arch: Arch) -> Option<std::path::PathBuf> {
    crate::host_packages::on_path(emulator(arch).0)
}

/// The QEMU for `arch` guests on PATH, as its file (size, modification time): what a migration
/// stream's format follows.
pub fn build(arch: Arch) -> String {
    emulator_path(arch)
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{}-{}", m.len(), m.mtime())
        })
        .unwrap_or_else(|| "(none)".into())
}

pub(super) fn cpuinfo() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_the_guests_emulator_is_told_what_to_install() {
        let (program, package) = emulator(Arch::Aarch64);
        assert_eq!(
            (program, package),
            ("qemu-system-aarch64", "qemu-system-arm")
        );
        let missing = crate::host_packages::HostPackageError::Missing { program, package };
        assert_eq!(
            missing.to_string(),
            "qemu-system-aarch64 is not installed; install it with `sudo apt-get install \
             qemu-system-arm`"
        );
        assert_eq!(
            emulator(Arch::X86_64),
            ("qemu-system-x86_64", "qemu-system-x86")
        );
    }

    #[test]
    fn marked_exit_statuses() {
        assert_eq!(decode_marked_exit(Some(0), Some(3)), Some(VmExit::Guest(3)));
        assert_eq!(decode_marked_exit(Some(0), Some(0)), Some(VmExit::Guest(0)));
        // A hostile guest's byte cannot pass for one of the host's statuses.
        assert_eq!(
            decode_marked_exit(Some(0), Some(200)),
            Some(VmExit::Guest(127))
        );
        assert_eq!(decode_marked_exit(Some(0), None), Some(VmExit::Reset));
        assert_eq!(decode_marked_exit(Some(1), Some(3)), None);
        assert_eq!(decode_marked_exit(None, None), None);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(decode_exit(Some(1), true), Some(VmExit::Guest(0)));
        assert_eq!(decode_exit(Some(7), true), Some(VmExit::Guest(3)));
        assert_eq!(decode_exit(Some(255), true), Some(VmExit::Guest(127)));
        assert_eq!(decode_exit(Some(0), true), Some(VmExit::Reset));
        assert_eq!(
            decode_exit(Some(1), false),
            None,
            "QEMU's own error before the guest ran"
        );
        assert_eq!(decode_exit(Some(2), true), None);
        assert_eq!(decode_exit(None, true), None, "killed by a signal");
    }

    #[test]
    fn tcg_clock_from_the_host_tsc() {
        let p = tcg_clock_params("processor\t: 0\ncpu MHz\t\t: 2596.138\n");
        assert!(p.contains("tsc_early_khz=2596138 lpj=25961380"), "{p}");
        assert_eq!(
            tcg_clock_params(""),
            "tsc=reliable no_timer_check noapictimer"
        );
    }
}
