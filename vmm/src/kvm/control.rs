//! How the VM's threads learn that it stops or pauses, and how the host asks for either.
//!
//! Stopping: whoever ends the VM records the outcome in [`VmControl`] (first one wins), sets its
//! flag and signals its eventfd; the thread that owns the vCPU threads then kicks each of them
//! (crate::kvm::vcpu::kick), so a vCPU halted in the kernel or about to enter it returns at once.
//!
//! Pausing: [`VmControl::pause`] asks every thread that touches guest or device state (the
//! vCPUs, the device thread, console input: the VM's "parties") to hold still, and returns once
//! each is parked where it holds no device lock, so that what a later snapshot reads is
//! consistent. vCPUs are kicked out of KVM_RUN like for a stop (by the owner of their threads,
//! which [`VmControl::supervise`] wakes); the others wait on descriptors and see
//! [`VmControl::pause_evt`]. [`VmControl::resume`] lets them all go on. A stop ends a pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use super::vcpu::RunError;
use crate::devices::{lock, Lifecycle};
use crate::vm::VmExit;

/// How often the vCPUs are kicked again while a pause waits for them: a kick that lands just
/// before a vCPU clears its last one is lost, the next one is not.
const KICK_INTERVAL: Duration = Duration::from_millis(1);

/// Where a running VM is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// A pause was asked for; not every party is parked yet.
    Pausing,
    /// Every party is parked: guest and device state hold still.
    Paused,
    /// The VM has an outcome; its threads are ending.
    Stopping,
}

/// A pause or resume the VM's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {asked} a VM that is {state:?}")]
pub struct TransitionError {
    pub asked: &'static str,
    pub state: RunState,
}

/// How the VM ends and pauses, and who has been told.
pub struct VmControl {
    stopping: Arc<AtomicBool>,
    stop_evt: EventFd,
    outcome: Mutex<Option<Result<VmExit, RunError>>>,
    /// Set while a pause is asked for: the vCPUs read it on every exit, without a lock.
    pause_requested: AtomicBool,
    /// Readable while a pause is asked for, for threads that wait on descriptors.
    pause_evt: EventFd,
    gate: Mutex<Gate>,
    /// Signalled on every change of `gate` and on a stop.
    changed: Condvar,
}

struct Gate {
    requested: bool,
    parked: usize,
    /// How many threads park on a pause.
    parties: usize,
}

impl VmControl {
    /// The control of a VM whose pause waits for `parties` threads to park.
    pub fn new(parties: usize) -> std::io::Result<Self> {
        Ok(VmControl {
            stopping: Arc::new(AtomicBool::new(false)),
            stop_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            outcome: Mutex::new(None),
            pause_requested: AtomicBool::new(false),
            pause_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            gate: Mutex::new(Gate {
                requested: false,
                parked: 0,
                parties,
            }),
            changed: Condvar::new(),
        })
    }

