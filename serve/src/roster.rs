//! The instances of a pool, as the API lists them: each one's entry from the start of its
//! boot until it stops, with its state and when it started.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::clock::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Booting,
    Idle,
    Busy,
}

/// One instance, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: u64,
    pub state: State,
    pub started_ms: u64,
    /// It started in the pool's standby VM (booted ahead), not in a VM booted for it.
    pub standby: bool,
}

#[derive(Default)]
pub struct Roster {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Entry>>,
}

/// An instance's place in its roster, left when dropped.
pub struct Member {
    roster: Arc<Roster>,
    id: u64,
}

impl Roster {
    /// A new instance, booting (in the standby VM, with `standby`).
    pub fn join(self: &Arc<Self>, standby: bool) -> Member {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Entry {
            id,
            state: State::Booting,
            started_ms: now_ms(),
            standby,
        };
        self.live.lock().unwrap().insert(id, entry);
        Member {
            roster: self.clone(),
            id,
        }
    }

    /// How many instances are alive: booting, idle or busy.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    /// Every instance alive, oldest first.
    pub fn list(&self) -> Vec<Entry> {
        self.live.lock().unwrap().values().copied().collect()
    }
}

impl Member {
    pub fn set(&self, state: State) {
        if let Some(entry) = self.roster.live.lock().unwrap().get_mut(&self.id) {
            entry.state = state;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.roster.live.lock().unwrap().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_listed_with_their_state_until_dropped() {
        let roster = Arc::new(Roster::default());
        let a = roster.join(false);
        let b = roster.join(false);
        b.set(State::Busy);
        let listed: Vec<(u64, State)> = roster.list().iter().map(|e| (e.id, e.state)).collect();
        assert_eq!(listed, [(1, State::Booting), (2, State::Busy)]);
        drop(a);
        assert_eq!(roster.len(), 1);
        drop(b);
        assert!(roster.list().is_empty());
    }
}
