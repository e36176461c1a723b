//! The shim's two faces: the `start`/`delete` commands containerd runs (containerd_shim::Shim)
//! and the task service it talks to over ttrpc (containerd_shim::Task), for one container
//! whose processes run in a microVM of its own, or for the containers of a Kubernetes pod,
//! which share the pod's (crate::pod).
//!
//! Pausing a task pauses its microVM: every vCPU (and, on our VMM, every device thread) holds
//! still, its memory and devices' state are kept, and all of its processes — the task's and
//! those `exec`ed beside it — make no progress until it is resumed. A container sharing its
//! pod's microVM with others is not paused alone: that would pause them all.
//!
//! A process of the container that the guest's OOM killer ends, as the agent reports it, is
//! published as `/tasks/oom` (`Service::oom_killed`), before that process's exit.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use containerd_shim::api::{self, Status as TaskStatus};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{
    Config, DeleteResponse, ExitSignal, Flags, StartOpts, TtrpcContext, TtrpcResult,
};
use contract::frame::WinSize;
use contract::seccomp::Filter;
use oci_spec::runtime::Process as OciProcess;
use sandbox::agent::{OomKill, Session};
use sandbox::booted::{self, Sandbox};
use vmm::vm::PauseError;
use vmm_sys_util::eventfd::EventFd;

use crate::bundle::{self, Bundle, Root};
use crate::mounts::{self, Carried};
use crate::pod::{self, Role};
use crate::process::{Process, Status, Stdio};
use crate::stats;
use crate::vm::{self, Shape};

/// The runtime's name, as containerd knows it (`--runtime io.containerd.nodeos.v2`).
pub const RUNTIME: &str = "io.containerd.nodeos.v2";
/// The daemon's pid, in the bundle's folder, for `delete` to end it.
const PID_FILE: &str = "shim.pid";
/// The exit status containerd gets for a container deleted without having run.
const NEVER_RAN: u32 = 255;

/// A microVM, and what its containers share of it: a container's own, or a pod's. It stops
/// when the last of its containers lets it go.
struct Vm {
    /// The VM, until it is dropped.
    sandbox: Option<Sandbox>,
    /// Its disks, agent socket and console log (its first container's folder), removed once
    /// it has stopped.
    scratch: PathBuf,
    /// It has the pod's disk: members of the pod may join it.
    pod: bool,
    /// The host files and folders whose copies are in its pod's disk.
    pod_binds: Mutex<HashSet<PathBuf>>,
    /// Paused (`Pause`, until `Resume`): its running processes are PAUSED.
    paused: AtomicBool,
    /// One past the guest kernel log's number of the newest OOM kill published (0: none).
    oom_published: AtomicU64,
}

impl Vm {
    fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("a VM until it is dropped")
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(vm) = self.sandbox.take() {
            let started = Instant::now();
            if let Err(e) = vm.stop() {
                log::warn!("stopping the microVM: {e}");
            }
            log::info!("microVM stopped in {:?}", started.elapsed());
        }
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

/// A container and its microVM.
struct Container {
    bundle: PathBuf,
    vm: Option<Arc<Vm>>,
    /// Where its root is, for the processes `exec`ed in it.
    root: Root,
    /// Its own mounts (the spec's), for those processes too, and its writable binds to copy
    /// back when its task's process ends.
    mounts: Arc<Carried>,
    /// Its own files on the host: its VM's, unless it joined its pod's (copy-backs then).
    scratch: PathBuf,
    /// It joined its pod's VM, where its files are its own.
    member: bool,
    /// Its processes' seccomp filter (the spec's profile), the `exec`ed ones' too.
    seccomp: Option<Filter>,
    init: Arc<Process>,
    execs: HashMap<String, Arc<Process>>,
}

impl Container {
    /// Its VM, until the container is deleted.
    fn vm(&self) -> TtrpcResult<&Arc<Vm>> {
        self.vm.as_ref().ok_or_else(|| {
            error(
                Code::FAILED_PRECONDITION,
                "the container's microVM has ended",
            )
        })
    }

    fn paused(&self) -> bool {
        self.vm.as_ref().is_some_and(|vm| vm.paused())
    }

    /// Its processes, the task's first.
    fn processes(&self) -> impl Iterator<Item = &Arc<Process>> {
        std::iter::once(&self.init).chain(self.execs.values())
    }

