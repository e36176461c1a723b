//! One instance of an app: a microVM of its own with the app's package as a read-only volume
//! at /app and the runner (runner.js) started through the guest agent, kept warm between calls.
//! One call at a time; an instance whose call timed out or whose runner died is never reused.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::{self, error::TrySendError};
use vmm::vm::StopSignal;
use vmm_sys_util::eventfd::EventFd;

use super::logs::{Logs, Stream};
use super::roster::Member;
use super::vm::{self, Machine, Vm, Vms};
use sandbox::agent::{self, Command, Event, Outcome, Session, Wake};
use sandbox::booted;
use sandbox::volume::Volume;

/// Where the app's package is mounted in its VMs, and where the host puts the runner in it
/// (`.cjs`: CommonJS also in a package of `"type": "module"`).
pub const APP_DIR: &str = "/app";
pub const RUNNER_PATH: &str = ".nodeos/runner.cjs";
pub const RUNNER_JS: &str = include_str!("runner.js");
/// How long the runner may take to load the app once the VM is up.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Runner messages queued for the instance's owner. The runner answers one call at a time, so
/// more than a few queued means it writes messages nobody asked for: it is flooding, and is
/// stopped rather than held in memory.
const QUEUED_MESSAGES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("starting the app's microVM")]
    Start(#[from] vm::Error),
    #[error("booting the app's microVM")]
    Vm(#[from] booted::Error),
    #[error("the app failed to load: {}", .0.message)]
    Load(JsError),
    #[error("the app's runner ended while loading the app: {0}")]
    Died(String),
    #[error("the app did not load within {LOAD_TIMEOUT:?}")]
    LoadTimeout,
    #[error("the boot task failed: {0}")]
    Task(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the call ran longer than the app's timeout ({0:?}); its microVM was stopped and will be replaced")]
    Timeout(Duration),
    #[error("the app's microVM or runner died during the call ({0}); the next call gets a fresh microVM")]
    Died(String),
}

/// An exception as the runner reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsError {
    pub name: String,
    pub message: String,
    pub stack: Option<String>,
}

/// What the app's main module exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exports {
    pub handler: bool,
    pub fetch: bool,
}

/// One version of one app, as its VMs boot it.
pub struct AppSpec {
    pub name: String,
    /// The unpacked package (with the runner) at /app, and its packed ext4 image.
    pub volume: Volume,
    pub image: PathBuf,
    pub env: Vec<(String, String)>,
    pub memory_mib: u32,
    pub cpus: u8,
}

/// What the runner said, as the reader thread passes it on.
enum Message {
    Ready(Exports),
    Fatal(JsError),
    Reply {
        id: String,
        outcome: Result<Value, JsError>,
    },
    Died(String),
}

pub struct Instance {
    /// Stopped when the instance is dropped.
    _vm: Vm,
    input: agent::Input,
    messages: mpsc::Receiver<Message>,
    /// The call in flight, for output the runner could not tag.
    current: Arc<Mutex<Option<String>>>,
    /// Not to be reused: a call did not end cleanly.
    broken: bool,
    /// Set when the runner's output ended (its reader is gone): the VM is dead or stopped.
    ended: Arc<AtomicBool>,
    pub exports: Exports,
    pub last_used: Instant,
    /// Its entry in its pool's roster.
    pub member: Member,
}

impl Instance {
    /// Boots a VM for `app` and waits until the runner has loaded it.
    pub async fn boot(
        machine: Arc<Machine>,
        app: Arc<AppSpec>,
        logs: Arc<Logs>,
        vms: Vms,
        member: Member,
    ) -> Result<Instance, BootError> {
        let vm = boot_vm(machine, app.clone(), vms).await?;
        Instance::start(vm, app, logs, member).await
    }

    /// Starts the runner in `vm` (booted by [`boot_vm`]) and waits until it has loaded the app.
    pub async fn start(
        vm: Vm,
        app: Arc<AppSpec>,
        logs: Arc<Logs>,
        member: Member,
    ) -> Result<Instance, BootError> {
        let current = Arc::new(Mutex::new(None));
        let ended = Arc::new(AtomicBool::new(false));
        let (tx, mut messages) = mpsc::channel(QUEUED_MESSAGES);
        let reader = Reader {
            tx,
            logs,
            current: current.clone(),
            ended: ended.clone(),
        };
        let (vm, input) = tokio::task::spawn_blocking(move || {
            start_runner(&vm, &app, reader).map(|input| (vm, input))
        })
        .await
        .map_err(|e| BootError::Task(e.to_string()))??;
        let first = tokio::time::timeout(LOAD_TIMEOUT, messages.recv()).await;
        let exports = match first {
            Err(_) => return Err(BootError::LoadTimeout),
            Ok(Some(Message::Ready(exports))) => exports,
            Ok(Some(Message::Fatal(error))) => return Err(BootError::Load(error)),
            Ok(Some(Message::Died(why))) => return Err(BootError::Died(why)),
            Ok(Some(Message::Reply { .. })) | Ok(None) => {
                return Err(BootError::Died("it answered a call nobody made".into()))
            }
        };
        Ok(Instance {
            _vm: vm,
            input,
            messages,
            current,
            broken: false,
            ended,
            exports,
            last_used: Instant::now(),
            member,
        })
    }

