//! The latest stream position written per stream and key, in memory, so that a `/sync` can
//! skip a query when nothing newer than its token can exist.
//!
//! Writers note their position when they allocate it, before they commit; a reader sees a
//! position only once it is committed, so the note is always there first. A note for a write
//! that then fails costs a query, never a missed change. A key nobody noted (e.g. after a
//! restart) is unknown, and the reader queries; what the query proves is recorded with
//! [`LatestIndex::learned`].

use std::{
    num::NonZeroUsize,
    sync::{Mutex, PoisonError},
};

use lru::LruCache;
use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};

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

/// Keys kept at most; the least recently used go first. Forgetting a key is always safe (it
/// becomes unknown, and the next reader queries), so the bound costs queries, never updates.
/// At about 100 bytes a key, this is some 10 MB.
pub const MAX_KEYS: usize = 100_000;

pub struct LatestIndex {
    latest: Mutex<LruCache<Key, i64>>,
}

impl Default for LatestIndex {
    fn default() -> Self {
        Self::with_capacity(NonZeroUsize::new(MAX_KEYS).unwrap_or(NonZeroUsize::MIN))
    }
}

impl LatestIndex {
    pub fn with_capacity(capacity: NonZeroUsize) -> Self {
        Self { latest: Mutex::new(LruCache::new(capacity)) }
    }

    /// A write for `key` at `pos` is about to be made.
    pub fn note(&self, key: Key, pos: i64) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = latest.get_or_insert_mut(key, || pos);
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

    /// Forgets a deleted device's keys; nothing will be written for them again.
    pub fn forget_device(&self, user_id: &UserId, device_id: &DeviceId) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.pop(&Key::ToDevice(user_id.to_owned(), device_id.to_owned()));
        latest.pop(&Key::ToDeviceAcked(user_id.to_owned(), device_id.to_owned()));
    }

    /// How many keys are known (for tests and metrics).
    pub fn known_keys(&self) -> usize {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).len()
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

    #[test]
    fn keys_are_bounded_and_forgotten_keys_are_unknown() {
        let index = LatestIndex::default();
        let user = ruma::user_id!("@u:x");
        for n in 0..(MAX_KEYS + 1000) {
            index.note(Key::ToDevice(user.to_owned(), format!("D{n}").into()), 5);
        }
        assert!(index.known_keys() <= MAX_KEYS, "{} keys", index.known_keys());
        assert!(index.may_have_changed(&Key::ToDevice(user.to_owned(), "D0".into()), 5), "forgotten: query");
        let last = Key::ToDevice(user.to_owned(), format!("D{}", MAX_KEYS + 999).into());
        assert!(!index.may_have_changed(&last, 5));
        index.forget_device(user, format!("D{}", MAX_KEYS + 999).as_str().into());
        assert!(index.may_have_changed(&last, 5), "a deleted device's keys go");
    }
}
