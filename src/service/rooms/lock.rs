//! Per-room append locks. Events of a room are appended one at a time, so every reader sees
//! one order. The guard is a parameter of the append path: nobody can append without it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use ruma::{OwnedRoomId, RoomId};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

pub struct RoomLocks {
    locks: Mutex<Locks>,
}

struct Locks {
    map: HashMap<OwnedRoomId, Arc<AsyncMutex<()>>>,
    /// Sweep once the map is larger than this; after a sweep, twice what survived. Locks in
    /// use survive a sweep, so with many rooms busy at once a fixed threshold would sweep the
    /// whole map on every call; doubling makes it one sweep per doubling.
    sweep_above: usize,
    /// Sweeps so far (for tests and metrics).
    sweeps: u64,
}

impl Default for RoomLocks {
    fn default() -> Self {
        Self { locks: Mutex::new(Locks { map: HashMap::new(), sweep_above: SWEEP_ABOVE, sweeps: 0 }) }
    }
}

/// Proof that the holder has the room's append lock.
pub struct RoomGuard {
    room_id: OwnedRoomId,
    /// Shared with a commit that runs on in a task of its own, so that the lock is released
    /// only when both the caller and that commit are done, even if the caller is dropped.
    _guard: Arc<OwnedMutexGuard<()>>,
}

impl RoomGuard {
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The same hold on the lock, for a task that must finish what the holder started.
    pub(super) fn share(&self) -> Self {
        Self { room_id: self.room_id.clone(), _guard: Arc::clone(&self._guard) }
    }
}

/// Locks kept before unused ones are first swept.
const SWEEP_ABOVE: usize = 4096;

impl RoomLocks {
    pub async fn lock(&self, room_id: &RoomId) -> RoomGuard {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            if locks.map.len() > locks.sweep_above {
                // Nobody holds or waits for a lock only this map refers to.
                locks.map.retain(|_, lock| Arc::strong_count(lock) > 1);
                locks.sweep_above = SWEEP_ABOVE.max(2 * locks.map.len());
                locks.sweeps += 1;
            }
            Arc::clone(locks.map.entry(room_id.to_owned()).or_default())
        };
        RoomGuard { room_id: room_id.to_owned(), _guard: Arc::new(mutex.lock_owned().await) }
    }

    /// (locks held in the map, sweeps so far), for tests and metrics.
    pub fn stats(&self) -> (usize, u64) {
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        (locks.map.len(), locks.sweeps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: usize) -> OwnedRoomId {
        OwnedRoomId::try_from(format!("!r{n}:x")).unwrap_or_else(|_| ruma::owned_room_id!("!r:x"))
    }

    /// 20,000 rooms locked at once (all in use, so none can be swept): taking each lock must
    /// not sweep the whole map.
    #[tokio::test]
    async fn many_busy_rooms_cost_few_sweeps() {
        let locks = RoomLocks::default();
        let mut held = Vec::new();
        for n in 0..20_000 {
            held.push(locks.lock(&room(n)).await);
        }
        let (size, sweeps) = locks.stats();
        assert_eq!(size, 20_000);
        assert!(sweeps <= 4, "{sweeps} sweeps for 20,000 locks");
        // Released locks go at the next sweep.
        drop(held);
        for n in 0..40_000 {
            drop(locks.lock(&room(20_000 + n)).await);
        }
        let (size, _) = locks.stats();
        assert!(size < 40_000, "{size} locks kept");
    }
}