    /// Sends `request` (an object with an `id`) to the runner and waits for its answer: the
    /// runner's `Ok` (the answer object) or the app's exception.
    pub async fn call(
        &mut self,
        id: &str,
        request: &Value,
        timeout: Duration,
    ) -> Result<Result<Value, JsError>, CallError> {
        self.broken = true;
        *self.current.lock().unwrap() = Some(id.to_string());
        let mut line = serde_json::to_vec(request).expect("a JSON value serializes");
        line.push(b'\n');
        let input = self.input.clone();
        let sent = match tokio::task::spawn_blocking(move || input.write(&line)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            return Err(CallError::Died(format!(
                "writing the call to the runner: {e}"
            )));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Err(_) => return Err(CallError::Timeout(timeout)),
                Ok(None) => return Err(CallError::Died("the runner's output ended".into())),
                Ok(Some(Message::Died(why))) => return Err(CallError::Died(why)),
                Ok(Some(Message::Reply {
                    id: answered,
                    outcome,
                })) if answered == id => {
                    *self.current.lock().unwrap() = None;
                    self.broken = false;
                    self.last_used = Instant::now();
                    return Ok(outcome);
                }
                Ok(Some(_)) => {}
            }
        }
    }

    /// Whether it can take another call: its last call ended cleanly and its runner still runs.
    pub fn reusable(&self) -> bool {
        !self.broken && !self.ended.load(Ordering::SeqCst)
    }
}

/// Boots a standby VM for `app` ([`boot_vm`]), Node warmed up in it ([`Vm::warmed_up`]).
pub async fn boot_standby(
    machine: Arc<Machine>,
    app: Arc<AppSpec>,
    vms: Vms,
) -> Result<Vm, BootError> {
    let vm = boot_vm(machine, app.clone(), vms).await?;
    let warmed = tokio::task::spawn_blocking(move || vm.warmed_up(&format!("{}'s", app.name)));
    warmed.await.map_err(|e| BootError::Task(e.to_string()))
}

/// Boots a VM for `app`: its package at /app, no runner yet.
pub async fn boot_vm(machine: Arc<Machine>, app: Arc<AppSpec>, vms: Vms) -> Result<Vm, BootError> {
    let vm = tokio::task::spawn_blocking(move || {
        Vm::boot(&machine, &vms, app.memory_mib, app.cpus, |config| {
            config.volumes = vec![app.volume.disk(app.image.clone())];
        })
    });
    Ok(vm.await.map_err(|e| BootError::Task(e.to_string()))??)
}

/// Starts the runner in `vm` and the thread that reads it (blocking).
fn start_runner(vm: &Vm, app: &AppSpec, reader: Reader) -> Result<agent::Input, BootError> {
    let sandbox = vm.sandbox();
    let mut env = vec![format!("NODEOS_APP={}", app.name).into_bytes()];
    env.extend(app.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()));
    let session = sandbox.session(&Command {
        argv: vec![
            b"node".to_vec(),
            format!("{APP_DIR}/{RUNNER_PATH}").into_bytes(),
        ],
        env,
        cwd: Some(APP_DIR.as_bytes().to_vec()),
        stdin: true,
        timeout: None,
        container: None,
        tty: None,
    })?;
    let input = session.input();
    let vm_ended = sandbox
        .ended()
        .try_clone()
        .map_err(|e| BootError::Vm(booted::Error::Setup(e)))?;
    let stop = sandbox.stop_signal().clone();
    std::thread::Builder::new()
        .name(format!("runner-{}", app.name))
        .spawn(move || reader.read(session, vm_ended, &stop))
        .map_err(|e| BootError::Vm(booted::Error::Setup(e)))?;
    Ok(input)
}

/// The thread that reads one runner: its answers go to the instance's owner, its tagged output
/// to the app's logs, until it ends.
struct Reader {
    tx: mpsc::Sender<Message>,
    logs: Arc<Logs>,
    /// The call in flight, for output the runner could not tag.
    current: Arc<Mutex<Option<String>>>,
    /// Set when reading ends.
    ended: Arc<AtomicBool>,
}