    /// Ends the VM with `outcome`, unless it already has one.
    pub fn stop(&self, outcome: Result<VmExit, RunError>) {
        let mut slot = lock(&self.outcome);
        if slot.is_none() {
            match &outcome {
                Ok(exit) => tracing::debug!("VM ends: {exit:?}"),
                Err(e) => tracing::debug!("VM ends: {e}"),
            }
            *slot = Some(outcome);
        }
        drop(slot);
        self.stopping.store(true, Ordering::Release);
        // The eventfd is never read: it stays readable for every thread that watches it.
        let _ = self.stop_evt.write(1);
        // Under the gate's lock: a thread that saw no stop before waiting gets the wake-up.
        let _gate = self.gate();
        self.changed.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The flag itself, for code that only needs to know (console output).
    pub fn stopping_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    pub fn take_outcome(&self) -> Option<Result<VmExit, RunError>> {
        lock(&self.outcome).take()
    }

    pub fn state(&self) -> RunState {
        Self::state_of(&self.gate(), self.is_stopping())
    }

    fn state_of(gate: &Gate, stopping: bool) -> RunState {
        match (stopping, gate.requested) {
            (true, _) => RunState::Stopping,
            (false, false) => RunState::Running,
            (false, true) if gate.parked < gate.parties => RunState::Pausing,
            (false, true) => RunState::Paused,
        }
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        lock(&self.gate)
    }

    /// Asks the VM's parties to park and waits until they all have: from `Running` only.
    /// Returns an error if the VM stops meanwhile. A party busy in a device (a vCPU writing to
    /// a console nobody reads) parks once that returns.
    pub fn pause(&self) -> Result<(), TransitionError> {
        self.request_pause()?;
        self.wait_paused()
    }

    /// Asks the VM's parties to park, without waiting for them: from `Running` only. A vCPU
    /// that asks while serving an exit (the boot timer's save byte) parks before it runs the
    /// guest's next instruction.
    pub fn request_pause(&self) -> Result<(), TransitionError> {
        let mut gate = self.gate();
        let state = Self::state_of(&gate, self.is_stopping());
        if state != RunState::Running {
            return Err(TransitionError {
                asked: "pause",
                state,
            });
        }
        gate.requested = true;
        self.pause_requested.store(true, Ordering::Release);
        let _ = self.pause_evt.write(1);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits until every party has parked for the pause asked for; an error if the VM stops
    /// first, or if no pause is asked for.
    pub fn wait_paused(&self) -> Result<(), TransitionError> {
        let mut gate = self.gate();
        loop {
            match Self::state_of(&gate, self.is_stopping()) {
                RunState::Paused => return Ok(()),
                RunState::Pausing => gate = wait(&self.changed, gate, None),
                state => {
                    return Err(TransitionError {
                        asked: "wait for a pause",
                        state,
                    })
                }
            }
        }
    }

    /// Lets the parked parties go on: from `Paused` only.
    pub fn resume(&self) -> Result<(), TransitionError> {
        let mut gate = self.gate();
        let state = Self::state_of(&gate, self.is_stopping());
        if state != RunState::Paused {
            return Err(TransitionError {
                asked: "resume",
                state,
            });
        }
        gate.requested = false;
        self.pause_requested.store(false, Ordering::Release);
        // Not readable any more: a party back at its descriptors does not park again.
        let _ = self.pause_evt.read();
        self.changed.notify_all();
        Ok(())
    }

    /// Whether a pause is asked for (one atomic load), for a party that must get ready to park.
    pub fn pause_requested(&self) -> bool {
        self.pause_requested.load(Ordering::Acquire)
    }

    /// For a party: holds the calling thread while a pause is asked for (and the VM is not
    /// stopping). Returns whether it parked. Costs one atomic load when no pause is asked for.
    pub fn park_if_paused(&self) -> bool {
        if !self.pause_requested() {
            return false;
        }
        let mut gate = self.gate();
        if !gate.requested || self.is_stopping() {
            return false;
        }
        gate.parked += 1;
        self.changed.notify_all();
        while gate.requested && !self.is_stopping() {
            gate = wait(&self.changed, gate, None);
        }
        gate.parked -= 1;
        true
    }

    /// For the thread that owns the vCPU threads: returns once the VM is stopping; until then,
    /// while a pause waits for parties, calls `kick` (which kicks the vCPUs) every
    /// [`KICK_INTERVAL`].
    pub fn supervise(&self, kick: impl Fn()) {
        let mut gate = self.gate();
        while !self.is_stopping() {
            if Self::state_of(&gate, false) == RunState::Pausing {
                // Under the lock: no resume comes between the look and the kicks, so every kick
                // lands while the pause is still asked for.
                kick();
                gate = wait(&self.changed, gate, Some(KICK_INTERVAL));
            } else {
                gate = wait(&self.changed, gate, None);
            }
        }
    }
}

/// Waits on `changed` (for at most `timeout`), taking the gate even if a thread panicked with it.
fn wait<'a>(
    changed: &Condvar,
    gate: MutexGuard<'a, Gate>,
    timeout: Option<Duration>,
) -> MutexGuard<'a, Gate> {
    match timeout {
        Some(t) => match changed.wait_timeout(gate, t) {
            Ok((gate, _)) => gate,
            Err(poisoned) => poisoned.into_inner().0,
        },
        None => changed
            .wait(gate)
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    }
}

