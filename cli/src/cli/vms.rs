//! Long-lived VMs: `start --detach` boots one in the background and prints its ID; `ps`,
//! `exec ID -- CMD`, `logs ID`, `pause ID`, `unpause ID` and `stop ID` work on them.
//!
//! Each VM is a background `nodeos-vm` process (the "keeper", which owns the VM and its agent
//! socket) and a folder in the runtime folder: `vms/<id>/` with `request.json` (the VM options
//! `start --detach` was given, which the keeper boots), `state.json`, `console.log`,
//! `agent.sock` and `control.sock` (where the keeper takes `pause` and `resume`, a line each,
//! and answers `ok` or `error: ...`). A folder whose keeper is gone is removed by `ps` and by
//! every lookup.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vmm_sys_util::eventfd::EventFd;

use contract::params::Shell;
use contract::status;
use sandbox::agent;
use sandbox::booted::{ConsoleLog, Sandbox, BOOT_TIMEOUT};
use vmm::runtime;
use vmm::vm::PublishedPort;

use super::printable;
use super::run::{exit_status, ExecOptions};
use super::vm_options::{choose_backend, VmArgs};

/// Environment variable naming the descriptor on which the keeper reports readiness.
const READY_FD_ENV: &str = "NODEOS_VM_READY_FD";
/// The VM's state, in its folder (JSON).
const STATE_FILE: &str = "state.json";
/// What `start --detach` asked for, in the VM's folder (JSON): the keeper boots that.
const REQUEST_FILE: &str = "request.json";
/// How long `stop` waits for a keeper to end before it kills it.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The keeper's control socket, in the VM's folder.
const CONTROL_SOCKET: &str = "control.sock";
/// How long `pause` and `unpause` wait for the keeper's answer (a pause waits for every vCPU).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The VM's ID (or a unique prefix of it), as `start --detach` printed it.
    id: String,
    #[command(flatten)]
    options: ExecOptions,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The VM's ID (or a unique prefix of it).
    id: String,
    /// Print the console's bytes as they are, escape sequences included (by default control
    /// characters are shown as `\x1b`-style escapes: the guest cannot drive this terminal).
    #[arg(long)]
    raw: bool,
}

#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The VM's ID (or a unique prefix of it).
    id: String,
}

/// What a VM's `state.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    id: String,
    /// The keeper process.
    pid: i32,
    backend: String,
    memory_mib: u32,
    cpus: u8,
    started: u64,
    running: bool,
    /// Its published ports (`-p`).
    #[serde(default)]
    ports: Vec<PublishedPort>,
    /// Paused (`nodeos-vm pause`): its vCPUs stopped, its memory kept.
    #[serde(default)]
    paused: bool,
}

impl Record {
    fn load(dir: &Path) -> Option<Record> {
        serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).ok()?).ok()
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        // Whole or not at all: readers never see half a file.
        let tmp = dir.join("state.json.tmp");
        fs::write(&tmp, serde_json::to_vec(self)?)?;
        fs::rename(tmp, dir.join(STATE_FILE))
    }

    fn keeper_alive(&self) -> bool {
        // The pid must still be a nodeos-vm process (pids are reused).
        fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|c| c.split(|&b| b == 0).any(|a| a.ends_with(b"nodeos-vm")))
            .unwrap_or(false)
    }
}

