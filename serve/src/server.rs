//! The server's state: the deployed apps (their current deployment, pool and logs), the
//! store they are saved in, the metrics, and what deploys, calls and shutdown do with them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::clock::now_ms;
use super::instance::{self, AppSpec, BootError, Exports, APP_DIR, RUNNER_JS, RUNNER_PATH};
use super::logs::Logs;
use super::metrics::Metrics;
use super::package::{self, Options};
use super::pool::Pool;
use super::sandboxes::Sandboxes;
use super::store::{self, Meta, Store};
use super::vm::{Machine, Standby, Vms};

use sandbox::volume::{Mode, Volume};
use vmm::runtime;

/// How long stopping every VM may take at shutdown.
const STOP_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Package(#[from] package::Error),
    #[error("the package does not load in its microVM: {}", .0.message)]
    DoesNotLoad(instance::JsError),
    #[error("the app's runner ended while loading the package: {0}")]
    RunnerDied(String),
    #[error("starting the app's first instance")]
    Boot(#[source] BootError),
    #[error("preparing the app's folder")]
    Runtime(#[from] runtime::Error),
    #[error("packing the app into a volume image")]
    Pack(#[from] sandbox::volume::Error),
    #[error("writing the runner into the app")]
    Runner(#[source] std::io::Error),
    #[error("saving the app")]
    Store(#[from] store::Error),
    #[error("the packing task failed: {0}")]
    Task(String),
}

/// One version of an app, serving.
pub struct Deployment {
    pub version: u64,
    pub deployed_at_ms: u64,
    pub exports: Exports,
    pub pool: Pool,
    /// The unpacked package and its image, removed when the last call of this version ends.
    _folder: tempfile::TempDir,
}

/// An app: its current version, and what outlives versions.
#[derive(Clone)]
pub struct App {
    pub current: Arc<Deployment>,
    pub logs: Arc<Logs>,
}

pub struct Server {
    machine: Arc<Machine>,
    vms: Vms,
    store: Store,
    apps: RwLock<HashMap<String, App>>,
    metrics: Metrics,
    /// Held only while a deploy swaps its version in, or a delete takes an app out.
    changes: tokio::sync::Mutex<()>,
    calls: AtomicU64,
    /// The sandbox API's microVMs.
    pub sandboxes: Sandboxes,
}

impl Server {
    /// A server of no app yet, booting VMs as `machine` says, and a standby VM for sandboxes
    /// when `sandbox_standby`.
    pub fn new(machine: Machine, sandbox_standby: bool) -> anyhow::Result<Server> {
        let (machine, vms) = (Arc::new(machine), Vms::default());
        Ok(Server {
            sandboxes: Sandboxes::new(machine.clone(), vms.clone(), sandbox_standby),
            machine,
            vms,
            store: Store::from_env()?,
            apps: RwLock::default(),
            metrics: Metrics::default(),
            changes: tokio::sync::Mutex::new(()),
            calls: AtomicU64::new(0),
        })
    }

    /// Retires every app, deletes every sandbox and waits (at most `STOP_WAIT`) until no VM
    /// is left.
    pub fn shut_down(&self) {
        for (_, app) in self.apps() {
            app.current.pool.retire();
        }
        self.apps.write().unwrap().clear();
        self.sandboxes.clear();
        if !self.vms.wait_none(STOP_WAIT) {
            eprintln!("nodeos-vm serve: some microVMs did not stop within {STOP_WAIT:?}");
        }
    }

    pub fn app(&self, name: &str) -> Option<App> {
        self.apps.read().unwrap().get(name).cloned()
    }

    /// Every app, by name.
    pub fn apps(&self) -> Vec<(String, App)> {
        let mut apps: Vec<_> = self
            .apps
            .read()
            .unwrap()
            .iter()
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        apps.sort_by(|a, b| a.0.cmp(&b.0));
        apps
    }

    /// Counts a call to app `name` answered with `status` after `took`, unless the app was
    /// deleted meanwhile.
    pub fn count(&self, name: &str, status: u16, took: Duration) {
        // Under the lock `delete` forgets the app's series in, so none comes back.
        let apps = self.apps.read().unwrap();
        if apps.contains_key(name) {
            self.metrics.record(name, status, took);
        }
    }

    /// The `GET /metrics` text: every app's instances and calls.
    pub fn metrics(&self) -> String {
        let apps = self.apps.read().unwrap();
        self.metrics.render(
            apps.iter()
                .map(|(name, app)| (name.as_str(), app.current.pool.instances())),
        )
    }

    /// A fresh ID for a call.
    pub fn call_id(&self) -> String {
        format!(
            "{:x}-{}",
            std::process::id(),
            self.calls.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Deploys `package` as app `name`: unpacked, packed into a volume, verified by booting
    /// an instance that loads it (which stays warm) and saved aside, all without a lock, so
    /// that other deploys, deletes and calls go on meanwhile; then, under the lock, numbered,
    /// saved (one rename) and swapped in for the old version, whose calls in flight finish on
    /// it. Of two deploys of one app at once, the one that finishes loading last is the app's
    /// version (the higher number). Nothing changes on any error.
    pub async fn deploy(
        &self,
        name: &str,
        options: Options,
        package: Vec<u8>,
    ) -> Result<App, DeployError> {
        package::check_name(name)?;
        // The logs an app's versions share (a new app's start with its first deploy).
        let logs = self.app(name).map(|a| a.logs).unwrap_or_default();
        let (mut deployment, package) = self
            .prepare(name, options, package, logs.clone(), None)
            .await?;
        let store = self.store.clone();
        let staging = name.to_string();
        let staged = tokio::task::spawn_blocking(move || store.stage(&staging, &package))
            .await
            .map_err(|e| DeployError::Task(e.to_string()))??;

        let _change = self.changes.lock().await;
        deployment.version = self.app(name).map_or(1, |a| a.current.version + 1);
        let meta = Meta {
            version: deployment.version,
            deployed_at_ms: deployment.deployed_at_ms,
            options: deployment.pool.options.clone(),
            exports: deployment.exports,
        };
        staged.commit(&meta)?;
        let app = App {
            current: Arc::new(deployment),
            logs,
        };
        let old = self
            .apps
            .write()
            .unwrap()
            .insert(name.to_string(), app.clone());
        if let Some(old) = old {
            old.current.pool.retire();
        }
        Ok(app)
    }

    /// Unpacks, packs and (unless `exports` are known from a previous deploy) verifies; the
    /// deployment's version is the caller's to number (0 until then).
    async fn prepare(
        &self,
        name: &str,
        options: Options,
        package: Vec<u8>,
        logs: Arc<Logs>,
        exports: Option<Exports>,
    ) -> Result<(Deployment, Vec<u8>), DeployError> {
        let folder = runtime::scratch_dir("app")?;
        let root = folder.path().to_path_buf();
        let (manifest, volume, package) = tokio::task::spawn_blocking(move || {
            let host = root.join("package");
            let manifest = package::unpack(&package, &host)?;
            let runner = host.join(RUNNER_PATH);
            std::fs::create_dir_all(runner.parent().expect("the runner is in a folder"))
                .and_then(|()| std::fs::write(&runner, RUNNER_JS))
                .map_err(DeployError::Runner)?;
            let volume = Volume {
                host,
                guest: APP_DIR.to_string(),
                mode: Mode::ReadOnly,
            };
            volume.pack(&root.join("app.img"))?;
            Ok::<_, DeployError>((manifest, volume, package))
        })
        .await
        .map_err(|e| DeployError::Task(e.to_string()))??;
        let spec = AppSpec {
            name: name.to_string(),
            image: folder.path().join("app.img"),
            volume,
            env: manifest.env,
            memory_mib: options.memory_mib,
            cpus: options.cpus,
        };
        let pool = Pool::new(
            options,
            self.machine.clone(),
            Arc::new(spec),
            logs,
            self.vms.clone(),
        );
        let exports = match exports {
            Some(exports) => exports,
            None => {
                let instance = pool.boot().await.map_err(|e| match e {
                    BootError::Load(js) => DeployError::DoesNotLoad(js),
                    BootError::Died(why) => DeployError::RunnerDied(why),
                    e => DeployError::Boot(e),
                })?;
                let exports = instance.exports;
                pool.put(instance);
                exports
            }
        };
        let deployed_at_ms = now_ms();
        Ok((
            Deployment {
                version: 0,
                deployed_at_ms,
                exports,
                pool,
                _folder: folder,
            },
            package,
        ))
    }

    /// Removes app `name`; its calls in flight finish. False when there is no such app.
    pub async fn delete(&self, name: &str) -> bool {
        let _change = self.changes.lock().await;
        let mut apps = self.apps.write().unwrap();
        let Some(old) = apps.remove(name) else {
            return false;
        };
        self.metrics.forget(name);
        drop(apps);
        old.current.pool.retire();
        self.store.remove(name);
        true
    }

    /// Brings back the apps saved by an earlier `serve`, without booting them.
    pub async fn restore(&self) {
        for (name, package, meta) in self.store.load() {
            if package::check_name(&name).is_err() {
                continue;
            }
            let logs = Arc::new(Logs::default());
            let prepared = self
                .prepare(
                    &name,
                    meta.options,
                    package,
                    logs.clone(),
                    Some(meta.exports),
                )
                .await;
            match prepared {
                Ok((mut deployment, _)) => {
                    deployment.version = meta.version;
                    deployment.deployed_at_ms = meta.deployed_at_ms;
                    let app = App {
                        current: Arc::new(deployment),
                        logs,
                    };
                    self.apps.write().unwrap().insert(name, app);
                }
                Err(e) => eprintln!("nodeos-vm serve: cannot restore app {name}: {e}"),
            }
        }
    }

    /// Stops idle instances past their time; boots instances up to each app's `min`, and the
    /// apps' standby VMs one at a time (a restart that restores many apps, or many deploys,
    /// does not start all their VMs at once).
    pub fn reap(&self) {
        self.sandboxes.reap();
        let now = Instant::now();
        let apps = self.apps();
        let mut booting = apps
            .iter()
            .any(|(_, app)| app.current.pool.standby() == Some(Standby::Booting));
        for (name, app) in apps {
            let pool = &app.current.pool;
            pool.reap(now);
            booting = booting || pool.prepare_standby();
            if pool.below_min() {
                let deployment = app.current.clone();
                tokio::spawn(async move {
                    match deployment.pool.boot().await {
                        Ok(instance) => deployment.pool.put(instance),
                        Err(e) => tracing::warn!("keeping {name} warm: {e}"),
                    }
                });
            }
        }
    }
}
