//! How many boxes one process runs at once: each L1 vCPU is a TCG thread that keeps a host core
//! busy, so the boxes running together have at most one vCPU per host core (`KVM_BOX_CPUS`
//! changes that count); the rest wait their turn. A box's timeout starts when it gets its turn.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

const CPUS_ENV: &str = "KVM_BOX_CPUS";

/// The host cores boxes may use, and how many of them no box holds.
struct Cores {
    total: usize,
    free: Mutex<usize>,
    freed: Condvar,
}

/// Held while a box runs: the host cores its L1's vCPUs take.
pub(crate) struct Slot<'a> {
    cores: &'a Cores,
    taken: usize,
}

impl Cores {
    fn new(total: usize) -> Self {
        let total = total.max(1);
        Cores {
            total,
            free: Mutex::new(total),
            freed: Condvar::new(),
        }
    }

    fn free(&self) -> MutexGuard<'_, usize> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `vcpus` cores are free (all of them, for an L1 with more vCPUs than there
    /// are cores) and takes them.
    fn take(&self, vcpus: u8) -> Slot<'_> {
        let taken = usize::from(vcpus).clamp(1, self.total);
        let mut free = self.free();
        while *free < taken {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= taken;
        Slot { cores: self, taken }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.cores.free() += self.taken;
        self.cores.freed.notify_all();
    }
}

/// Takes host cores for a box whose L1 has `vcpus` vCPUs, waiting for them if need be.
pub(crate) fn acquire(vcpus: u8) -> Slot<'static> {
    static CORES: OnceLock<Cores> = OnceLock::new();
    CORES
        .get_or_init(|| {
            Cores::new(
                std::env::var(CPUS_ENV)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            )
        })
        .take(vcpus)
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_box_waits_until_its_vcpus_have_cores() {
        let cores = Cores::new(2);
        let one = cores.take(1);
        let two = cores.take(1);
        assert_eq!(*cores.free(), 0);
        thread::scope(|s| {
            // More vCPUs than cores: it takes them all, once both are back.
            let waiter = s.spawn(|| cores.take(3).taken);
            thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "took cores that were not free");
            drop(one);
            thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "took two cores with one free");
            drop(two);
            assert_eq!(waiter.join().unwrap(), 2);
        });
        assert_eq!(*cores.free(), 2);
    }
}
