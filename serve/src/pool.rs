//! The instances of one version of one app: warm ones reused (the most recently used first),
//! new ones booted while fewer than `max` run, calls queued beyond that up to `queue` (then
//! 429), idle ones beyond `min` stopped after `idle`. A retired pool (the app was redeployed
//! or deleted) serves the calls it already took and keeps no instance afterwards.
//!
//! With `standby` (the default), the pool also keeps one VM booted without a runner, its
//! package mounted: a cold start takes it and only starts the runner. It is booted while no
//! call waits or runs (so that it never competes with one for the CPU), and belongs to this
//! version of this app alone, like an instance.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

use super::instance::{self, AppSpec, BootError, Instance};
use super::logs::Logs;
use super::package::Options;
use super::roster::{self, Roster, State};
use super::vm::{Machine, Standby, Vm, Vms};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("all {max} instances of the app are busy and {queued} calls are waiting already; try again later")]
    Busy { max: usize, queued: usize },
    #[error("starting an instance of the app: {0}")]
    Boot(#[from] BootError),
}

pub struct Pool {
    pub options: Options,
    machine: Arc<Machine>,
    app: Arc<AppSpec>,
    logs: Arc<Logs>,
    vms: Vms,
    idle: Mutex<VecDeque<Instance>>,
    permits: Semaphore,
    /// Calls waiting for an instance or running.
    calls: AtomicUsize,
    /// Instances alive: idle, busy or booting.
    roster: Arc<Roster>,
    retired: AtomicBool,
    /// The standby VM, booting or booted.
    standby: Mutex<Option<JoinHandle<Result<Vm, BootError>>>>,
}

/// An instance lent to one call; back to the pool when dropped, unless it is broken.
pub struct Lease<'a> {
    pool: &'a Pool,
    pub instance: Option<Instance>,
    /// It was booted for this call.
    pub cold: bool,
    _permit: SemaphorePermit<'a>,
    _call: CallSlot<'a>,
}

struct CallSlot<'a>(&'a AtomicUsize);

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.pool.put(instance);
        }
    }
}

impl Pool {
    pub fn new(
        options: Options,
        machine: Arc<Machine>,
        app: Arc<AppSpec>,
        logs: Arc<Logs>,
        vms: Vms,
    ) -> Pool {
        Pool {
            permits: Semaphore::new(options.max),
            options,
            machine,
            app,
            logs,
            vms,
            idle: Mutex::new(VecDeque::new()),
            calls: AtomicUsize::new(0),
            roster: Arc::default(),
            retired: AtomicBool::new(false),
            standby: Mutex::new(None),
        }
    }

    /// Boots an instance outside any call (to verify a deployment, or to keep `min` warm).
    pub async fn boot(&self) -> Result<Instance, BootError> {
        Instance::boot(
            self.machine.clone(),
            self.app.clone(),
            self.logs.clone(),
            self.vms.clone(),
            self.roster.join(false),
        )
        .await
    }

    /// An instance booted for a call: in the standby VM when there is one (waiting for it if
    /// it still boots), else in a VM booted now.
    async fn cold_start(&self) -> Result<Instance, BootError> {
        match self.take_standby().await {
            Some(vm) => {
                let member = self.roster.join(true);
                Instance::start(vm, self.app.clone(), self.logs.clone(), member).await
            }
            None => self.boot().await,
        }
    }

    /// The standby VM, unless there is none or it failed to boot or has ended since.
    async fn take_standby(&self) -> Option<Vm> {
        let booting = self.standby.lock().unwrap().take()?;
        Standby::take(booting, &format!("{}'s", self.app.name)).await
    }

    /// Starts booting the standby VM when the pool wants one and has none, while no call waits
    /// or runs; whether it did.
    pub fn prepare_standby(&self) -> bool {
        if !self.options.standby
            || self.retired.load(Ordering::SeqCst)
            || self.calls.load(Ordering::SeqCst) > 0
        {
            return false;
        }
        let mut standby = self.standby.lock().unwrap();
        if standby.is_some() {
            return false;
        }
        let boot = instance::boot_standby(self.machine.clone(), self.app.clone(), self.vms.clone());
        *standby = Some(tokio::spawn(boot));
        true
    }

    /// Where the standby VM is, if there is one.
    pub fn standby(&self) -> Option<Standby> {
        self.standby.lock().unwrap().as_ref().map(Standby::of)
    }

    /// An instance for one call: a warm one, a new one, or, when `max` are busy, the first
    /// one freed (calls wait in order).
    pub async fn lease(&self) -> Result<Lease<'_>, LeaseError> {
        let queued = self.calls.fetch_add(1, Ordering::SeqCst);
        let call = CallSlot(&self.calls);
        if queued >= self.options.max + self.options.queue {
            return Err(LeaseError::Busy {
                max: self.options.max,
                queued: queued.saturating_sub(self.options.max),
            });
        }
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let warm = {
            let mut idle = self.idle.lock().unwrap();
            // One whose runner ended while idle (it crashed, or flooded and was stopped) is
            // dropped here, not leased.
            idle.retain(Instance::reusable);
            idle.pop_back()
        };
        let (instance, cold) = match warm {
            Some(instance) => (instance, false),
            None => (self.cold_start().await?, true),
        };
        instance.member.set(State::Busy);
        Ok(Lease {
            pool: self,
            instance: Some(instance),
            cold,
            _permit: permit,
            _call: call,
        })
    }

    /// Takes `instance` back (idle), or lets it stop when it is broken or the pool retired.
    pub fn put(&self, instance: Instance) {
        if instance.reusable() && !self.retired.load(Ordering::SeqCst) {
            instance.member.set(State::Idle);
            self.idle.lock().unwrap().push_back(instance);
        }
    }

    /// No more instances: the idle ones stop now, the busy ones after their call.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.idle.lock().unwrap().clear();
        // Its VM stops once booted (the task's result, dropped unread).
        self.standby.lock().unwrap().take();
    }

    /// Drops the idle instances whose runner ended, and stops those idle for longer than
    /// `idle` beyond the `min` kept warm (the server then boots up to `min` again).
    pub fn reap(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap();
        idle.retain(Instance::reusable);
        while self.roster.len() > self.options.min
            && idle
                .front()
                .is_some_and(|i| now.duration_since(i.last_used) >= self.options.idle)
        {
            idle.pop_front();
        }
    }

    /// Whether fewer than `min` instances run (and the pool still serves).
    pub fn below_min(&self) -> bool {
        !self.retired.load(Ordering::SeqCst) && self.roster.len() < self.options.min
    }

    /// Instances booted and idle: what the next calls get without a cold start.
    pub fn warm(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    pub fn instances(&self) -> usize {
        self.roster.len()
    }

    /// Every instance alive, oldest first.
    pub fn roster(&self) -> Vec<roster::Entry> {
        self.roster.list()
    }
}
