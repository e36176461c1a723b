//! Sandboxes: microVMs a client creates through the admin API (`sandbox_api`), runs commands
//! in (`sandbox_exec`) and reads and writes the files of (`sandbox::guest_files`), until it deletes
//! them or they pass their idle or lifetime limit. Each is a VM of its own, like an app's
//! instance, restored from the template when there is one; with a `user`, that user's
//! persistent disk is its writable layer, as with `nodeos-vm start --user`. A sandbox can be
//! paused (its VM's vCPUs stop, its memory and processes stay) and resumed; its idle limit
//! does not count while it is paused, its lifetime does.
//!
//! Once a sandbox of the default shape (the default memory and vCPUs, no user, no network) has
//! been asked for, one more is kept ready: a standby VM, restored and its Node warmed up
//! ([`Vm::warm_up`]) while no sandbox runs a command, that the next such create takes at once;
//! [`STANDBY_KEPT`] after the last such create, it stops.
//! It belongs to nobody until then: no command, file or setting of a tenant reaches it before
//! it is handed out, and a tenant's `env` is added to each command (`sandbox_api`), not to it.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use vmm::backend::Backend;
use vmm::vm::NetSpec;

use super::clock::now_ms;
use super::vm::{self, Machine, Standby, Vm, Vms};
use sandbox::agent::{Input, Outcome};
use sandbox::users::{self, DiskTools, UserDisk, Users};
use sandbox::vm_config;

/// How many sandboxes one serve runs at most.
pub const MAX_SANDBOXES: usize = 64;
/// How many commands run at once in one sandbox at most.
pub const MAX_RUNNING_EXECS: usize = 32;
/// How many ended commands a sandbox remembers (for `GET /sandboxes/{id}`).
const KEPT_ENDED_EXECS: usize = 16;
/// How long after the last create of the default shape a standby VM is kept.
const STANDBY_KEPT: Duration = Duration::from_secs(600);
/// A sandbox's vCPUs when its creator names none.
pub const DEFAULT_CPUS: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this server runs {MAX_SANDBOXES} sandboxes already; delete one first")]
    Full,
    #[error("the sandbox's user")]
    User(#[from] users::Error),
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error("the boot task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Pause(#[from] sandbox::booted::Error),
}

/// What a sandbox is made of, as its creator asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub memory_mib: u32,
    pub cpus: u8,
    /// The persistent user whose disk is its writable layer; none for a fresh one.
    pub user: Option<String>,
    /// A network interface (NAT to the host's network, not to its loopback).
    pub net: bool,
    /// `NAME=VALUE` added to every command's environment.
    pub env: Vec<(String, String)>,
    /// Deleted when no command or transfer has run for this long.
    pub idle: Duration,
    /// Deleted this long after its creation, whatever it does.
    pub lifetime: Duration,
}

impl Options {
    /// Whether the standby VM fits it: the default memory and vCPUs, no user, no network.
    fn standby_shaped(&self) -> bool {
        self.user.is_none()
            && !self.net
            && self.memory_mib == default_memory_mib()
            && self.cpus == DEFAULT_CPUS
    }
}

/// A sandbox's memory when its creator names none, in MiB.
fn default_memory_mib() -> u32 {
    vm_config::memory_mib(vm_config::DEFAULT_MEMORY).expect("the default memory size is valid")
}

/// The sandboxes of one server.
pub struct Sandboxes {
    machine: Arc<Machine>,
    vms: Vms,
    all: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Sandboxes being created (counted against [`MAX_SANDBOXES`]).
    creating: Mutex<usize>,
    standby: Mutex<Spare>,
    /// Whether a standby VM is kept at all.
    keeps_standby: bool,
}

/// The VM of the default shape kept ready for the next create that fits it.
#[derive(Default)]
struct Spare {
    /// Until when one is kept: [`STANDBY_KEPT`] after the last create that fit it.
    wanted_until: Option<Instant>,
    /// Booting and warming up, or ready.
    vm: Option<JoinHandle<Result<Vm, vm::Error>>>,
}