fn vms_dir() -> anyhow::Result<PathBuf> {
    let dir = runtime::base()?.join("vms");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Every VM whose keeper lives; the folders of the others are removed.
fn live_vms() -> anyhow::Result<Vec<(Record, PathBuf)>> {
    let mut vms = Vec::new();
    for entry in fs::read_dir(vms_dir()?)? {
        let dir = entry?.path();
        let record = Record::load(&dir);
        match record {
            Some(r) if r.keeper_alive() => vms.push((r, dir)),
            _ => {
                // A keeper writes its state before anything else, so a folder without one
                // is at most a moment old; leave those.
                let young = fs::metadata(&dir)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(5))
                    .unwrap_or(false);
                if record.is_some() || !young {
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
    }
    vms.sort_by_key(|(r, _)| r.started);
    Ok(vms)
}

/// The live VM `id` names (exactly or as a unique prefix).
fn find(id: &str) -> anyhow::Result<(Record, PathBuf)> {
    let mut matches: Vec<_> = live_vms()?
        .into_iter()
        .filter(|(r, _)| r.id.starts_with(id))
        .collect();
    match matches.len() {
        0 => bail!("no running VM {id:?}; `nodeos-vm ps` lists them"),
        1 => Ok(matches.remove(0)),
        n => bail!("{n} VMs start with {id:?}; give more of the ID"),
    }
}

fn new_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a VM ID")?;
    Ok(hex::encode(bytes))
}

/// `start --detach`: starts a keeper and waits until its VM's agent is ready.
pub fn detach(vm: &VmArgs) -> anyhow::Result<u8> {
    // Fail on bad options here, where the user sees it, not in the keeper: builds what is
    // missing and creates the user's disk, which the keeper then takes.
    drop(vm.config()?);
    let id = new_id()?;
    let dir = vms_dir()?.join(&id);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join(REQUEST_FILE), serde_json::to_vec(vm)?)
        .with_context(|| format!("writing the VM's request in {}", dir.display()))?;

    let (read, write) = nix::unistd::pipe().context("creating a pipe")?;
    let exe = std::env::current_exe().context("finding nodeos-vm's own binary")?;
    let write_fd = write.into_raw_fd();
    let mut keeper = std::process::Command::new(exe);
    keeper
        .args(["keep", &id])
        .env(READY_FD_ENV, write_fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe; the keeper leaves our session so that it
    // outlives this terminal.
    unsafe {
        keeper.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let spawned = keeper.spawn();
    // SAFETY: write_fd came from into_raw_fd above and nothing else closed it.
    drop(unsafe { OwnedFd::from_raw_fd(write_fd) });
    spawned.context("starting the VM's keeper process")?;
    let mut report = String::new();
    fs::File::from(read)
        .read_to_string(&mut report)
        .context("waiting for the VM")?;
    if report.trim() == "ready" {
        println!("{id}");
        Ok(0)
    } else {
        let _ = fs::remove_dir_all(&dir);
        eprintln!(
            "nodeos-vm: the detached VM did not start: {}",
            if report.trim().is_empty() {
                "its keeper ended without a word"
            } else {
                report.trim()
            }
        );
        Ok(status::HOST_FAILURE)
    }
}

/// `nodeos-vm keep ID`, the keeper: boots the VM that `start --detach` asked for in the VM's
/// folder and owns it until it is stopped or ends. Reports readiness (or the reason it failed)
/// on the descriptor the parent gave.
pub fn keep(args: IdArg) -> anyhow::Result<u8> {
    let id = args.id.as_str();
    let ready_fd: i32 = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .context("the keeper runs only under `nodeos-vm start --detach`")?;
    // SAFETY: the parent handed us this descriptor (the write end of its pipe) and nothing
    // else in this process uses it.
    let report = unsafe { OwnedFd::from_raw_fd(ready_fd) };
    // Nothing we start (QEMU, passt) may hold it: the parent waits for its end of file.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&report),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("setting close-on-exec on the ready descriptor")?;
    let mut report = Some(fs::File::from(report));
    // Caught from now on, so that one that comes while the VM boots stops it once booted.
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).context("catching signals")?;

    let result = vms_dir()
        .and_then(|dir| {
            let request =
                fs::read(dir.join(id).join(REQUEST_FILE)).context("reading the VM's request")?;
            serde_json::from_slice::<VmArgs>(&request).context("reading the VM's request")
        })
        .and_then(|vm| keep_vm(&vm, id, &mut report, signals));
    if let (Err(e), Some(report)) = (&result, report.as_mut()) {
        let _ = write!(report, "{e:#}");
    }
    if let Ok(dir) = vms_dir() {
        let _ = fs::remove_dir_all(dir.join(id));
    }
    result.map(|()| 0)
}

fn keep_vm(
    vm: &VmArgs,
    id: &str,
    report: &mut Option<fs::File>,
    mut signals: Signals,
) -> anyhow::Result<()> {
    let dir = vms_dir()?.join(id);
    let backend = choose_backend(vm.backend, vm.arch, &vm.jail, true)?;
    let mut record = Record {
        id: id.to_string(),
        pid: std::process::id() as i32,
        backend: backend.name().to_string(),
        memory_mib: vm.memory,
        cpus: vm.cpus,
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        running: false,
        ports: vm.publish.clone(),
        paused: false,
    };
    record.save(&dir).context("writing the VM's state")?;
    let (mut config, _held) = vm.config()?;
    config.shell = Shell::None;
    config.agent_socket = Some(dir.join("agent.sock"));
    vm.restore_or_boot(&backend, &mut config)?;
    let sandbox = Sandbox::boot(backend, config, ConsoleLog::File(dir.join("console.log")))?;
    let stop = sandbox.stop_signal().clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop.stop();
            }
        })
        .context("starting the signal thread")?;
    if let Err(e) = sandbox.wait_ready(BOOT_TIMEOUT) {
        let _ = sandbox.stop();
        return Err(e.into());
    }
    record.running = true;
    record.save(&dir).context("writing the VM's state")?;
    let control =
        UnixListener::bind(dir.join(CONTROL_SOCKET)).context("creating the VM's control socket")?;
    if let Some(mut report) = report.take() {
        // Closing it (end of scope) ends the parent's wait.
        report.write_all(b"ready\n")?;
    }
    // Until the VM ends.
    serve_control(&control, &sandbox, &mut record, &dir);
    sandbox.stop()?;
    Ok(())
}

