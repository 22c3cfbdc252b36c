//! The latest stream position written per stream and key, in memory, so that a `/sync` can
//! skip a query when nothing newer than its token can exist.
//!
//! Writers note their position when they allocate it, before they commit; a reader sees a
//! position only once it is committed, so the note is always there first. A note for a write
//! that then fails costs a query, never a missed change. A key nobody noted (e.g. after a
//! restart) is unknown, and the reader queries; what the query proves is recorded with
//! [`LatestIndex::learned`].

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    AccountData(OwnedUserId),
    Receipts(OwnedRoomId),
    ToDevice(OwnedUserId, OwnedDeviceId),
    /// How far a device's to-device messages have been acknowledged (and deleted).
    ToDeviceAcked(OwnedUserId, OwnedDeviceId),
    /// Device-list changes and membership changes (which change who shares a room).
    DeviceLists,
    Presence,
}

#[derive(Default)]
pub struct LatestIndex {
    latest: Mutex<HashMap<Key, i64>>,
}

impl LatestIndex {
    /// A write for `key` at `pos` is about to be made.
    pub fn note(&self, key: Key, pos: i64) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = latest.entry(key).or_insert(pos);
        *entry = (*entry).max(pos);
    }

    /// The latest position noted for `key`, if known.
    pub fn get(&self, key: &Key) -> Option<i64> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied()
    }

    /// Whether anything for `key` may have been written after `since`.
    pub fn may_have_changed(&self, key: &Key, since: i64) -> bool {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).get(key).is_none_or(|latest| *latest > since)
    }

    /// A query proved nothing for `key` was written in `(since, upto]` beyond `found` (the
    /// highest position it returned, if any); everything above `upto` is noted by writers.
    pub fn learned(&self, key: Key, since: i64, found: Option<i64>) {
        self.note(key, found.unwrap_or(since).max(since));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_may_have_changed_and_notes_move_forward() {
        let index = LatestIndex::default();
        assert!(index.may_have_changed(&Key::Presence, 10), "unknown: query");
        index.learned(Key::Presence, 10, None);
        assert!(!index.may_have_changed(&Key::Presence, 10));
        assert!(index.may_have_changed(&Key::Presence, 9), "an older token may miss something");
        index.note(Key::Presence, 12);
        assert!(index.may_have_changed(&Key::Presence, 10));
        index.learned(Key::Presence, 5, Some(7));
        assert!(!index.may_have_changed(&Key::Presence, 12), "learning never moves a note back");
    }
}