/// One sandbox: its VM, stopped when the last handle on it is dropped.
pub struct Sandbox {
    pub id: String,
    pub options: Options,
    pub created_ms: u64,
    created: Instant,
    vm: Vm,
    activity: Mutex<Activity>,
    /// Held while the VM pauses or resumes: one at a time.
    pausing: Mutex<()>,
    execs: Mutex<Execs>,
    /// Held (locked) while the sandbox lives.
    _user: Option<UserDisk>,
}

/// When it was last used, how many commands or transfers use it now, and since when it is
/// paused.
struct Activity {
    last: Instant,
    last_ms: u64,
    busy: usize,
    paused_ms: Option<u64>,
}

/// A command of a sandbox, as listed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecInfo {
    pub id: String,
    pub argv: Vec<String>,
    pub started_ms: u64,
    /// `running`, `exited`, `signaled`, `timedOut`, `notFound` or `failed`.
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Default)]
struct Execs {
    next: u64,
    /// With the handle that feeds and signals it, once it has started.
    running: HashMap<String, (ExecInfo, Option<Input>)>,
    ended: VecDeque<ExecInfo>,
}

/// Marks its sandbox busy while it lives (a command or transfer in progress).
pub struct Busy(Arc<Sandbox>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut activity = self.0.activity.lock().unwrap();
        activity.busy -= 1;
        activity.touch();
    }
}

impl Activity {
    fn touch(&mut self) {
        self.last = Instant::now();
        self.last_ms = now_ms();
    }
}

impl Sandboxes {
    pub fn new(machine: Arc<Machine>, vms: Vms, keeps_standby: bool) -> Sandboxes {
        Sandboxes {
            machine,
            vms,
            all: Mutex::default(),
            creating: Mutex::new(0),
            standby: Mutex::default(),
            keeps_standby,
        }
    }

    /// Creates a sandbox as `options` say and waits until it is ready for commands.
    pub async fn create(&self, options: Options) -> Result<Arc<Sandbox>, Error> {
        {
            let mut creating = self.creating.lock().unwrap();
            if self.all.lock().unwrap().len() + *creating >= MAX_SANDBOXES {
                return Err(Error::Full);
            }
            *creating += 1;
        }
        let standby = match self.keeps_standby && options.standby_shaped() {
            true => self.take_standby().await,
            false => None,
        };
        let (machine, vms) = (self.machine.clone(), self.vms.clone());
        let booted =
            tokio::task::spawn_blocking(move || boot(&machine, &vms, options, standby)).await;
        *self.creating.lock().unwrap() -= 1;
        let sandbox = Arc::new(booted.map_err(|e| Error::Task(e.to_string()))??);
        self.all
            .lock()
            .unwrap()
            .insert(sandbox.id.clone(), sandbox.clone());
        Ok(sandbox)
    }

    /// The standby VM, waited for if it still boots; none when there is none or it failed or
    /// has ended since. From now on one is kept.
    async fn take_standby(&self) -> Option<Vm> {
        let booting = {
            let mut standby = self.standby.lock().unwrap();
            standby.wanted_until = Some(Instant::now() + STANDBY_KEPT);
            standby.vm.take()?
        };
        Standby::take(booting, "the sandboxes'").await
    }

    /// Starts booting the standby VM when one is wanted and there is none, while no sandbox
    /// is being created and none runs a command or transfer (so that its boot does not start
    /// beside theirs);
    /// stops it once none is wanted any more.
    fn prepare_standby(&self, now: Instant) {
        let mut standby = self.standby.lock().unwrap();
        if standby.wanted_until.is_some_and(|until| now >= until) {
            // Its VM stops once booted (the task's result, dropped unread).
            *standby = Spare::default();
        }
        if standby.wanted_until.is_none()
            || standby.vm.is_some()
            || *self.creating.lock().unwrap() > 0
        {
            return;
        }
        if self
            .all
            .lock()
            .unwrap()
            .values()
            .any(|s| s.activity.lock().unwrap().busy > 0)
        {
            return;
        }
        let (machine, vms) = (self.machine.clone(), self.vms.clone());
        standby.vm = Some(tokio::task::spawn_blocking(move || {
            let vm = Vm::boot(&machine, &vms, default_memory_mib(), DEFAULT_CPUS, |_| {})?;
            Ok(vm.warmed_up("the sandboxes'"))
        }));
    }