impl Lifecycle for VmControl {
    fn stop_evt(&self) -> &EventFd {
        &self.stop_evt
    }

    fn pause_evt(&self) -> &EventFd {
        &self.pause_evt
    }

    fn park(&self) {
        self.park_if_paused();
    }
}

/// Ends the VM with an error if the thread holding it unwinds or returns without a result.
pub struct EndGuard<'a> {
    pub control: &'a VmControl,
    pub what: &'static str,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.control.stop(Err(RunError::ThreadEnded(self.what)));
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    #[test]
    fn first_outcome_wins() {
        let c = VmControl::new(0).unwrap();
        assert!(!c.is_stopping());
        c.stop(Ok(VmExit::Guest(3)));
        c.stop(Ok(VmExit::Reset));
        c.stop(Err(RunError::ThreadEnded("vCPU")));
        assert!(c.is_stopping());
        c.supervise(|| unreachable!()); // returns at once
        assert_eq!(c.take_outcome().unwrap().unwrap(), VmExit::Guest(3));
    }

    #[test]
    fn guard_reports_a_thread_that_ends_early() {
        let c = VmControl::new(0).unwrap();
        drop(EndGuard {
            control: &c,
            what: "vCPU",
        });
        let err = c.take_outcome().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "vCPU thread ended without a result");
    }

    /// Two parties that park when told: pause waits for both, resume lets them go, and the
    /// transitions out of order are refused.
    #[test]
    fn pause_waits_for_every_party() {
        let c = Arc::new(VmControl::new(2).unwrap());
        assert_eq!(c.state(), RunState::Running);
        let refused = c.resume().unwrap_err();
        assert_eq!(refused.state, RunState::Running);
        let parties: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                thread::spawn(move || {
                    let mut parked = 0;
                    while !c.is_stopping() {
                        if c.park_if_paused() {
                            parked += 1;
                        }
                        thread::yield_now();
                    }
                    parked
                })
            })
            .collect();
        for _ in 0..3 {
            c.pause().unwrap();
            assert_eq!(c.state(), RunState::Paused);
            assert_eq!(c.gate().parked, 2);
            assert_eq!(c.pause_evt.read().unwrap(), 1, "readable while paused");
            let _ = c.pause_evt.write(1);
            assert_eq!(c.pause().unwrap_err().state, RunState::Paused);
            c.resume().unwrap();
            assert_eq!(c.state(), RunState::Running);
            assert!(c.pause_evt.read().is_err(), "not readable once resumed");
        }
        c.pause().unwrap();
        c.stop(Ok(VmExit::Stopped));
        for p in parties {
            // A party still asleep when the next pause comes stays parked through it.
            assert!(
                (1..=4).contains(&p.join().unwrap()),
                "a stop lets parties go"
            );
        }
        assert_eq!(c.state(), RunState::Stopping);
        assert_eq!(c.pause().unwrap_err().state, RunState::Stopping);
        assert_eq!(c.resume().unwrap_err().state, RunState::Stopping);
    }

    /// A pause that a party never answers ends with the stop.
    #[test]
    fn a_stop_ends_a_pause_that_waits() {
        let c = Arc::new(VmControl::new(1).unwrap());
        let c2 = c.clone();
        let stopper = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            c2.stop(Ok(VmExit::Stopped));
        });
        assert_eq!(c.pause().unwrap_err().state, RunState::Stopping);
        stopper.join().unwrap();
    }
}