/// The keeper's work while its VM runs: takes `pause` and `resume` on `control`, one client at
/// a time, recording the VM's state for `ps`; returns once the VM has ended.
fn serve_control(control: &UnixListener, sandbox: &Sandbox, record: &mut Record, dir: &Path) {
    use std::os::fd::AsRawFd;
    let fds = [sandbox.ended().as_raw_fd(), control.as_raw_fd()];
    while vmm::poll::first_readable(&fds, None) == Some(1) {
        let Ok((conn, _)) = control.accept() else {
            continue;
        };
        let _ = conn.set_read_timeout(Some(CONTROL_TIMEOUT));
        let mut line = String::new();
        let _ = BufReader::new(&conn).take(64).read_line(&mut line);
        let done = match line.trim() {
            "pause" => sandbox.pause().map(|()| true),
            "resume" => sandbox.resume().map(|()| false),
            other => {
                let _ = writeln!(&conn, "error: unknown request {other:?}");
                continue;
            }
        };
        let answer = match done {
            Ok(paused) => {
                record.paused = paused;
                match record.save(dir) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("error: writing the VM's state: {e}"),
                }
            }
            Err(e) => format!("error: {}", vmm::error_chain::one_line(&e)),
        };
        let _ = writeln!(&conn, "{answer}");
    }
}

/// `nodeos-vm pause ID`: stops the VM's vCPUs; its memory, processes and connections stay.
pub fn pause(args: IdArg) -> anyhow::Result<u8> {
    ask_keeper(&args.id, "pause")
}

/// `nodeos-vm unpause ID`: lets a paused VM go on.
pub fn unpause(args: IdArg) -> anyhow::Result<u8> {
    ask_keeper(&args.id, "resume")
}

/// Sends `request` to the keeper of VM `id` and prints the ID once it is done.
fn ask_keeper(id: &str, request: &str) -> anyhow::Result<u8> {
    let (record, dir) = find(id)?;
    if !record.running {
        bail!("VM {} is still booting; try again in a moment", record.id);
    }
    let conn = UnixStream::connect(dir.join(CONTROL_SOCKET))
        .with_context(|| format!("reaching the keeper of VM {}", record.id))?;
    conn.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    writeln!(&conn, "{request}")?;
    let mut answer = String::new();
    BufReader::new(&conn)
        .read_line(&mut answer)
        .with_context(|| format!("waiting for the keeper of VM {}", record.id))?;
    match answer.trim() {
        "ok" => {
            println!("{}", record.id);
            Ok(0)
        }
        "" => bail!("the keeper of VM {} ended without an answer", record.id),
        said => bail!(
            "VM {}: {}",
            record.id,
            said.strip_prefix("error: ").unwrap_or(said)
        ),
    }
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// A JSON array of the VMs (id, pid, backend, memory_mib, cpus, started, running, ports,
    /// paused) instead of a table.
    #[arg(long)]
    json: bool,
}

