//! Our VMM in a process of its own: `nodeos-vmm` (this crate's binary) runs one VM for
//! its parent, which returns the same [`RunReport`] an in-process [`kvm::run`] would. In a
//! process of its own the VMM can be jailed (crate::jail) and filtered on every thread
//! (crate::seccomp), and a VMM that a guest brought down does not take nodeos-vm with it: the
//! parent reports it as an error, with the last line it wrote on stderr.
//!
//! The VMM process's descriptors:
//! - 0 and 1: the console's input and output; 2: a pipe the parent copies to its own stderr;
//! - 3 ([`REQUEST_FD`]): the [`Request`] (the spec, and the jail), JSON, read to its end;
//! - 4 ([`STATUS_FD`]): [`Event`] lines, JSON: `Ready` once the guest's console takes input,
//!   then how the VM ended: its report, or what failed ([`VmmFailure`]);
//! - 5 ([`STOP_FD`]): the [`StopSignal`]'s eventfd;
//! - 6 ([`NET_FD`]): the host end of the guest's network link, opened by the parent
//!   (net::HostEnd), when the spec has one;
//! - 7 ([`AGENT_LISTENER_FD`]) and 8 ([`AGENT_CONNECTOR_FD`]): the agent link's listening socket
//!   and the device's end of its connector, when the spec has an agent link: the parent binds
//!   the socket, removes it afterwards and makes the guest's connections to the host
//!   (vsock::host).
//! - 9 ([`SNAPSHOT_FD`]): the snapshot file `spec.start` names, when it names one: opened by
//!   the parent (created and emptied for a save, read-only for a restore), so that a jailed
//!   VMM needs no path to it.
//! - 10 ([`PAUSE_FD`]): the VM's end of the owner's pause link (vm::PauseLink), when it has one.
//!
//! Any other descriptor is closed first thing. The VMM dies with its parent (a parent-death
//! signal) and ignores the terminal's signals (SIGINT, SIGQUIT, SIGHUP): they are nodeos-vm's.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use super::handover;
use super::kvm::{self, Vmm};
use crate::devices::virtio::net::{self, HelperThreads, HostEnd};
use crate::devices::virtio::vsock;
use crate::jail::{self, Jail};
use crate::kvm::vcpu::RunError;
use crate::memory;
use crate::seccomp::{self, ThreadKind};
use crate::vm::{ConsoleIo, ConsoleReady, PauseLink, RunReport, Start, StopSignal, VmSpec};