impl Reader {
    /// Reads until the runner ends; stops the VM (through `stop`) when the runner floods its
    /// owner with messages nobody reads.
    fn read(self, mut session: Session, vm_ended: EventFd, stop: &StopSignal) {
        let (mut out, mut err) = (Lines::default(), Lines::default());
        let current = || self.current.lock().unwrap().clone();
        let why = 'read: loop {
            match session.next(&vm_ended, &[], None) {
                Ok(Wake::Event(Event::Stdout(data))) => {
                    for line in out.push(&data) {
                        let Some(message) = parse_message(&line) else {
                            self.logs.push(current(), Stream::Stdout, line);
                            continue;
                        };
                        if let Err(TrySendError::Full(_)) = self.tx.try_send(message) {
                            stop.stop();
                            break 'read format!(
                                "the runner wrote more than {QUEUED_MESSAGES} messages nobody \
                                 asked for; its microVM was stopped"
                            );
                        }
                    }
                }
                Ok(Wake::Event(Event::Stderr(data))) => {
                    for line in err.push(&data) {
                        match serde_json::from_str::<Tagged>(&line) {
                            Ok(t) => self.logs.push(
                                t.id.or_else(current),
                                Stream::tagged(&t.stream),
                                t.text,
                            ),
                            Err(_) => self.logs.push(current(), Stream::Stderr, line),
                        }
                    }
                }
                Ok(Wake::Event(Event::Ended(outcome))) => break describe(&outcome),
                Ok(Wake::Extra(_) | Wake::Event(Event::Started(_))) => {}
                Err(agent::Error::EndedDuringCommand) => break "the microVM ended".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        self.ended.store(true, Ordering::SeqCst);
        self.logs.push(current(), Stream::System, why.clone());
        // A full queue is read by a call in flight, or dropped with the instance.
        let _ = self.tx.try_send(Message::Died(why));
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Exited(code) => format!("the runner exited with status {code}"),
        Outcome::Signaled(signal) => format!("the runner was killed by signal {signal}"),
        Outcome::TimedOut(_) => "the runner timed out".into(),
        Outcome::NotFound(m) | Outcome::NotExecutable(m) => {
            format!("the runner did not start: {m}")
        }
    }
}

/// A line the runner wrote to stderr for the app.
#[derive(Deserialize)]
struct Tagged {
    id: Option<String>,
    stream: String,
    text: String,
}

fn parse_message(line: &str) -> Option<Message> {
    let v: Value = serde_json::from_str(line).ok()?;
    if let Some(ready) = v.get("ready") {
        return serde_json::from_value(ready.clone())
            .ok()
            .map(Message::Ready);
    }
    if let Some(fatal) = v.get("fatal") {
        return serde_json::from_value(fatal.clone())
            .ok()
            .map(Message::Fatal);
    }
    let id = v.get("id")?.as_str()?.to_string();
    let outcome = match v.get("ok")?.as_bool()? {
        true => Ok(v),
        false => Err(serde_json::from_value(v.get("error")?.clone()).ok()?),
    };
    Some(Message::Reply { id, outcome })
}

/// Splits a byte stream into lines (lossy UTF-8), keeping a partial last line for later.
#[derive(Default)]
struct Lines(Vec<u8>);

/// Longest line kept whole; longer ones are cut. Above the runner's largest answer
/// (MAX_ANSWER_BYTES in runner.js, 6 MiB), so that every answer arrives whole.
const MAX_LINE: usize = 7 << 20;

impl Lines {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        // Only the new bytes can hold a line's end; the buffer is cut once, after the last one.
        let searched = self.0.len();
        self.0.extend_from_slice(data);
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, _) in self.0[searched..]
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
        {
            let end = searched + i;
            lines.push(String::from_utf8_lossy(&self.0[start..end]).into_owned());
            start = end + 1;
        }
        self.0.drain(..start);
        if self.0.len() > MAX_LINE {
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.0)).into_owned());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_keep_the_rest() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"a\nb"), vec!["a"]);
        assert_eq!(l.push(b"c\n\n"), vec!["bc", ""]);
        assert!(l.push(b"x").is_empty());
    }

    #[test]
    fn runner_messages() {
        assert!(matches!(
            parse_message(r#"{"ready":{"handler":true,"fetch":false}}"#),
            Some(Message::Ready(Exports {
                handler: true,
                fetch: false
            }))
        ));
        assert!(matches!(
            parse_message(r#"{"id":"a","ok":true,"result":1}"#),
            Some(Message::Reply { id, outcome: Ok(_) }) if id == "a"
        ));
        assert!(matches!(
            parse_message(
                r#"{"id":"a","ok":false,"error":{"name":"E","message":"m","stack":null}}"#
            ),
            Some(Message::Reply {
                outcome: Err(JsError { .. }),
                ..
            })
        ));
        assert!(parse_message("hello").is_none());
        assert!(parse_message(r#"{"id":"a"}"#).is_none());
    }
}
