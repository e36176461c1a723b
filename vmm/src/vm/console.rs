//! The guest's serial console as a backend sees it: two descriptors, and the moment the guest
//! says it takes input.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};

/// The guest's serial console: bytes read from `input` go to the UART, UART output goes to
/// `output`. The caller owns the host terminal (raw mode, EOF translation). The backend calls
/// `ready.signal()` when the guest writes [`contract::ports::CONSOLE_READY`] to the boot-timer port: the host
/// holds input back until then. It calls `template.signal()` when the guest writes
/// [`contract::ports::TEMPLATE_READY`]: its agent waits for the host's activation.
#[derive(Debug)]
pub struct ConsoleIo {
    pub input: OwnedFd,
    pub output: OwnedFd,
    pub ready: ConsoleReady,
    pub template: ConsoleReady,
}

/// Set once the guest wrote a boot-timer byte: `R` (its console takes input), or `T` (it is at
/// its template point).
#[derive(Clone, Default)]
pub struct ConsoleReady {
    state: Arc<(Mutex<bool>, Condvar)>,
    /// Called once, when first signalled: how a VMM process tells its parent.
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ConsoleReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleReady")
            .field("ready", &*self.state.0.lock().unwrap())
            .finish_non_exhaustive()
    }
}

impl ConsoleReady {
    /// One that calls `notify` when it is first signalled.
    pub fn notifying(notify: impl Fn() + Send + Sync + 'static) -> Self {
        ConsoleReady {
            state: Arc::default(),
            notify: Some(Arc::new(notify)),
        }
    }

    pub fn signal(&self) {
        let (lock, cvar) = &*self.state;
        let was = std::mem::replace(&mut *lock.lock().unwrap(), true);
        cvar.notify_all();
        if let (false, Some(notify)) = (was, &self.notify) {
            notify();
        }
    }

    /// Whether it has been signalled.
    pub fn is_signalled(&self) -> bool {
        *self.state.0.lock().unwrap()
    }

    pub fn wait(&self) {
        let (lock, cvar) = &*self.state;
        let mut ready = lock.lock().unwrap();
        while !*ready {
            ready = cvar.wait(ready).unwrap();
        }
    }
}
