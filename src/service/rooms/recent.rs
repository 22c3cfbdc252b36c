//! The latest events of each room, in memory, so that an incremental `/sync` reads what just
//! happened without asking the database ("cache recent messages").
//!
//! A room's ring holds every event above its floor, in order; older events fall out as new
//! ones arrive. Readers asking about positions at or above the floor are answered from it.

use std::{
    collections::VecDeque,
    sync::{Arc, PoisonError},
};

use ruma::RoomId;

use super::{PduRef, Rooms};

/// Events kept per room.
pub const RING_SIZE: usize = 64;

#[derive(Default)]
pub(super) struct Ring {
    /// Every event of the room with a position above this is in `events`.
    floor: i64,
    events: VecDeque<PduRef>,
}

impl Rooms {
    /// Records an appended event. `previous_latest` is the room's latest position before it,
    /// which starts a new ring's floor.
    pub(super) fn remember_recent(&self, pdu: &PduRef, previous_latest: Option<i64>) {
        let mut rings = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = match rings.get_mut(&pdu.room_id) {
            Some(ring) => ring,
            None => {
                // Without knowing what came before, a ring cannot vouch for anything older.
                let floor = previous_latest.unwrap_or(pdu.stream_pos - 1);
                rings.entry(pdu.room_id.clone()).or_insert(Ring { floor, events: VecDeque::new() })
            }
        };
        ring.events.push_back(Arc::clone(pdu));
        while ring.events.len() > RING_SIZE {
            if let Some(old) = ring.events.pop_front() {
                ring.floor = old.stream_pos;
            }
        }
    }

    /// Forgets a room's ring (after an event in it changed, e.g. by redaction).
    pub(super) fn forget_recent(&self, room_id: &RoomId) {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).remove(room_id);
    }

    /// The room's events with positions in `(after, up_to]`, oldest first, if the ring holds
    /// all of them.
    pub fn recent_events(&self, room_id: &RoomId, after: i64, up_to: i64) -> Option<Vec<PduRef>> {
        let rings = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = rings.get(room_id)?;
        if after < ring.floor {
            return None;
        }
        Some(ring.events.iter().filter(|p| p.stream_pos > after && p.stream_pos <= up_to).cloned().collect())
    }
}