    /// What an agent session in its VM needs: the agent's socket and the VM's end, taken
    /// under the lock and used without it (a guest slow to answer holds nothing up).
    fn agent_link(&self) -> TtrpcResult<(PathBuf, EventFd)> {
        let vm = self.vm()?.sandbox();
        let ended = vm
            .ended()
            .try_clone()
            .map_err(|e| error(Code::INTERNAL, e.to_string()))?;
        Ok((vm.agent_socket().to_path_buf(), ended))
    }

    fn process(&self, exec_id: &str) -> TtrpcResult<&Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| error(Code::NOT_FOUND, format!("no process {exec_id:?}")))
    }

    /// Refuses what needs the guest to run (a new process, its metrics) while it is paused.
    fn refuse_if_paused(&self, what: &str) -> TtrpcResult<()> {
        if self.paused() {
            return Err(error(
                Code::FAILED_PRECONDITION,
                format!("cannot {what}: the task is paused; resume it first"),
            ));
        }
        Ok(())
    }

    /// Pauses its VM, whose task must be running: returns once every vCPU holds still.
    fn pause(&self) -> TtrpcResult<()> {
        if !matches!(self.init.status(), Status::Running { .. }) {
            return Err(error(
                Code::FAILED_PRECONDITION,
                "cannot pause the task: it is not running",
            ));
        }
        if self.paused() {
            return Err(error(
                Code::FAILED_PRECONDITION,
                "cannot pause the task: it is paused already",
            ));
        }
        let vm = self.vm()?;
        if Arc::strong_count(vm) > 1 {
            return Err(error(
                Code::FAILED_PRECONDITION,
                "cannot pause the task: its pod's microVM runs other containers too",
            ));
        }
        vm.sandbox().pause().map_err(pause_error)?;
        vm.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Lets its paused VM go on where it was.
    fn resume(&self) -> TtrpcResult<()> {
        if !self.paused() {
            return Err(error(
                Code::FAILED_PRECONDITION,
                "cannot resume the task: it is not paused",
            ));
        }
        let vm = self.vm()?;
        vm.sandbox().resume().map_err(pause_error)?;
        vm.paused.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// A VM's failed pause or resume as the task API's error: one that is refused (not running,
/// not paused) or that ended is the task's state, anything else the shim's failure.
fn pause_error(e: booted::Error) -> ttrpc::Error {
    let code = match &e {
        booted::Error::Pause(PauseError::Refused(_) | PauseError::Ended(_)) => {
            Code::FAILED_PRECONDITION
        }
        _ => Code::UNKNOWN,
    };
    error(code, format!("nodeos: {}", vmm::error_chain::one_line(&e)))
}

#[derive(Clone)]
pub struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// The id containerd started the shim with (for `delete`: the container it cleans up).
    id: String,
    publisher: Option<Arc<RemotePublisher>>,
    /// The containers it serves, by id: one, or a pod's.
    containers: Arc<Mutex<HashMap<String, Container>>>,
}

impl containerd_shim::Shim for Service {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            publisher: None,
            containers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Starts the shim's daemon (in the bundle's folder) and says where it listens; the
    /// address goes in the bundle too, where a restarted containerd finds it again. A pod's
    /// member is served by its pod's daemon, already running (0 is its pid then: a member's
    /// `delete` leaves the daemon to its pod's sandbox).
    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        // A spec that does not read fails the create, which says why.
        let role = Bundle::read(Path::new("."))
            .map(|bundle| Role::of(&bundle.spec))
            .unwrap_or(Role::Alone);
        let grouping = role.grouping(&opts.id).to_string();
        let (pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        if pid != 0 {
            fs::write(PID_FILE, pid.to_string())
                .map_err(|e| containerd_shim::Error::Other(format!("writing {PID_FILE}: {e}")))?;
        }
        Ok(address)
    }

    /// Once containerd has lost the container (it ended and was deleted, or its shim was
    /// killed, crashed, or does not answer): unless the shim's daemon answers that it lives
    /// on without it (a pod's other containers keep it, and the pod's microVM), the daemon,
    /// if it is still there, is killed (its microVM with it), and what it left is removed.
    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        if daemon_has(&self.id) == Some(false) {
            log::info!("{}: deleted; the shim serves its pod's others", self.id);
        } else {
            if let Some(pid) = fs::read_to_string(PID_FILE)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|pid| is_shim_of(*pid, &self.namespace, &self.id))
            {
                // SAFETY: kill has no memory arguments.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some(dir) = scratch_dir(&self.namespace, &self.id) {
                let _ = fs::remove_dir_all(dir);
            }
        }
        let mut response = DeleteResponse::new();
        response.exit_status = NEVER_RAN;
        response.exited_at = MessageField::some(timestamp(SystemTime::now()));
        Ok(response)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        Service {
            publisher: Some(Arc::new(publisher)),
            ..self.clone()
        }
    }
}