    /// Where the standby VM is, if there is one.
    pub fn standby(&self) -> Option<Standby> {
        self.standby.lock().unwrap().vm.as_ref().map(Standby::of)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Sandbox>> {
        self.all.lock().unwrap().get(id).cloned()
    }

    /// Every sandbox, oldest first.
    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        let mut all: Vec<_> = self.all.lock().unwrap().values().cloned().collect();
        all.sort_by_key(|s| s.created);
        all
    }

    /// Takes sandbox `id` out; its VM stops once the requests using it have ended (their
    /// commands are killed with it).
    pub fn delete(&self, id: &str) -> Option<Arc<Sandbox>> {
        let sandbox = self.all.lock().unwrap().remove(id)?;
        sandbox.kill_all();
        Some(sandbox)
    }

    /// Deletes the sandboxes past their idle or lifetime limit, and those whose VM ended.
    pub fn reap(&self) {
        let now = Instant::now();
        let gone: Vec<(String, &'static str)> = self
            .all
            .lock()
            .unwrap()
            .values()
            .filter_map(|s| s.expired(now).map(|why| (s.id.clone(), why)))
            .collect();
        for (id, why) in gone {
            tracing::info!("sandbox {id}: {why}; deleted");
            self.delete(&id);
        }
        self.prepare_standby(now);
    }

    /// Deletes every sandbox, and stops the standby VM (at shutdown).
    pub fn clear(&self) {
        // Its VM stops once booted (the task's result, dropped unread).
        *self.standby.lock().unwrap() = Spare::default();
        let all: Vec<_> = self.all.lock().unwrap().drain().collect();
        for (_, sandbox) in all {
            sandbox.kill_all();
        }
    }
}

/// Boots the VM of a new sandbox (blocking), or makes it of `standby` (which fits `options`).
fn boot(
    machine: &Machine,
    vms: &Vms,
    options: Options,
    standby: Option<Vm>,
) -> Result<Sandbox, Error> {
    let user = match &options.user {
        Some(name) => {
            let jail = match &machine.backend {
                Backend::Kvm { jail, .. } | Backend::Qemu { jail, .. } => *jail,
            };
            Some(Users::from_env()?.acquire(name, None, &DiskTools::new(jail)?)?)
        }
        None => None,
    };
    let vm = match standby {
        Some(vm) => vm,
        None => Vm::boot(machine, vms, options.memory_mib, options.cpus, |config| {
            config.user_disk = user.as_ref().map(|u| u.path().to_path_buf());
            config.net = options.net.then_some(NetSpec::USER);
        })?,
    };
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| Error::Task(format!("no random ID: {e}")))?;
    let created_ms = now_ms();
    Ok(Sandbox {
        id: hex::encode(id),
        options,
        created_ms,
        created: Instant::now(),
        vm,
        activity: Mutex::new(Activity {
            last: Instant::now(),
            last_ms: created_ms,
            busy: 0,
            paused_ms: None,
        }),
        pausing: Mutex::new(()),
        execs: Mutex::default(),
        _user: user,
    })
}

impl Sandbox {
    /// The booted VM, to run commands in.
    pub fn vm(&self) -> &sandbox::booted::Sandbox {
        self.vm.sandbox()
    }