const REQUEST_FD: RawFd = 3;
const STATUS_FD: RawFd = 4;
const STOP_FD: RawFd = 5;
const NET_FD: RawFd = 6;
const AGENT_LISTENER_FD: RawFd = 7;
const AGENT_CONNECTOR_FD: RawFd = 8;
const SNAPSHOT_FD: RawFd = 9;
const PAUSE_FD: RawFd = 10;
/// The first descriptor the VMM process was not given.
const FIRST_FREE_FD: RawFd = 11;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the VMM process {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting up the VMM process: {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Net(#[from] net::Error),
    #[error(transparent)]
    Agent(#[from] vsock::Error),
    #[error("cannot open the snapshot {path}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Jail(#[from] jail::Error),
    /// The VMM's own error, as it reported it.
    #[error(transparent)]
    Vmm(#[from] VmmFailure),
    #[error("the VMM process ended without a report ({status}){}", said(.stderr))]
    Died { status: ExitStatus, stderr: String },
}

fn said(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its last words: {stderr}")
    }
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Setup { what, source }
}

/// What the parent asks of the VMM process.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    spec: VmSpec,
    jail: Option<jail::Request>,
    /// Whether it was handed a pause link.
    pause: bool,
}

/// What the VMM process tells its parent, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
enum Event {
    /// The guest's console takes input.
    Ready,
    /// The guest is at its template point.
    TemplateReady,
    Ended(RunReport),
    Failed(VmmFailure),
}

/// Why a VMM process failed, as it reports it to its parent: what failed, to match on, and
/// the error with its causes, on one line (the error itself cannot cross the process boundary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct VmmFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// What failed in a VMM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// Reading the parent's request, or the descriptors it handed over.
    Request,
    /// Entering the jail or dropping privileges in it.
    Jail,
    /// Guest memory.
    Memory,
    /// The number of vCPUs, for this host.
    Cpus,
    /// /dev/kvm: the VM, its vCPUs, their interrupt lines.
    Kvm,
    /// Loading the kernel, or its command line and boot parameters.
    Kernel,
    /// A disk image.
    Disk,
    /// The network link's host end.
    Network,
    /// The guest agent's socket.
    AgentLink,
    /// Another device, or the devices' layout.
    Device,
    /// Saving or restoring a snapshot, or its file.
    Snapshot,
    /// A thread's syscall filter.
    Seccomp,
    /// The running VM: a vCPU or a VMM thread.
    Run,
}

/// The program that runs as the VMM process.
#[derive(Debug, Clone)]
pub struct VmmProgram {
    exe: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl VmmProgram {
    /// `exe args...` with `env` added: `nodeos-vmm`, or a program that calls [`vmm_main`].
    pub fn new(exe: PathBuf, args: Vec<OsString>, env: Vec<(OsString, OsString)>) -> Self {
        VmmProgram { exe, args, env }
    }

    /// The program, to be started.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

/// How a program we start is confined: the jail, and the program that is its helper
/// (`nodeos-vmm exec`, crate::jail::exec).
#[derive(Debug, Clone, Copy)]
pub struct Jailed<'a> {
    pub jail: Jail,
    pub helper: &'a VmmProgram,
}

/// Boots `spec` in a VMM process started from `program`, jailed when `jail` is given, pausing
/// it on the requests of `pause`'s owner, and waits until it ends.
pub fn run(
    program: &VmmProgram,
    spec: &VmSpec,
    console: ConsoleIo,
    stop: &StopSignal,
    pause: Option<PauseLink>,
    jail: Option<Jail>,
) -> Result<RunReport, Error> {
    // passt runs beside us, not in the VMM: its stderr thread is ours, not filtered.
    let net = spec
        .net()
        .map(|net| HostEnd::open(net, HelperThreads::Unfiltered))
        .transpose()?;
    let (agent_host, agent_device) = spec
        .agent_socket()
        .map(vsock::host::open)
        .transpose()?
        .unzip();
    let snapshot = snapshot_file(spec)?;
    let host = jail
        .map(|jail| {
            let allowance = jail::cgroup::VMM_MEMORY_ALLOWANCE_MIB;
            jail::HostSide::prepare(jail, spec, console.output.as_fd(), allowance)
        })
        .transpose()?;
    let request = Request {
        spec: spec.clone(),
        jail: host.as_ref().map(|host| host.request().clone()),
        pause: pause.is_some(),
    };
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from);
    let (request_read, request_write) = pipe().map_err(setup("a pipe for its request"))?;
    let (status_read, status_write) = pipe().map_err(setup("a pipe for its status"))?;
    let (stderr_read, stderr_write) = pipe().map_err(setup("a pipe for its stderr"))?;

    let mut moves = vec![
        (request_read.as_raw_fd(), REQUEST_FD),
        (status_write.as_raw_fd(), STATUS_FD),
        (stop.fd(), STOP_FD),
    ];
    if let Some(net) = &net {
        moves.push((net.fd.as_raw_fd(), NET_FD));
    }
    if let Some(agent) = &agent_device {
        moves.push((agent.listener.as_raw_fd(), AGENT_LISTENER_FD));
        moves.push((agent.connector.as_raw_fd(), AGENT_CONNECTOR_FD));
    }
    if let Some(file) = &snapshot {
        moves.push((file.as_raw_fd(), SNAPSHOT_FD));
    }
    if let Some(link) = &pause {
        moves.push((link.fd(), PAUSE_FD));
    }
    let cgroup_procs = host.as_ref().and_then(|h| h.cgroup()).map(|c| c.procs_fd());
    let mut command = program.command();
    command
        .stdin(Stdio::from(console.input))
        .stdout(Stdio::from(console.output))
        .stderr(Stdio::from(stderr_write));
    let child = handover::spawn(command, &moves, FIRST_FREE_FD, cgroup_procs);
    // Our copies of the child's ends: its end of each pipe and of the connector must be the
    // only one.
    // The pause link's too: the owner sees the VM's end when the VMM process's goes.
    drop((request_read, status_write, agent_device, snapshot, pause));
    let mut child = child.map_err(|source| Error::Spawn {
        exe: program.exe.clone(),
        source,
    })?;
    let stderr = thread::Builder::new()
        .name("vmm-stderr".into())
        .spawn(move || relay_stderr(stderr_read))
        .map_err(setup("a thread for its stderr"))?;

    // A VMM that died before reading it fails the write; its status says more. Buffered: one
    // write, not one per JSON token.
    let _ = serde_json::to_writer(io::BufWriter::new(File::from(request_write)), &request);
    let end = read_events(status_read, &console.ready, &console.template);
    let status = child.wait().map_err(setup("waiting for it"));
    console.ready.signal();
    let last_words = stderr.join().unwrap_or_default();
    drop((host, net, agent_host));
    match (end, status?) {
        (Some(Event::Ended(report)), _) => Ok(report),
        (Some(Event::Failed(failure)), _) => Err(failure.into()),
        (_, status) => Err(Error::Died {
            status,
            stderr: last_words,
        }),
    }
}

/// The snapshot file `spec.start` names, opened for the VMM: created (or emptied) for a save,
/// read-only for a restore.
fn snapshot_file(spec: &VmSpec) -> Result<Option<File>, Error> {
    let (path, file) = match &spec.start {
        Start::Boot => return Ok(None),
        Start::Save { to, .. } => (
            to,
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(to),
        ),
        Start::Restore { from, .. } => (from, File::open(from)),
    };
    file.map(Some).map_err(|source| Error::Snapshot {
        path: path.clone(),
        source,
    })
}

/// Copies the VMM's stderr to ours, line by line; returns its last non-empty line.
fn relay_stderr(from: OwnedFd) -> String {
    let mut last = String::new();
    for line in BufReader::new(File::from(from)).lines() {
        let Ok(line) = line else { break };
        eprintln!("{line}");
        if !line.trim().is_empty() {
            last = line;
        }
    }
    last
}

/// Reads the VMM's events to their end, opening the console on `Ready` and signalling
/// `template` on `TemplateReady`; returns the last.
fn read_events(from: OwnedFd, ready: &ConsoleReady, template: &ConsoleReady) -> Option<Event> {
    let mut end = None;
    for line in BufReader::new(File::from(from)).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str(&line) {
            Ok(Event::Ready) => ready.signal(),
            Ok(Event::TemplateReady) => template.signal(),
            Ok(event) => end = Some(event),
            Err(e) => tracing::warn!("the VMM process said {line:?}: {e}"),
        }
    }
    end
}

