//! How many boxes one process runs at once (`KVM_BOX_JOBS`); the rest wait their turn. A box's
//! timeout starts when it gets its turn.

use std::sync::{Condvar, Mutex, OnceLock};

const JOBS_ENV: &str = "KVM_BOX_JOBS";

struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = std::env::var(JOBS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cpus / 2)
            .max(1);
        Slots {
            free: Mutex::new(jobs),
            freed: Condvar::new(),
        }
    })
}

/// Held while a box runs.
pub(crate) struct Slot(());

pub(crate) fn acquire() -> Slot {
    let slots = slots();
    let mut free = slots.free.lock().unwrap_or_else(|e| e.into_inner());
    while *free == 0 {
        free = slots.freed.wait(free).unwrap_or_else(|e| e.into_inner());
    }
    *free -= 1;
    Slot(())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = slots();
        *slots.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        slots.freed.notify_one();
    }
}