    /// Marks it busy until the handle is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut activity = self.activity.lock().unwrap();
        activity.busy += 1;
        activity.touch();
        Busy(self.clone())
    }

    pub fn last_activity_ms(&self) -> u64 {
        self.activity.lock().unwrap().last_ms
    }

    /// Since when it is paused, if it is.
    pub fn paused_ms(&self) -> Option<u64> {
        self.activity.lock().unwrap().paused_ms
    }

    /// Pauses its VM (blocking until every vCPU is stopped): commands and transfers under way
    /// stall until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<(), Error> {
        let _one = self.pausing.lock().unwrap();
        self.vm().pause()?;
        self.activity.lock().unwrap().paused_ms = Some(now_ms());
        Ok(())
    }

    /// Lets its paused VM go on; its idle time counts from now.
    pub fn resume(&self) -> Result<(), Error> {
        let _one = self.pausing.lock().unwrap();
        self.vm().resume()?;
        let mut activity = self.activity.lock().unwrap();
        activity.paused_ms = None;
        activity.touch();
        Ok(())
    }

    /// Why it should go, if it should.
    fn expired(&self, now: Instant) -> Option<&'static str> {
        let activity = self.activity.lock().unwrap();
        if now.duration_since(self.created) >= self.options.lifetime {
            Some("past its lifetime (timeoutMs)")
        } else if activity.busy == 0
            && activity.paused_ms.is_none()
            && now.duration_since(activity.last) >= self.options.idle
        {
            Some("idle past its idleTimeoutMs")
        } else if vmm::poll::first_readable(&[self.vm().ended().as_raw_fd()], Some(Duration::ZERO))
            .is_some()
        {
            Some("its microVM ended")
        } else {
            None
        }
    }

    /// Registers a command about to start, shown as `argv`: its ID, or none when too many run
    /// already (then it is not started at all).
    pub fn exec_reserved(&self, argv: Vec<String>) -> Option<String> {
        let mut execs = self.execs.lock().unwrap();
        if execs.running.len() >= MAX_RUNNING_EXECS {
            return None;
        }
        execs.next += 1;
        let id = format!("e{}", execs.next);
        let info = ExecInfo {
            id: id.clone(),
            argv,
            started_ms: now_ms(),
            state: "running",
            exit_code: None,
            signal: None,
        };
        execs.running.insert(id.clone(), (info, None));
        Some(id)
    }

    /// Command `id` runs, fed and signalled through `input`.
    pub fn exec_attached(&self, id: &str, input: Input) {
        if let Some((_, slot)) = self.execs.lock().unwrap().running.get_mut(id) {
            *slot = Some(input);
        }
    }

    /// Records how command `id` ended.
    pub fn exec_ended(&self, id: &str, outcome: Option<&Outcome>) {
        let mut execs = self.execs.lock().unwrap();
        let Some((mut info, _)) = execs.running.remove(id) else {
            return;
        };
        (info.state, info.exit_code, info.signal) = match outcome {
            Some(Outcome::Exited(code)) => ("exited", Some(*code), None),
            Some(Outcome::Signaled(signal)) => ("signaled", None, Some(*signal)),
            Some(Outcome::TimedOut(_)) => ("timedOut", None, None),
            Some(Outcome::NotFound(_)) => ("notFound", Some(127), None),
            Some(Outcome::NotExecutable(_)) | None => ("failed", Some(126), None),
        };
        execs.ended.push_back(info);
        while execs.ended.len() > KEPT_ENDED_EXECS {
            execs.ended.pop_front();
        }
    }

    /// The handle of running command `id`.
    pub fn exec_input(&self, id: &str) -> Option<Input> {
        let execs = self.execs.lock().unwrap();
        execs.running.get(id).and_then(|(_, input)| input.clone())
    }

    /// Its commands: those that ended (the last few), then those that run.
    pub fn execs(&self) -> Vec<ExecInfo> {
        let execs = self.execs.lock().unwrap();
        let mut running: Vec<ExecInfo> = execs.running.values().map(|(i, _)| i.clone()).collect();
        running.sort_by_key(|i| i.started_ms);
        execs.ended.iter().cloned().chain(running).collect()
    }

    /// Kills every command it runs (their requests end; the VM stops with the last handle).
    fn kill_all(&self) {
        self.vm().stop_signal().stop();
    }
}