/// Whether the shim's daemon at the bundle's address says, within a second, that it has the
/// container `id` (`Some(false)`: it lives on without it); `None` when it does not answer.
fn daemon_has(id: &str) -> Option<bool> {
    let address = containerd_shim::util::read_address().ok()?;
    let client = containerd_shim::protos::Client::connect(&address).ok()?;
    let tasks = containerd_shim::protos::TaskClient::new(client);
    let request = api::StateRequest {
        id: id.to_string(),
        ..Default::default()
    };
    match tasks.state(ttrpc::context::with_timeout(1_000_000_000), &request) {
        Ok(_) => Some(true),
        Err(ttrpc::Error::RpcStatus(status)) if status.code() == Code::NOT_FOUND => Some(false),
        Err(_) => None,
    }
}

/// Whether the process `pid` is our shim's daemon for the container `id` of `namespace`
/// (not some other process that took the pid since).
fn is_shim_of(pid: i32, namespace: &str, id: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let exe = std::env::current_exe().ok();
    let same_program = fs::read_link(format!("/proc/{pid}/exe")).ok() == exe;
    same_program
        && args
            .windows(2)
            .any(|w| w == [b"-namespace", namespace.as_bytes()])
        && args.windows(2).any(|w| w == [b"-id", id.as_bytes()])
}

/// Where a container's disk, agent socket and console log go: in the artifact cache (a
/// container's root file system is too big for containerd's /run), by namespace and id.
fn scratch_dir(namespace: &str, id: &str) -> Option<PathBuf> {
    sandbox::folders::cache_dir().map(|cache| cache.join("shim").join(format!("{namespace}-{id}")))
}

fn error(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = since.as_secs() as i64;
    t.nanos = since.subsec_nanos() as i32;
    t
}

