//! The microVMs serve runs, apps' instances and sandboxes alike: the host's part of every VM
//! (`Machine`), booting one (`Vm::boot`: restored from its template when there are templates,
//! activated), and stopping it when dropped, counted in `Vms` until it has stopped.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use contract::arch::Arch;
use contract::params::Shell;
use sandbox::agent::{self, Command, Event, Outcome, Wake};
use sandbox::booted::{self, ConsoleLog, Sandbox, BOOT_TIMEOUT};
use sandbox::templates::Templates;
use serde::Serialize;
use tokio::task::JoinHandle;
use vmm::backend::Backend;
use vmm::error_chain::one_line;
use vmm::poll::first_readable;
use vmm::runtime;
use vmm::vm::VmConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the microVM's runtime folder")]
    Runtime(#[from] runtime::Error),
    #[error("booting the microVM")]
    Boot(#[from] booted::Error),
    #[error("starting Node in the microVM ahead of its first command")]
    WarmUpStart(#[source] booted::Error),
    #[error("waiting for Node to end in the microVM, ahead of its first command")]
    WarmUpWait(#[source] agent::Error),
    #[error("Node, run in the microVM ahead of its first command, ended with {0:?}")]
    WarmUpEnded(Outcome),
}

/// A standby VM (an app's, the sandboxes'), as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Standby {
    Booting,
    /// Its boot ended (a failed one is found out when it is taken).
    Booted,
}

impl Standby {
    /// Where the task that boots a standby VM is.
    pub fn of<T>(boot: &JoinHandle<T>) -> Standby {
        if boot.is_finished() {
            Standby::Booted
        } else {
            Standby::Booting
        }
    }

    /// The VM the task `boot` booted, waited for if it still boots; none (said, as `whose`
    /// standby VM) when it failed or its VM has ended since.
    pub async fn take<E: std::error::Error>(
        boot: JoinHandle<Result<Vm, E>>,
        whose: &str,
    ) -> Option<Vm> {
        let why = match boot.await {
            Ok(Ok(vm)) if !vm.has_ended() => return Some(vm),
            Ok(Ok(_)) => "it has ended".to_string(),
            Ok(Err(e)) => one_line(&e),
            Err(e) => e.to_string(),
        };
        tracing::warn!("not using {whose} standby VM: {why}");
        None
    }
}

/// How long a warm-up's Node may run ([`Vm::warm_up`]): far longer than it takes under TCG.
const WARM_UP_TIME: Duration = Duration::from_secs(60);

/// The host's part of every VM: backend and images.
pub struct Machine {
    pub backend: Backend,
    /// The guests' architecture, which `kernel` and `rootfs` are built for.
    pub arch: Arch,
    pub kernel: PathBuf,
    pub rootfs: PathBuf,
    /// Whether the VMs' VMM filters its syscalls (`VmConfig::seccomp`).
    pub seccomp: bool,
    /// Where the VMs' template snapshots are; none to boot them cold.
    pub templates: Option<Templates>,
}

/// Counts the VMs alive in this process, so that shutdown can wait until every one stopped.
#[derive(Clone, Default)]
pub struct Vms(Arc<(Mutex<usize>, Condvar)>);

impl Vms {
    fn enter(&self) -> VmToken {
        *self.0 .0.lock().unwrap() += 1;
        VmToken(self.clone())
    }

    /// Waits until no VM is alive, at most `timeout`; true when none is.
    pub fn wait_none(&self, timeout: Duration) -> bool {
        let (count, changed) = &*self.0;
        let guard = count.lock().unwrap();
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |n| *n > 0)
            .unwrap();
        *guard == 0
    }
}

struct VmToken(Vms);

impl Drop for VmToken {
    fn drop(&mut self) {
        let (count, changed) = &*(self.0).0;
        *count.lock().unwrap() -= 1;
        changed.notify_all();
    }
}

/// A running VM: stopped (on a thread of its own: stopping waits for the VM) when dropped,
/// its runtime folder and sockets removed after.
pub struct Vm {
    sandbox: Option<Sandbox>,
    folder: Option<tempfile::TempDir>,
    token: Option<VmToken>,
}

impl Vm {
    /// Boots (blocking) a VM of `memory_mib` and `cpus` with no shell and an agent, which
    /// `shape` may give more (volumes, a network, a user's disk), and waits until its agent is
    /// ready.
    pub fn boot(
        machine: &Machine,
        vms: &Vms,
        memory_mib: u32,
        cpus: u8,
        shape: impl FnOnce(&mut VmConfig),
    ) -> Result<Vm, Error> {
        let folder = runtime::scratch_dir("serve")?;
        let mut config = VmConfig::new(
            machine.kernel.clone(),
            machine.rootfs.clone(),
            memory_mib,
            cpus,
        );
        config.arch = machine.arch;
        config.shell = Shell::None;
        config.agent_socket = Some(folder.path().join("agent.sock"));
        config.seccomp = machine.seccomp;
        shape(&mut config);
        if let Some(templates) = &machine.templates {
            templates.restore(&machine.backend, &mut config);
        }
        // Counted from before its VMM starts, so that a shutdown also waits for VMs booting.
        let token = vms.enter();
        let sandbox = Sandbox::boot(machine.backend.clone(), config, ConsoleLog::Tail)?;
        let vm = Vm {
            sandbox: Some(sandbox),
            folder: Some(folder),
            token: Some(token),
        };
        vm.sandbox().wait_ready(BOOT_TIMEOUT)?;
        Ok(vm)
    }

    /// Runs `node -e 0` in the VM, as its user, and waits for its end (blocking). The first
    /// Node of a restored VM pays for reaching Node's code and data: nested-paging faults on
    /// KVM, translating it under TCG. A VM kept ready for later (a standby) pays ahead, and the
    /// first Node a tenant starts in it runs as fast as a second one. Nothing of it lives on:
    /// each Node a tenant starts has random state of its own (V8's, OpenSSL's).
    pub fn warm_up(&self) -> Result<(), Error> {
        let sandbox = self.sandbox();
        let command = Command {
            argv: ["node", "-e", "0"].map(|a| a.as_bytes().to_vec()).to_vec(),
            env: Vec::new(),
            cwd: None,
            stdin: false,
            timeout: Some(WARM_UP_TIME),
            container: None,
            tty: None,
        };
        let mut session = sandbox.session(&command).map_err(Error::WarmUpStart)?;
        // The guest kills it at its timeout; a guest that does not say so is given up on.
        let deadline = Instant::now() + 2 * WARM_UP_TIME;
        loop {
            match session.next(sandbox.ended(), &[], Some(deadline)) {
                Ok(Wake::Event(Event::Ended(Outcome::Exited(0)))) => return Ok(()),
                Ok(Wake::Event(Event::Ended(outcome))) => return Err(Error::WarmUpEnded(outcome)),
                Ok(_) => {}
                Err(e) => return Err(Error::WarmUpWait(e)),
            }
        }
    }

    /// The VM, Node warmed up in it ([`Vm::warm_up`]); a warm-up that fails is said (as `whose`
    /// standby VM) and the VM kept: its first Node only starts slower.
    pub fn warmed_up(self, whose: &str) -> Vm {
        if let Err(e) = self.warm_up() {
            tracing::warn!("{whose} standby VM: {}", one_line(&e));
        }
        self
    }

    /// Whether the VM has ended (its guest stopped, crashed or was killed).
    pub fn has_ended(&self) -> bool {
        first_readable(&[self.sandbox().ended().as_raw_fd()], Some(Duration::ZERO)).is_some()
    }

    /// The booted VM, to run commands in.
    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox
            .as_ref()
            .expect("a VM's sandbox is taken only when it is dropped")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let (sandbox, folder, token) = (self.sandbox.take(), self.folder.take(), self.token.take());
        let stop = move || {
            if let Some(sandbox) = sandbox {
                if let Err(e) = sandbox.stop() {
                    tracing::debug!("stopping a VM: {e}");
                }
            }
            drop(folder);
            drop(token);
        };
        let spawned = std::thread::Builder::new()
            .name("vm-stop".into())
            .spawn(stop);
        if let Err(e) = spawned {
            tracing::warn!("no thread to stop a VM ({e}); it ends with us");
        }
    }
}
