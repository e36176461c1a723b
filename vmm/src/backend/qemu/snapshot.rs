//! Snapshots on QEMU (`Start::Save`, `Start::Restore`): QEMU's own migration stream, written to
//! a file descriptor we pass it (`getfd`, `migrate fd:`) and read back with `-incoming fd:N`,
//! as the payload of our snapshot file (crate::snapshot::format) behind a [`Header`] that names
//! the QEMU build and accelerator, the identity and the VM's shape. QEMU does the saving and
//! restoring of CPUs, devices and memory; we check what is restored and when to run it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::args::Handed;
use super::qmp::{Qmp, QmpError};
use super::{Accel, QemuError};
use crate::snapshot::{format, Error as FormatError, Header};
use crate::vm::{Start, StopSignal, VmSpec};

/// The name QEMU knows the snapshot's descriptor by.
const FD_NAME: &str = "snapshot";
/// How often a migration's progress is asked for.
const POLL: Duration = Duration::from_millis(2);
/// The longest a save or a restore may take.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("snapshot {0}")]
    Open(std::path::PathBuf, #[source] std::io::Error),
    #[error("snapshot: QEMU's migration {0}")]
    Migration(String),
    #[error("snapshot: QEMU took more than {0:?}")]
    TimedOut(Duration),
    #[error("snapshot: the guest never reached its save point")]
    NoSavePoint,
    #[error("snapshot: cannot write its state: {0}")]
    State(String),
}

/// The snapshot side of one QEMU run: QEMU's monitor, and what to do with it.
pub struct Snapshot {
    /// QEMU's number for its end of the monitor's socket pair.
    pub qmp_fd: RawFd,
    /// QEMU's number for the snapshot it restores (`-incoming fd:N`).
    pub incoming_fd: Option<RawFd>,
    qmp: UnixStream,
    job: Job,
}

enum Job {
    Save { file: File, at: u8, header: Header },
    Restore,
}

/// How a snapshot job ended well.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    /// The VM is saved; QEMU was told to quit.
    Saved,
    /// The VM was restored and runs.
    Restored,
}

/// The thread of a started [`Snapshot`] job.
pub type JobThread = thread::JoinHandle<Result<Done, SnapshotError>>;
/// The byte a save waits for and where the boot timer says it came.
pub type SaveTrigger = (u8, mpsc::Sender<()>);

impl Snapshot {
    /// The snapshot side of running `spec` (none for a plain boot): the file made or checked,
    /// the descriptors QEMU is to get added to `handed`.
    pub fn prepare(
        spec: &VmSpec,
        accel: Accel,
        handed: &mut Handed,
    ) -> Result<Option<Snapshot>, QemuError> {
        let mut incoming_fd = None;
        let job = match &spec.start {
            Start::Boot => return Ok(None),
            Start::Save { to, at, identity } => Job::Save {
                file: create(to)?,
                at: *at,
                header: header(spec, identity, accel),
            },
            Start::Restore { from, identity } => {
                let file = open(from, &header(spec, identity, accel))?;
                incoming_fd = Some(handed.push(file.into()));
                Job::Restore
            }
        };
        let (qmp, qemus) = UnixStream::pair().map_err(QemuError::Spawn)?;
        Ok(Some(Snapshot {
            qmp_fd: handed.push(qemus.into()),
            incoming_fd,
            qmp,
            job,
        }))
    }

    /// Runs the job on a thread of its own, once QEMU has started: a save waits for its byte
    /// (the trigger returned, for the boot timer), a restore runs the VM once QEMU has loaded
    /// it and records when in `running` (a restored guest's init ran long ago). A job that
    /// fails signals `failed`, which ends QEMU.
    pub fn start(
        self,
        failed: StopSignal,
        running: Arc<Mutex<Option<Duration>>>,
        started: Instant,
    ) -> Result<(Option<SaveTrigger>, JobThread), QemuError> {
        let (trigger, triggered) = mpsc::channel();
        let save_at = match &self.job {
            Job::Save { at, .. } => Some((*at, trigger)),
            Job::Restore => None,
        };
        let thread = thread::Builder::new()
            .name("qemu-snapshot".into())
            .spawn(move || {
                let done = self.run(triggered);
                if let Ok(Done::Restored) = done {
                    running.lock().unwrap().get_or_insert(started.elapsed());
                }
                if matches!(&done, Err(e) if !e.qemu_ended()) {
                    failed.stop();
                }
                done
            })
            .map_err(QemuError::Spawn)?;
        Ok((save_at, thread))
    }

