//! The latest events of each room, in memory, so that an incremental `/sync` reads what just
//! happened without asking the database ("cache recent messages").
//!
//! A room's ring holds every timeline event above its floor, in stream order; older events
//! fall out as new ones arrive, and whole rings fall out, least recently used first, once
//! their events weigh more than the budget. Readers asking about positions at or above the
//! floor are answered from it.

use std::{collections::VecDeque, sync::Arc};

use ruma::{OwnedRoomId, RoomId};

use crate::service::{cache::BoundedLru, rooms::PduRef};

/// Events kept per room.
pub const RING_SIZE: usize = 64;
/// Bytes of event JSON the rings of all rooms may hold.
const RECENT_BYTES: usize = 32 << 20;

#[derive(Default)]
pub(super) struct Ring {
    /// Every timeline event of the room with a position above this is in `events`.
    floor: i64,
    events: VecDeque<PduRef>,
}

impl Ring {
    fn weight(&self) -> usize {
        self.events.iter().map(|p| p.json.get().len()).sum::<usize>() + 64
    }
}

/// The rings of all rooms. Written only by the timeline's commit, under the room's lock.
pub(super) struct Recent {
    rings: BoundedLru<OwnedRoomId, Arc<std::sync::Mutex<Ring>>>,
}

impl Default for Recent {
    fn default() -> Self {
        Self { rings: BoundedLru::new(RECENT_BYTES) }
    }
}

impl Recent {
    /// Records an event that entered the timeline live. `previous_latest` is the room's
    /// latest position before it, if known, which starts a new ring's floor.
    pub(super) fn remember(&self, pdu: &PduRef, previous_latest: Option<i64>) {
        let init = || {
            // Without knowing what came before, a ring cannot vouch for anything older.
            let floor = previous_latest.unwrap_or(pdu.stream_pos - 1);
            Arc::new(std::sync::Mutex::new(Ring { floor, events: VecDeque::new() }))
        };
        self.rings.upsert(pdu.room_id.clone(), init, |ring| {
            let mut ring = ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ring.events.push_back(Arc::clone(pdu));
            while ring.events.len() > RING_SIZE {
                if let Some(old) = ring.events.pop_front() {
                    ring.floor = old.stream_pos;
                }
            }
            ring.weight()
        });
    }

    /// Forgets a room's ring (after an event in it changed, e.g. by redaction).
    pub(super) fn forget(&self, room_id: &RoomId) {
        self.rings.remove(&room_id.to_owned());
    }

    /// The room's events with positions in `(after, up_to]`, oldest first, if the ring holds
    /// all of them.
    pub(super) fn events(&self, room_id: &RoomId, after: i64, up_to: i64) -> Option<Vec<PduRef>> {
        let ring = self.rings.get(&room_id.to_owned())?;
        let ring = ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if after < ring.floor {
            return None;
        }
        Some(ring.events.iter().filter(|p| p.stream_pos > after && p.stream_pos <= up_to).cloned().collect())
    }
}