impl Service {
    fn publish(&self, topic: &str, event: Box<dyn Event>) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        if let Err(e) = publisher.publish(
            containerd_shim::Context::default(),
            topic,
            &self.namespace,
            event,
        ) {
            log::warn!("publishing {topic}: {e}");
        }
    }

    fn publish_paused(&self, container_id: &str, paused: bool) {
        let container_id = container_id.to_string();
        if paused {
            let event = TaskPaused {
                container_id,
                ..Default::default()
            };
            let topic = containerd_shim::protos::topics::TASK_PAUSED_EVENT_TOPIC;
            self.publish(topic, Box::new(event));
        } else {
            let event = TaskResumed {
                container_id,
                ..Default::default()
            };
            let topic = containerd_shim::protos::topics::TASK_RESUMED_EVENT_TOPIC;
            self.publish(topic, Box::new(event));
        }
    }

    /// The guest's kernel killed a process for lack of memory, as a session of the container
    /// `id` heard: `/tasks/oom` of the container whose process it was, before the exit of the
    /// process that saw it. In a VM of one container, that container's; in a pod's, the
    /// container one of whose processes has the pid killed (a child of one of them is
    /// logged only). Every session in a VM hears of the same kill, with the same number in the
    /// kernel's log: a kill no newer than one published already is not published again.
    fn oom_killed(&self, id: &str, kill: OomKill) {
        let owner = {
            let containers = self.containers.lock().unwrap();
            let Some(vm) = containers.get(id).and_then(|c| c.vm.clone()) else {
                return;
            };
            let newest = kill.seq.saturating_add(1);
            if vm.oom_published.fetch_max(newest, Ordering::SeqCst) >= newest {
                return;
            }
            let sharing: Vec<(&String, &Container)> = containers
                .iter()
                .filter(|(_, c)| c.vm.as_ref().is_some_and(|v| Arc::ptr_eq(v, &vm)))
                .collect();
            let has_pid = |c: &Container| {
                c.processes()
                    .any(|p| matches!(p.status(), Status::Running { pid } if i64::from(pid) == i64::from(kill.pid)))
            };
            match sharing[..] {
                [(only, _)] => Some(only.clone()),
                _ => sharing
                    .iter()
                    .find(|(_, c)| has_pid(c))
                    .map(|(id, _)| (*id).clone()),
            }
        };
        log::warn!(
            "the guest's kernel killed process {} (its pid in the microVM) for lack of memory; \
             of container {}",
            kill.pid,
            owner
                .as_deref()
                .unwrap_or("none: a child process of the pod's")
        );
        let Some(container_id) = owner else {
            return;
        };
        let event = TaskOOM {
            container_id,
            ..Default::default()
        };
        self.publish(
            containerd_shim::protos::topics::TASK_OOM_EVENT_TOPIC,
            Box::new(event),
        );
    }

    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> TtrpcResult<T>,
    ) -> TtrpcResult<T> {
        let mut containers = self.containers.lock().unwrap();
        match containers.get_mut(id) {
            Some(container) => f(container),
            None => Err(error(Code::NOT_FOUND, format!("no container {id}"))),
        }
    }

    fn create_container(&self, req: &api::CreateTaskRequest) -> Result<Container, String> {
        let bundle = Bundle::read(Path::new(&req.bundle)).map_err(|e| e.to_string())?;
        let process = bundle.process().map_err(|e| e.to_string())?;
        // Checked before anything is mounted or packed.
        bundle::command(process, "/", &[], None).map_err(|e| e.to_string())?;
        let seccomp = bundle.seccomp().map_err(|e| e.to_string())?;
        let scratch = scratch_dir(&self.namespace, &req.id)
            .ok_or("no cache folder for the container's disk: set NODEOS_VM_CACHE or HOME")?;
        fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        let role = Role::of(&bundle.spec);
        // Checked before anything is packed or booted.
        let protected = bundle.protected_paths().map_err(|e| e.to_string())?;
        let (vm, root, mut carried) = match &role {
            Role::Member(pod) => self.join_pod(pod, &req.id, &bundle, &req.rootfs)?,
            Role::Alone | Role::Sandbox => boot_vm(req, &bundle, &scratch, role == Role::Sandbox)?,
        };
        let member = matches!(role, Role::Member(_));
        let command = carried
            .protect(protected)
            .map_err(|e| vmm::error_chain::one_line(&e))
            .and_then(|()| {
                bundle::command(process, root.in_guest(), &carried.mounts, seccomp.as_ref())
                    .map_err(|e| e.to_string())
            })
            .inspect_err(|_| {
                // What it put in its pod's VM goes with it (its own VM goes as it drops).
                if member {
                    pod::remove(vm.sandbox().agent_socket(), &req.id);
                }
            })?;
        let stdio = Stdio {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        Ok(Container {
            bundle: bundle.dir,
            vm: Some(vm),
            root,
            mounts: Arc::new(carried),
            scratch,
            member,
            seccomp,
            init: Process::new(command, stdio),
            execs: HashMap::new(),
        })
    }

    /// The pod `pod`'s VM, which the member `id` of `bundle` (its root file system with the
    /// snapshotter's `rootfs` mounts) joins: its files carried into it.
    fn join_pod(
        &self,
        pod: &str,
        id: &str,
        bundle: &Bundle,
        rootfs: &[containerd_shim::protos::api::Mount],
    ) -> Result<(Arc<Vm>, Root, Carried), String> {
        let vm = {
            let containers = self.containers.lock().unwrap();
            let sandbox = containers.get(pod).ok_or_else(|| {
                format!(
                    "the pod's sandbox container {pod} is not running in this shim: create it \
                     first (its spec annotated io.kubernetes.cri.container-type=sandbox)"
                )
            })?;
            let vm = sandbox.vm.clone().filter(|vm| vm.pod).ok_or_else(|| {
                format!("container {pod} is not a pod's sandbox: its microVM takes no other")
            })?;
            if vm.paused() {
                return Err(format!("the pod's microVM is paused: resume {pod} first"));
            }
            vm
        };
        if bundle.memory_mib().is_some() || bundle.cpus().is_some() {
            log::info!("{id}: its memory and CPU limits are those of its pod's microVM");
        }
        let images = vm::images().map_err(|e| vmm::error_chain::one_line(&e))?;
        let socket = vm.sandbox().agent_socket().to_path_buf();
        let started = Instant::now();
        let (root, carried) =
            pod::carry_in(&socket, (id, bundle), rootfs, &images.1, &vm.pod_binds).map_err(
                |e| {
                    pod::remove(&socket, id);
                    vmm::error_chain::one_line(&e)
                },
            )?;
        log::info!(
            "{id}: root {root:?} in pod {pod}'s microVM in {:?}",
            started.elapsed()
        );
        Ok((vm, root, carried))
    }

    /// Starts `process` in the container's VM, whose agent is behind `socket` (`ended`:
    /// readable once the VM has ended); runs `settle` when it ends, then publishes its exit.
    fn start_process(
        &self,
        (socket, ended): (PathBuf, EventFd),
        (id, exec_id): (&str, &str),
        process: &Arc<Process>,
        settle: impl FnOnce() + Send + 'static,
    ) -> TtrpcResult<u32> {
        let mut session = Session::start(&socket, &process.command, &ended, None)
            .map_err(|e| error(Code::UNKNOWN, vmm::error_chain::one_line(&e)))?;
        let (service, container_id) = (self.clone(), id.to_string());
        session.on_oom_kill(move |kill| service.oom_killed(&container_id, kill));
        let (service, id, exec_id_owned) = (self.clone(), id.to_string(), exec_id.to_string());
        let on_exit = move |process: &Process| {
            if let Status::Stopped { pid, code, at } = process.status() {
                let event = TaskExit {
                    container_id: id.clone(),
                    id: if exec_id_owned.is_empty() {
                        id
                    } else {
                        exec_id_owned
                    },
                    pid,
                    exit_status: code,
                    exited_at: MessageField::some(timestamp(at)),
                    ..Default::default()
                };
                service.publish(
                    containerd_shim::protos::topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(event),
                );
            }
        };
        process
            .start(session, ended, settle, on_exit)
            .map_err(|why| error(Code::FAILED_PRECONDITION, why))
    }
}