    fn run(self, triggered: mpsc::Receiver<()>) -> Result<Done, SnapshotError> {
        match self.job {
            Job::Save { file, header, .. } => {
                // The sender goes with the boot timer's thread, when QEMU ends.
                triggered.recv().map_err(|_| SnapshotError::NoSavePoint)?;
                let mut qmp = Qmp::open(self.qmp)?;
                save(&mut qmp, &file, &header)?;
                qmp.execute("quit", json!({}))?;
                Ok(Done::Saved)
            }
            Job::Restore => {
                resume(&mut Qmp::open(self.qmp)?)?;
                Ok(Done::Restored)
            }
        }
    }
}

impl SnapshotError {
    /// Whether QEMU ended first (what it said then tells more).
    pub fn qemu_ended(&self) -> bool {
        matches!(
            self,
            SnapshotError::NoSavePoint | SnapshotError::Qmp(QmpError::Closed)
        )
    }
}

/// What a snapshot of `spec` by this QEMU (with `accel`) says it is.
fn header(spec: &VmSpec, identity: &str, accel: Accel) -> Header {
    // QEMU's migration format follows its build; under KVM the guest saw the host's CPU too.
    let build = super::build(spec.arch);
    let host = match accel {
        Accel::Tcg => format!("qemu {build} tcg"),
        Accel::Kvm => format!("qemu {build} kvm on {}", cpu_model()),
    };
    Header::new(spec, identity, host)
}

fn cpu_model() -> String {
    super::cpuinfo()
        .lines()
        .find_map(|l| Some(l.strip_prefix("model name")?.split(':').nth(1)?.trim()))
        .unwrap_or("an unknown CPU")
        .to_string()
}

/// Creates (or empties) the snapshot file `to`, readable by its owner only.
fn create(to: &Path) -> Result<File, SnapshotError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| SnapshotError::Open(to.to_path_buf(), e))
}

/// Opens the snapshot `from` for a restore into the VM `expected` describes, refusing one that
/// is not whole or not that VM's; the file is positioned at QEMU's stream.
fn open(from: &Path, expected: &Header) -> Result<File, SnapshotError> {
    let mut file = File::open(from).map_err(|e| SnapshotError::Open(from.to_path_buf(), e))?;
    let parts = format::read_parts(&file)?;
    let saved = crate::snapshot::header_of(&parts.state)?;
    expected.check(&saved)?;
    file.seek(SeekFrom::Start(parts.payload_offset))
        .map_err(|e| SnapshotError::Open(from.to_path_buf(), e))?;
    Ok(file)
}

/// Saves the VM QEMU runs into `file`, stopped first, and flushes it: QEMU migrates into it
/// past our state, then the state and preamble are written.
fn save(qmp: &mut Qmp, mut file: &File, header: &Header) -> Result<(), SnapshotError> {
    // A state of the header alone: QEMU's stream holds the rest.
    let state = serde_json::to_vec(&json!({ "header": header }))
        .map_err(|e| SnapshotError::State(e.to_string()))?;
    let offset = format::payload_offset(state.len());
    let io = |e| SnapshotError::Open("(the snapshot being written)".into(), e);
    file.set_len(0).map_err(io)?;
    // QEMU writes from the descriptor's offset, which its copy shares with ours.
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    qmp.execute("stop", json!({}))?;
    qmp.pass_fd(FD_NAME, file.as_fd())?;
    qmp.execute("migrate", json!({ "uri": format!("fd:{FD_NAME}") }))?;
    wait_for(|| {
        let status = qmp.execute("query-migrate", json!({}))?;
        match status.get("status").and_then(|s| s.as_str()) {
            Some("completed") => Ok(true),
            Some(ended @ ("failed" | "cancelled")) => Err(SnapshotError::Migration(format!(
                "{ended}: {}",
                status
                    .get("error-desc")
                    .and_then(|d| d.as_str())
                    .unwrap_or("no reason given")
            ))),
            _ => Ok(false),
        }
    })?;
    let len = file.metadata().map_err(io)?.len();
    format::finish(file, &state, len.saturating_sub(offset))?;
    Ok(())
}

/// Waits until QEMU, started with `-incoming`, has loaded the snapshot, and runs the VM.
fn resume(qmp: &mut Qmp) -> Result<(), SnapshotError> {
    wait_for(|| {
        let status = qmp.execute("query-status", json!({}))?;
        Ok(status.get("status").and_then(|s| s.as_str()) != Some("inmigrate"))
    })?;
    qmp.execute("cont", json!({}))?;
    Ok(())
}

/// Polls `done` until it says so, for at most [`DEADLINE`].
fn wait_for(mut done: impl FnMut() -> Result<bool, SnapshotError>) -> Result<(), SnapshotError> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > DEADLINE {
            return Err(SnapshotError::TimedOut(DEADLINE));
        }
        thread::sleep(POLL);
    }
    Ok(())
}
