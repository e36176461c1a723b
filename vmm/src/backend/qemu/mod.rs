//! The fallback backend: QEMU's `microvm` machine, with KVM where the host's KVM can run Linux
//! guests and TCG elsewhere. It gives the guest the same devices, ports and console as our own
//! VMM (docs/guest-contract.md), so callers cannot tell the two apart.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use contract::mux::{self, Role};
use contract::SERIAL_PORT_NAME;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use contract::ports::{BOOT_TIMER_PORT, CONSOLE_READY, EXIT_PORT, INIT_STARTED};

use crate::vm::{ConsoleIo, Device, NetSpec, RunReport, StopSignal, VmExit, VmSpec};

const QEMU: &str = "qemu-system-x86_64";
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
    #[error("starting {QEMU}")]
    Spawn(#[source] io::Error),
    #[error("creating the boot-timer socket in {0}")]
    TimerSocket(PathBuf, #[source] io::Error),
    #[error("creating the guest agent's socket {0}")]
    AgentSocket(PathBuf, #[source] io::Error),
    #[error("waiting for {QEMU}")]
    Wait(#[source] io::Error),
    #[error("{QEMU} failed (exit status {status}): {stderr}")]
    Failed { status: String, stderr: String },
}

/// Boots `spec` under QEMU and waits for the VM to end.
pub fn run(
    spec: &VmSpec,
    console: ConsoleIo,
    accel: Accel,
    stop: &StopSignal,
) -> Result<RunReport, QemuError> {
    crate::host_packages::ensure(QEMU, "qemu-system-x86")?;
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("nodeos-vm-qemu")
        .tempdir()
        .map_err(|e| QemuError::TimerSocket(std::env::temp_dir(), e))?;
    let timer_path = dir.path().join("timer.sock");
    let timer = UnixListener::bind(&timer_path)
        .map_err(|e| QemuError::TimerSocket(timer_path.clone(), e))?;
    let link_path = dir.path().join("agent-link.sock");
    let agent = match spec.agent_socket() {
        Some(socket) => Some(AgentMux::listen(&link_path, socket)?),
        None => None,
    };

    let mut command = Command::new(QEMU);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // QEMU must not outlive nodeos-vm, however nodeos-vm ends.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .args(args(spec, accel, timer_path.into_os_string(), &link_path))
        .stdin(Stdio::from(console.input))
        .stdout(Stdio::from(console.output))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(QemuError::Spawn)?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.take(STDERR_LIMIT).read_to_string(&mut text);
        text
    });
    let init_reached = Arc::new(Mutex::new(None));
    watch_boot_timer(timer, started, console.ready, Arc::clone(&init_reached));
    let stopper = Stopper::watch(stop, child.id())?;
    let agent = agent.map(AgentMux::serve).transpose()?;

    let status = child.wait().map_err(QemuError::Wait)?;
    if let Some(agent) = agent {
        agent.finish();
    }
    if stopper.finish() {
        return Ok(RunReport {
            exit: VmExit::Stopped,
            init_reached: *init_reached.lock().unwrap(),
            vmm_overhead_kib: None,
        });
    }
    let stderr = stderr.join().unwrap_or_default();
    let init_reached = *init_reached.lock().unwrap();
    let exit =
        decode_exit(status.code(), init_reached.is_some()).ok_or_else(|| QemuError::Failed {
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        })?;
    Ok(RunReport {
        exit,
        init_reached,
        vmm_overhead_kib: None,
    })
}

/// The host end of the agent link on QEMU: QEMU connects its virtio-serial port's chardev to
/// `link`, and the multiplexer serves the hybrid-vsock socket the caller asked for over it.
struct AgentMux {
    link: UnixListener,
    socket: UnixListener,
    socket_path: PathBuf,
}

/// A running [`AgentMux`].
struct ServedMux {
    done: vmm_sys_util::eventfd::EventFd,
    thread: thread::JoinHandle<()>,
    socket_path: PathBuf,
}

impl AgentMux {
    /// Binds both sockets before QEMU starts: QEMU connects at once, and clients may connect
    /// as soon as the guest says it is ready.
    fn listen(link_path: &Path, socket_path: &Path) -> Result<AgentMux, QemuError> {
        let bind = |path: &Path| {
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path).map_err(|e| QemuError::AgentSocket(path.to_path_buf(), e))
        };
        Ok(AgentMux {
            link: bind(link_path)?,
            socket: bind(socket_path)?,
            socket_path: socket_path.to_path_buf(),
        })
    }

    /// Waits (on a thread) for QEMU's connection and multiplexes over it until it closes.
    fn serve(self) -> Result<ServedMux, QemuError> {
        let done = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| QemuError::AgentSocket(self.socket_path.clone(), e))?;
        let done_fd = done
            .try_clone()
            .map_err(|e| QemuError::AgentSocket(self.socket_path.clone(), e))?;
        let socket_path = self.socket_path.clone();
        let thread = thread::Builder::new()
            .name("agent-mux".into())
            .spawn(move || {
                let fds = [self.link.as_raw_fd(), done_fd.as_raw_fd()];
                if crate::poll::first_readable(&fds, None) != Some(0) {
                    return; // QEMU ended before it connected.
                }
                let Ok((link, _)) = self.link.accept() else {
                    return;
                };
                // SAFETY: done_fd is open for this whole closure; the borrow ends at once.
                let stop = unsafe { std::os::fd::BorrowedFd::borrow_raw(done_fd.as_raw_fd()) };
                let Ok(stop) = stop.try_clone_to_owned() else {
                    return;
                };
                if let Err(e) = mux::run(
                    link.into(),
                    self.socket,
                    self.socket_path,
                    Role::Host,
                    Some(stop),
                ) {
                    tracing::warn!("agent link: {e}");
                }
            })
            .map_err(|e| QemuError::AgentSocket(socket_path.clone(), e))?;
        Ok(ServedMux {
            done,
            thread,
            socket_path,
        })
    }
}