/// `nodeos-vm ps [--json]`.
pub fn ps(args: PsArgs) -> anyhow::Result<u8> {
    let vms: Vec<Record> = live_vms()?.into_iter().map(|(r, _)| r).collect();
    if args.json {
        println!("{}", serde_json::to_string(&vms)?);
        return Ok(0);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    println!(
        "{:<12}  {:<8}  {:>6}  {:>4}  {:>8}  {:>7}  PORTS",
        "ID", "BACKEND", "MEMORY", "CPUS", "UP", "STATE"
    );
    for r in vms {
        println!(
            "{:<12}  {:<8}  {:>5}M  {:>4}  {:>7}s  {:>7}  {}",
            r.id,
            r.backend,
            r.memory_mib,
            r.cpus,
            now.saturating_sub(r.started),
            match (r.running, r.paused) {
                (_, true) => "paused",
                (true, false) => "running",
                (false, false) => "booting",
            },
            r.ports
                .iter()
                .map(|p| format!("{}->{}/{}", p.host, p.guest_port, p.protocol))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(0)
}

/// `nodeos-vm exec ID -- CMD`.
pub fn exec(args: ExecArgs) -> anyhow::Result<u8> {
    let socket = agent_socket(&args.id)?;
    let command = args
        .options
        .command(args.command.into_iter().map(OsString::into_vec).collect())?;
    // The keeper's end is seen as the agent connection closing.
    let never = EventFd::new(libc::EFD_NONBLOCK)?;
    let outcome = agent::exec(&socket, &command, &never, None)?;
    Ok(exit_status(&outcome, &command))
}

/// The agent socket of running VM `id` (a unique prefix of its ID).
pub fn agent_socket(id: &str) -> anyhow::Result<PathBuf> {
    let (record, dir) = find(id)?;
    if !record.running {
        bail!("VM {} is still booting; try again in a moment", record.id);
    }
    if record.paused {
        bail!(
            "VM {id} is paused; `nodeos-vm unpause {id}` first",
            id = record.id
        );
    }
    Ok(dir.join("agent.sock"))
}

/// `nodeos-vm logs ID`: the VM's console output so far, its control characters escaped
/// (`printable`) unless `--raw`.
pub fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    let (_, dir) = find(&args.id)?;
    // The older part first, when the log has started again (console::capture_to_file).
    let mut log = Vec::new();
    for file in ["console.log.1", "console.log"] {
        log.extend(fs::read(dir.join(file)).unwrap_or_default());
    }
    let out = if args.raw {
        log
    } else {
        printable::escape(&log)
    };
    std::io::stdout().write_all(&out)?;
    Ok(0)
}

/// `nodeos-vm stop ID`: ends the VM and waits until its keeper is gone.
pub fn stop(args: IdArg) -> anyhow::Result<u8> {
    let (record, dir) = find(&args.id)?;
    let pid = nix::unistd::Pid::from_raw(record.pid);
    nix::sys::signal::kill(pid, Signal::SIGTERM)
        .with_context(|| format!("signalling the keeper of {}", record.id))?;
    let started = std::time::Instant::now();
    while record.keeper_alive() {
        if started.elapsed() > STOP_GRACE {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_dir_all(dir);
    println!("{}", record.id);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::vm::Protocol;

    #[test]
    fn records_round_trip_and_bad_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let r = Record {
            id: "0123456789ab".into(),
            pid: 42,
            backend: "kvm".into(),
            memory_mib: 512,
            cpus: 2,
            started: 1_700_000_000,
            running: true,
            ports: vec![PublishedPort {
                host: "127.0.0.1:8080".parse().unwrap(),
                guest_port: 80,
                protocol: Protocol::Tcp,
            }],
            paused: true,
        };
        r.save(dir.path()).unwrap();
        assert_eq!(Record::load(dir.path()), Some(r));
        fs::write(dir.path().join(STATE_FILE), "{\"id\": \"x\"}").unwrap();
        assert_eq!(Record::load(dir.path()), None);
    }
}
