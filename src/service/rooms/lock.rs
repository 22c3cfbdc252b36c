//! Per-room append locks. Events of a room are appended one at a time, so every reader sees
//! one order. The guard is a parameter of the append path: nobody can append without it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use ruma::{OwnedRoomId, RoomId};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct RoomLocks {
    locks: Mutex<HashMap<OwnedRoomId, Arc<AsyncMutex<()>>>>,
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

/// Locks kept before unused ones are swept.
const SWEEP_ABOVE: usize = 4096;

impl RoomLocks {
    pub async fn lock(&self, room_id: &RoomId) -> RoomGuard {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            if locks.len() > SWEEP_ABOVE {
                // Nobody holds or waits for a lock only this map refers to.
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(locks.entry(room_id.to_owned()).or_default())
        };
        RoomGuard { room_id: room_id.to_owned(), _guard: Arc::new(mutex.lock_owned().await) }
    }
}
