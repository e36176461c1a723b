//! The shim's two faces: the `start`/`delete` commands containerd runs (containerd_shim::Shim)
//! and the task service it talks to over ttrpc (containerd_shim::Task), for one container
//! whose processes run in one microVM.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use containerd_shim::api::{self, Status as TaskStatus};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{
    Config, DeleteResponse, ExitSignal, Flags, StartOpts, TtrpcContext, TtrpcResult,
};
use contract::frame::WinSize;
use oci_spec::runtime::Process as OciProcess;
use sandbox::agent::Session;
use sandbox::booted::Sandbox;
use vmm_sys_util::eventfd::EventFd;

use crate::bundle::{self, Bundle, Root};
use crate::process::{Process, Status, Stdio};
use crate::stats;
use crate::vm::{self, Shape};

/// The runtime's name, as containerd knows it (`--runtime io.containerd.nodeos.v2`).
pub const RUNTIME: &str = "io.containerd.nodeos.v2";
/// The daemon's pid, in the bundle's folder, for `delete` to end it.
const PID_FILE: &str = "shim.pid";
/// The exit status containerd gets for a container deleted without having run.
const NEVER_RAN: u32 = 255;

/// A container and its microVM.
struct Container {
    bundle: PathBuf,
    vm: Option<Sandbox>,
    /// Where its root is, for the processes `exec`ed in it.
    root: Root,
    init: Arc<Process>,
    execs: HashMap<String, Arc<Process>>,
}

impl Container {
    /// What an agent session in its VM needs: the agent's socket and the VM's end, taken
    /// under the lock and used without it (a guest slow to answer holds nothing up).
    fn agent_link(&self) -> TtrpcResult<(PathBuf, EventFd)> {
        let vm = self.vm.as_ref().ok_or_else(|| {
            error(
                Code::FAILED_PRECONDITION,
                "the container's microVM has ended",
            )
        })?;
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
}

#[derive(Clone)]
pub struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// The container's id (the shim serves one).
    id: String,
    publisher: Option<Arc<RemotePublisher>>,
    container: Arc<Mutex<Option<Container>>>,
}

impl containerd_shim::Shim for Service {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            publisher: None,
            container: Arc::new(Mutex::new(None)),
        }
    }

    /// Starts the shim's daemon (in the bundle's folder) and says where it listens; the
    /// address goes in the bundle too, where a restarted containerd finds it again.
    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let grouping = opts.id.clone();
        let (pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        fs::write(PID_FILE, pid.to_string())
            .map_err(|e| containerd_shim::Error::Other(format!("writing {PID_FILE}: {e}")))?;
        Ok(address)
    }

    /// Once containerd has lost the shim (ended, killed, crashed, or not answering): its
    /// daemon, if it is still there, is killed (its microVM with it), and what it left is
    /// removed.
    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
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

    fn with<T>(&self, f: impl FnOnce(&mut Container) -> TtrpcResult<T>) -> TtrpcResult<T> {
        let mut container = self.container.lock().unwrap();
        match container.as_mut() {
            Some(container) => f(container),
            None => Err(error(Code::NOT_FOUND, format!("no container {}", self.id))),
        }
    }

    fn create_container(&self, req: &api::CreateTaskRequest) -> Result<Container, String> {
        let bundle = Bundle::read(Path::new(&req.bundle)).map_err(|e| e.to_string())?;
        let process = bundle.process().map_err(|e| e.to_string())?;
        // Checked before anything is mounted or packed.
        bundle::command(process, "/").map_err(|e| e.to_string())?;
        let scratch = scratch_dir(&self.namespace, &req.id)
            .ok_or("no cache folder for the container's disk: set NODEOS_VM_CACHE or HOME")?;
        fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
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
        let command = bundle::command(process, root.in_guest()).map_err(|e| e.to_string())?;
        let shape = Shape {
            images,
            disk: match &root {
                Root::Disk(disk) => Some(disk.clone()),
                Root::Guest => None,
            },
            memory_mib: bundle.memory_mib(),
            cpus: bundle.cpus(),
            hostname: bundle.hostname(),
        };
        let started = Instant::now();
        let vm = vm::boot(shape, &scratch, scratch.join("console.log"))
            .map_err(|e| vmm::error_chain::one_line(&e))?;
        log::info!("{}: microVM ready in {:?}", req.id, started.elapsed());
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
            init: Process::new(command, stdio),
            execs: HashMap::new(),
        })
    }

    /// Starts `process` in the container's VM, whose agent is behind `socket` (`ended`:
    /// readable once the VM has ended); publishes its exit when it ends.
    fn start_process(
        &self,
        (socket, ended): (PathBuf, EventFd),
        exec_id: &str,
        process: &Arc<Process>,
    ) -> TtrpcResult<u32> {
        let session = Session::start(&socket, &process.command, &ended, None)
            .map_err(|e| error(Code::UNKNOWN, vmm::error_chain::one_line(&e)))?;
        let (service, id, exec_id_owned) = (self.clone(), self.id.clone(), exec_id.to_string());
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
            .start(session, ended, on_exit)
            .map_err(|why| error(Code::FAILED_PRECONDITION, why))
    }
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if self.container.lock().unwrap().is_some() {
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
        *self.container.lock().unwrap() = Some(container);
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
        let (process, link) = self.with(|container| {
            let process = container.process(&req.exec_id)?.clone();
            if !process.claim() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    "the process was started already",
                ));
            }
            Ok((process, container.agent_link()?))
        })?;
        let pid = self.start_process(link, &req.exec_id, &process)?;
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
        self.with(|container| {
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
                Status::Running { pid } => {
                    response.pid = pid;
                    TaskStatus::RUNNING
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
        let process = self.with(|container| Ok(container.process(&req.exec_id)?.clone()))?;
        let (code, at) = process.wait();
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.with(|container| {
            let mut processes = vec![container.process(&req.exec_id)?.clone()];
            if req.all && req.exec_id.is_empty() {
                processes.extend(container.execs.values().cloned());
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
            Ok(api::Empty::new())
        })
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
        self.with(|container| {
            let command = bundle::command(&oci, container.root.in_guest())
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
        self.with(|container| {
            container
                .process(&req.exec_id)?
                .resize(size)
                .map_err(|why| error(Code::UNKNOWN, why))?;
            Ok(api::Empty::new())
        })
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        self.with(|container| {
            if req.stdin {
                container
                    .process(&req.exec_id)?
                    .close_stdin()
                    .map_err(|why| error(Code::UNKNOWN, why))?;
            }
            Ok(api::Empty::new())
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, _req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        self.with(|container| {
            let processes = std::iter::once(&container.init)
                .chain(container.execs.values())
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
        let mut guard = self.container.lock().unwrap();
        let container = guard
            .as_mut()
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
            // The container goes: its VM, its disk, its socket, its log.
            if let Some(vm) = container.vm.take() {
                let started = Instant::now();
                if let Err(e) = vm.stop() {
                    log::warn!("stopping the microVM: {e}");
                }
                log::info!("{}: microVM stopped in {:?}", req.id, started.elapsed());
            }
            *guard = None;
            if let Some(dir) = scratch_dir(&self.namespace, &req.id) {
                let _ = fs::remove_dir_all(dir);
            }
            let event = TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            };
            drop(guard);
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
        _req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let (socket, ended) = self.with(|container| container.agent_link())?;
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

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self
            .container
            .lock()
            .unwrap()
            .as_ref()
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

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // containerd asks once the container is deleted; a container still here keeps the shim.
        if self.container.lock().unwrap().is_none() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