/// `nodeos-vmm`: the VMM process (see the top of this module). Returns its exit status.
pub fn vmm_main() -> u8 {
    // Tests run this from their own binary: the name in ps and /proc/PID/comm stays the same.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"nodeos-vmm".as_ptr()) };
    if let Err(e) = jail::close_inherited_fds(FIRST_FREE_FD) {
        eprintln!("nodeos-vmm: {e}");
        return contract::status::HOST_FAILURE;
    }
    for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
        // SAFETY: ignoring a signal installs no handler.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // SAFETY: the parent handed over this descriptor (handover) and nothing else owns it.
    let status = unsafe { File::from_raw_fd(STATUS_FD) };
    let (end, code) = match serve(&status) {
        Ok(report) => (Event::Ended(report), 0),
        Err(e) => (
            Event::Failed(VmmFailure {
                kind: e.kind(),
                message: crate::error_chain::one_line(&e),
            }),
            contract::status::HOST_FAILURE,
        ),
    };
    send(&status, &end);
    code
}

#[derive(Debug, thiserror::Error)]
enum VmmError {
    #[error("reading the VMM's request")]
    Request(#[source] serde_json::Error),
    #[error("duplicating the status pipe")]
    Status(#[source] io::Error),
    #[error(transparent)]
    Jail(#[from] jail::Error),
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
}

impl VmmError {
    fn kind(&self) -> FailureKind {
        use kvm::Error as E;
        match self {
            VmmError::Request(_) | VmmError::Status(_) => FailureKind::Request,
            VmmError::Jail(_) | VmmError::Kvm(E::Jail(_)) => FailureKind::Jail,
            VmmError::Kvm(e) => match e {
                E::CpuCount { .. } => FailureKind::Cpus,
                E::Memory(_) => FailureKind::Memory,
                E::Kvm(_) => FailureKind::Kvm,
                E::Boot(_) | E::Cmdline(_) => FailureKind::Kernel,
                E::Disk(_) => FailureKind::Disk,
                E::Net(_) => FailureKind::Network,
                E::Vsock(_) => FailureKind::AgentLink,
                E::Device { .. } | E::Layout(_) => FailureKind::Device,
                E::Run(RunError::Seccomp(_)) => FailureKind::Seccomp,
                E::SnapshotFile { .. } | E::Snapshot(_) | E::Run(RunError::Snapshot(_)) => {
                    FailureKind::Snapshot
                }
                E::Run(_) => FailureKind::Run,
                E::Jail(_) => FailureKind::Jail,
            },
        }
    }
}

fn send(to: &File, event: &Event) {
    let mut line = serde_json::to_vec(event).expect("an event serializes");
    line.push(b'\n');
    // One write, shorter than PIPE_BUF: lines from two threads never mix. A parent that is
    // gone takes us with it.
    let _ = (&*to).write_all(&line);
}

fn serve(status: &File) -> Result<RunReport, VmmError> {
    // SAFETY: the parent handed over these descriptors (handover; stdin and stdout as the
    // console) and nothing else in this process owns them. NET_FD is open only with a network.
    let (request, stop, input, output) = unsafe {
        (
            File::from_raw_fd(REQUEST_FD),
            StopSignal::from_fd(OwnedFd::from_raw_fd(STOP_FD)),
            OwnedFd::from_raw_fd(libc::STDIN_FILENO),
            OwnedFd::from_raw_fd(libc::STDOUT_FILENO),
        )
    };
    // Buffered: serde_json reads a byte at a time.
    let request: Request =
        serde_json::from_reader(BufReader::new(request)).map_err(VmmError::Request)?;
    // SAFETY: as above.
    let net = request
        .spec
        .net()
        .is_some()
        .then(|| unsafe { OwnedFd::from_raw_fd(NET_FD) });
    // SAFETY: as above; these are open only with an agent link.
    let agent = request.spec.agent_socket().is_some().then(|| unsafe {
        vsock::host::DeviceSide::from_fds(AGENT_LISTENER_FD, AGENT_CONNECTOR_FD)
    });
    // SAFETY: as above; open only when the spec saves or restores a snapshot.
    let snapshot =
        (request.spec.start != Start::Boot).then(|| unsafe { File::from_raw_fd(SNAPSHOT_FD) });
    // SAFETY: as above; open only when the request says so.
    let pause = request
        .pause
        .then(|| PauseLink::from_fd(unsafe { OwnedFd::from_raw_fd(PAUSE_FD) }));
    let spec = match &request.jail {
        Some(j) => jail::enter(j, &request.spec, || {
            if request.spec.measure_overhead {
                memory::keep_smaps_open()
            } else {
                Ok(())
            }
        })?,
        None => request.spec,
    };
    let notify = status.try_clone().map_err(VmmError::Status)?;
    let notify_template = status.try_clone().map_err(VmmError::Status)?;
    let console = ConsoleIo {
        input,
        output,
        ready: ConsoleReady::notifying(move || send(&notify, &Event::Ready)),
        template: ConsoleReady::notifying(move || send(&notify_template, &Event::TemplateReady)),
    };
    let mut vmm = Vmm::build(&spec, console, net.map(HostEnd::given), agent, snapshot)?;
    if let Some(j) = &request.jail {
        vmm = vmm.confine(&j.identity)?;
    }
    let vmm = vmm.start(&stop, pause)?;
    // This thread is the process's own: filtered too, once the VM's threads run (they would
    // inherit its filter).
    if spec.seccomp {
        if let Err(e) = seccomp::apply(ThreadKind::VmmProcess) {
            vmm.fail(e.into());
        }
    }
    Ok(vmm.wait()?)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