impl ServedMux {
    /// QEMU has ended: stops the multiplexer and removes its socket.
    fn finish(self) {
        let _ = self.done.write(1);
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Kills QEMU when the host asks the VM to stop.
struct Stopper {
    /// Set by the watcher when it killed QEMU; `None` once QEMU was reaped (no more kills).
    state: Arc<Mutex<Option<bool>>>,
    done: vmm_sys_util::eventfd::EventFd,
    thread: thread::JoinHandle<()>,
}

impl Stopper {
    fn watch(stop: &StopSignal, pid: u32) -> Result<Stopper, QemuError> {
        let done =
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).map_err(QemuError::Spawn)?;
        let done_fd = done.try_clone().map_err(QemuError::Spawn)?;
        let state = Arc::new(Mutex::new(Some(false)));
        let (s, stop) = (state.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("qemu-stop".into())
            .spawn(move || {
                if crate::poll::first_readable(&[done_fd.as_raw_fd(), stop.fd()], None) == Some(1) {
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

/// Timestamps the guest's first boot-timer byte and opens the console gate on the second.
fn watch_boot_timer(
    timer: UnixListener,
    started: Instant,
    ready: crate::vm::ConsoleReady,
    init_reached: Arc<Mutex<Option<Duration>>>,
) {
    thread::Builder::new()
        .name("boot-timer".into())
        .spawn(move || {
            let Ok((mut conn, _)) = timer.accept() else {
                return;
            };
            let mut byte = [0u8; 1];
            while let Ok(1) = conn.read(&mut byte) {
                match byte[0] {
                    INIT_STARTED => {
                        init_reached
                            .lock()
                            .unwrap()
                            .get_or_insert(started.elapsed());
                    }
                    CONSOLE_READY => ready.signal(),
                    _ => {}
                }
            }
            // The VM is gone: let the console relay run (and end) rather than wait forever.
            ready.signal();
        })
        .expect("spawning the boot-timer thread");
}

fn args(spec: &VmSpec, accel: Accel, timer_socket: OsString, agent_link: &Path) -> Vec<OsString> {
    let (accel_name, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&[
        "-M",
        "microvm,acpi=off,x-option-roms=off",
        "-accel",
        accel_name,
        "-cpu",
        cpu,
    ]);
    push(&[
        "-m",
        &format!("{}M", spec.memory_mib),
        "-smp",
        &spec.cpus.to_string(),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&[
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]);
    push(&[
        "-device",
        &format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=1"),
    ]);
    push(&[
        "-device",
        &format!("isa-debugcon,iobase={BOOT_TIMER_PORT:#x},chardev=timer"),
    ]);
    a.push("-chardev".into());
    a.push(with_prefix("socket,id=timer,path=", timer_socket));
    a.push("-kernel".into());
    a.push(spec.kernel.clone().into_os_string());
    let mut cmdline = spec.cmdline.clone();
    if accel == Accel::Tcg {
        cmdline = format!("{cmdline} {}", tcg_clock_params(&cpuinfo()));
    }
    // QEMU places virtio-mmio devices in the order they are created: the spec's order, which
    // is the guest's (block devices are /dev/vda, /dev/vdb, ... in this order).
    for (index, device) in spec.devices.iter().enumerate() {
        match device {
            Device::Block(disk) => {
                let readonly = if disk.read_only { "on" } else { "off" };
                a.push("-drive".into());
                a.push(with_prefix(
                    &format!(
                        "id=disk{index},format=raw,if=none,cache=writeback,readonly={readonly},file="
                    ),
                    disk.path.clone().into_os_string(),
                ));
                a.extend([
                    "-device".into(),
                    format!("virtio-blk-device,drive=disk{index}").into(),
                ]);
            }
            Device::Rng => a.extend(
                [
                    "-object",
                    "rng-random,id=rng,filename=/dev/urandom",
                    "-device",
                    "virtio-rng-device,rng=rng",
                ]
                .map(OsString::from),
            ),
            Device::Net(net) => {
                a.push("-netdev".into());
                a.push(match net {
                    // Slirp's defaults are the guest contract's: 10.0.2.15/24, host loopback
                    // at 10.0.2.2, DNS at 10.0.2.3.
                    NetSpec::User => "user,id=net0,net=10.0.2.0/24".into(),
                    NetSpec::Tap(name) => {
                        format!("tap,id=net0,ifname={name},script=no,downscript=no").into()
                    }
                });
                a.extend(["-device", "virtio-net-device,netdev=net0"].map(OsString::from));
            }
            Device::AgentLink(_) => {
                a.extend(
                    ["-device", "virtio-serial-device,max_ports=2", "-chardev"].map(OsString::from),
                );
                a.push(with_prefix(
                    "socket,id=agent,path=",
                    agent_link.as_os_str().to_owned(),
                ));
                a.push("-device".into());
                a.push(format!("virtserialport,chardev=agent,name={SERIAL_PORT_NAME}").into());
            }
        }
    }
    a.push("-append".into());
    a.push(cmdline.into());
    if spec.seccomp {
        a.extend(["-sandbox", SANDBOX].map(OsString::from));
    }
    a
}

/// QEMU's own seccomp filter: no obsolete syscalls, no privilege changes, no new processes,
/// no scheduling or resource changes.
const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// TCG offers the guest no kvm-clock and no HPET, so its kernel calibrates the TSC, the delay
/// loop and the local APIC timer against the PIT — about 0.4 s of a sub-second boot — and, when
/// calibration wobbles on a busy host, falls back to a 10 ms clock. The host knows its TSC
/// rate; tell the guest. (Under KVM the kernel gets all of this from kvm-clock.)
fn tcg_clock_params(cpuinfo: &str) -> String {
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

fn cpuinfo() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
}

/// `prefix` followed by a path, with QEMU's option escaping (`,` doubled).
fn with_prefix(prefix: &str, path: OsString) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = prefix.as_bytes().to_vec();
    for &b in path.as_bytes() {
        bytes.push(b);
        if b == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn paths_with_commas_are_escaped() {
        assert_eq!(
            with_prefix("file=", "/a,b".into()),
            OsString::from("file=/a,,b")
        );
    }
}