/// A microVM of its own for the container of `bundle` created by `req`, its files (its root
/// file system, its binds' copies) in disks in `scratch`; with the pod's disk too when it is a
/// pod's sandbox (`pod`).
fn boot_vm(
    req: &api::CreateTaskRequest,
    bundle: &Bundle,
    scratch: &Path,
    pod: bool,
) -> Result<(Arc<Vm>, Root, Carried), String> {
    let started = Instant::now();
    let spec_mounts = bundle.spec.mounts().as_deref().unwrap_or_default();
    let carried = mounts::carry(spec_mounts, &scratch.join("mounts.img"))
        .map_err(|e| vmm::error_chain::one_line(&e))?;
    log::info!(
        "{}: {} mounts in {:?}",
        req.id,
        carried.mounts.len(),
        started.elapsed()
    );
    let images = vm::images().map_err(|e| vmm::error_chain::one_line(&e))?;
    let started = Instant::now();
    let root = bundle::prepare_root(
        &bundle.root(),
        &req.rootfs,
        &images.1,
        &scratch.join("rootfs.img"),
    )
    .map_err(|e| e.to_string())?;
    log::info!("{}: root {root:?} in {:?}", req.id, started.elapsed());
    let pod_disk = if pod {
        let disk = scratch.join("pod.img");
        pod::make_disk(&disk).map_err(|e| vmm::error_chain::one_line(&e))?;
        Some(disk)
    } else {
        None
    };
    let shape = Shape {
        images,
        disk: match &root {
            Root::Disk(disk) => Some(disk.clone()),
            Root::Guest | Root::InPod(_) => None,
        },
        mounts_disk: carried.disk.clone(),
        pod_disk,
        memory_mib: bundle.memory_mib(),
        cpus: bundle.cpus(),
        hostname: bundle.hostname(),
    };
    let started = Instant::now();
    let sandbox = vm::boot(shape, scratch, scratch.join("console.log"))
        .map_err(|e| vmm::error_chain::one_line(&e))?;
    log::info!("{}: microVM ready in {:?}", req.id, started.elapsed());
    let vm = Vm {
        sandbox: Some(sandbox),
        scratch: scratch.to_path_buf(),
        pod,
        pod_binds: Mutex::new(HashSet::new()),
        paused: AtomicBool::new(false),
        oom_published: AtomicU64::new(0),
    };
    Ok((Arc::new(vm), root, carried))
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if self.containers.lock().unwrap().contains_key(&req.id) {
            return Err(error(
                Code::ALREADY_EXISTS,
                format!("container {} exists", req.id),
            ));
        }
        let container = self.create_container(&req).map_err(|why| {
            if let Some(dir) = scratch_dir(&self.namespace, &req.id) {
                let _ = fs::remove_dir_all(dir);
            }
            error(Code::FAILED_PRECONDITION, format!("nodeos: {why}"))
        })?;
        self.containers
            .lock()
            .unwrap()
            .insert(req.id.clone(), container);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.publish(
            containerd_shim::protos::topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(event),
        );
        Ok(api::CreateTaskResponse {
            pid: 0,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let (process, link, settle) = self.with(&req.id, |container| {
            // The guest could not start it before it runs again.
            container.refuse_if_paused("start a process in the task")?;
            let process = container.process(&req.exec_id)?.clone();
            if !process.claim() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    "the process was started already",
                ));
            }
            let link = container.agent_link()?;
            // The task's process ends: its writable binds' changes are copied back before it
            // reads as stopped (while the VM still runs), so that a `wait` finds them there.
            let settle: Box<dyn FnOnce() + Send> = if req.exec_id.is_empty() {
                let (mounts, scratch) = (container.mounts.clone(), container.scratch.clone());
                let socket = link.0.clone();
                Box::new(move || mounts.copy_back(&socket, &scratch))
            } else {
                Box::new(|| {})
            };
            Ok((process, link, settle))
        })?;
        let pid = self.start_process(link, (&req.id, &req.exec_id), &process, settle)?;
        if req.exec_id.is_empty() {
            let event = TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            };
            self.publish(
                containerd_shim::protos::topics::TASK_START_EVENT_TOPIC,
                Box::new(event),
            );
        } else {
            let event = TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid,
                ..Default::default()
            };
            self.publish(
                containerd_shim::protos::topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(event),
            );
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        self.with(&req.id, |container| {
            let process = container.process(&req.exec_id)?;
            let mut response = api::StateResponse {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                bundle: container.bundle.display().to_string(),
                stdin: process.stdio.stdin.clone(),
                stdout: process.stdio.stdout.clone(),
                stderr: process.stdio.stderr.clone(),
                terminal: process.stdio.terminal,
                ..Default::default()
            };
            let status = match process.status() {
                Status::Created => TaskStatus::CREATED,
                // Every process of a paused VM is paused (runc's execs too, with their task).
                Status::Running { pid } => {
                    response.pid = pid;
                    if container.paused() {
                        TaskStatus::PAUSED
                    } else {
                        TaskStatus::RUNNING
                    }
                }
                Status::Stopped { pid, code, at } => {
                    response.pid = pid;
                    response.exit_status = code;
                    response.exited_at = MessageField::some(timestamp(at));
                    TaskStatus::STOPPED
                }
            };
            response.status = status.into();
            Ok(response)
        })
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let process = self.with(&req.id, |container| {
            Ok(container.process(&req.exec_id)?.clone())
        })?;
        let (code, at) = process.wait();
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let resumed = self.with(&req.id, |container| {
            let mut processes = vec![container.process(&req.exec_id)?.clone()];
            if req.all && req.exec_id.is_empty() {
                processes.extend(container.execs.values().cloned());
            }
            // A paused guest acts on no signal: its agent reads the request only once the VM
            // runs again. A SIGKILL of the task's own process must end the task now (`ctr task
            // delete --force`, a stop after its grace period), so a paused task is resumed
            // first, then killed (TaskResumed is published: it is no longer paused). Any other
            // signal, and any signal to an exec'ed process alone, is sent as it is and waits
            // for the guest, the task still paused, until it is resumed: as Docker does, and
            // as the processes of a frozen cgroup get theirs once thawed.
            let resume = container.paused()
                && req.signal == libc::SIGKILL as u32
                && req.exec_id.is_empty()
                && matches!(container.init.status(), Status::Running { .. });
            if resume {
                container.resume()?;
            }
            for process in processes {
                let stopped = matches!(process.status(), Status::Stopped { .. });
                match process.signal(req.signal) {
                    Ok(()) => {}
                    // Killing what has ended already is no error (containerd does it).
                    Err(_) if stopped => {}
                    Err(why) => return Err(error(Code::FAILED_PRECONDITION, why)),
                }
            }
            Ok(resume)
        })?;
        if resumed {
            self.publish_paused(&req.id, false);
        }
        Ok(api::Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| error(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let oci: OciProcess = serde_json::from_slice(&spec.value).map_err(|e| {
            error(
                Code::INVALID_ARGUMENT,
                format!("the exec's process spec: {e}"),
            )
        })?;
        self.with(&req.id, |container| {
            container.refuse_if_paused("exec in the task")?;
            let command = bundle::command(
                &oci,
                container.root.in_guest(),
                &container.mounts.mounts,
                container.seccomp.as_ref(),
            )
            .map_err(|e| error(Code::INVALID_ARGUMENT, e.to_string()))?;
            if container.execs.contains_key(&req.exec_id) {
                return Err(error(
                    Code::ALREADY_EXISTS,
                    format!("process {} exists", req.exec_id),
                ));
            }
            let stdio = Stdio {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            container
                .execs
                .insert(req.exec_id.clone(), Process::new(command, stdio));
            Ok(())
        })?;
        let event = TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.publish(
            containerd_shim::protos::topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(event),
        );
        Ok(api::Empty::new())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let size = WinSize {
            rows: req.height.min(u32::from(u16::MAX)) as u16,
            cols: req.width.min(u32::from(u16::MAX)) as u16,
        };
        self.with(&req.id, |container| {
            container
                .process(&req.exec_id)?
                .resize(size)
                .map_err(|why| error(Code::UNKNOWN, why))?;
            Ok(api::Empty::new())
        })
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        self.with(&req.id, |container| {
            if req.stdin {
                container
                    .process(&req.exec_id)?
                    .close_stdin()
                    .map_err(|why| error(Code::UNKNOWN, why))?;
            }
            Ok(api::Empty::new())
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        self.with(&req.id, |container| {
            let processes = container
                .processes()
                .filter_map(|p| match p.status() {
                    Status::Running { pid } => Some(containerd_shim::protos::api::ProcessInfo {
                        pid,
                        ..Default::default()
                    }),
                    _ => None,
                })
                .collect();
            Ok(api::PidsResponse {
                processes,
                ..Default::default()
            })
        })
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let mut containers = self.containers.lock().unwrap();
        let container = containers
            .get_mut(&req.id)
            .ok_or_else(|| error(Code::NOT_FOUND, format!("no container {}", req.id)))?;
        let process = container.process(&req.exec_id)?.clone();
        let (pid, code, at) = match process.status() {
            Status::Stopped { pid, code, at } => (pid, code, at),
            Status::Created => (0, NEVER_RAN, SystemTime::now()),
            Status::Running { .. } => {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    "the process is running: kill it first",
                ))
            }
        };
        if req.exec_id.is_empty() {
            // The container goes: its files, and its VM with the last container in it.
            let container = containers.remove(&req.id).expect("found above");
            drop(containers);
            if let Some(vm) = container.vm {
                if container.member && !vm.paused() {
                    pod::remove(vm.sandbox().agent_socket(), &req.id);
                }
                // The VM's own folder goes with it.
                if vm.scratch != container.scratch {
                    let _ = fs::remove_dir_all(&container.scratch);
                }
            }
            let event = TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            };
            self.publish(
                containerd_shim::protos::topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(event),
            );
        } else {
            container.execs.remove(&req.exec_id);
        }
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let (socket, ended) = self.with(&req.id, |container| {
            // The guest's kernel counts them: it cannot answer before it runs again.
            container.refuse_if_paused("read the task's metrics")?;
            container.agent_link()
        })?;
        let metrics =
            stats::collect(&socket, &ended).map_err(|why| error(Code::UNAVAILABLE, why))?;
        let stats = containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|e| error(Code::INTERNAL, e.to_string()))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    fn update(&self, _ctx: &TtrpcContext, _req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        Err(error(
            Code::UNIMPLEMENTED,
            "nodeos: a running microVM's memory and vCPUs cannot change; recreate the container",
        ))
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.with(&req.id, |container| container.pause())?;
        self.publish_paused(&req.id, true);
        Ok(api::Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.with(&req.id, |container| container.resume())?;
        self.publish_paused(&req.id, false);
        Ok(api::Empty::new())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self
            .containers
            .lock()
            .unwrap()
            .get(&req.id)
            .and_then(|c| match c.init.status() {
                Status::Running { pid } | Status::Stopped { pid, .. } => Some(pid),
                Status::Created => None,
            })
            .unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // containerd asks once a container is deleted; a container still here (the pod's
        // others) keeps the shim.
        let left = self.containers.lock().unwrap().len();
        log::debug!("shutdown asked for {}: {left} containers left", req.id);
        if left == 0 {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
