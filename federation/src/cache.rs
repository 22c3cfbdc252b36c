//! A small map whose entries expire and whose size is capped.
//!
//! Every cache in this crate (destinations, `.well-known` answers, per-destination HTTP
//! clients) is keyed by a name a remote party chooses, so none may grow without bound. When
//! the map is full, the entry closest to expiry goes first: expired entries are always the
//! first to go, and a live entry is only evicted when nothing has expired.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    time::Instant,
};

pub(crate) struct TtlCache<K, V> {
    entries: HashMap<K, Slot<V>>,
    /// The same keys ordered by expiry; the sequence number keeps equal instants apart.
    by_expiry: BTreeMap<(Instant, u64), K>,
    capacity: usize,
    next_seq: u64,
}

struct Slot<V> {
    value: V,
    expires: Instant,
    seq: u64,
}

impl<K: Clone + Eq + Hash, V> TtlCache<K, V> {
    /// A cache holding at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), by_expiry: BTreeMap::new(), capacity: capacity.max(1), next_seq: 0 }
    }

    /// The value for `key` if it has not expired at `now`. An expired entry is dropped.
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        let expired = self.entries.get(key).is_some_and(|slot| slot.expires <= now);
        if expired {
            self.remove(key);
        }
        self.entries.get(key).map(|slot| &slot.value)
    }

    /// Stores `value` until `expires`, replacing any entry for `key`.
    pub(crate) fn insert(&mut self, key: K, value: V, expires: Instant) {
        self.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_expiry.pop_first() else { break };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_expiry.insert((expires, seq), key.clone());
        self.entries.insert(key, Slot { value, expires, seq });
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.entries.remove(key)?;
        self.by_expiry.remove(&(slot.expires, slot.seq));
        Some(slot.value)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_expire() {
        let now = Instant::now();
        let mut cache = TtlCache::new(4);
        cache.insert("a", 1, now + Duration::from_secs(10));
        assert_eq!(cache.get(&"a", now), Some(&1));
        assert_eq!(cache.get(&"a", now + Duration::from_secs(10)), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn full_cache_evicts_the_entry_closest_to_expiry() {
        let now = Instant::now();
        let mut cache = TtlCache::new(2);
        cache.insert("long", 1, now + Duration::from_secs(100));
        cache.insert("short", 2, now + Duration::from_secs(5));
        cache.insert("new", 3, now + Duration::from_secs(50));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"short", now), None);
        assert_eq!(cache.get(&"long", now), Some(&1));
        assert_eq!(cache.get(&"new", now), Some(&3));
    }

    #[test]
    fn replacing_a_key_keeps_one_entry() {
        let now = Instant::now();
        let mut cache = TtlCache::new(2);
        for i in 0..10 {
            cache.insert("k", i, now + Duration::from_secs(i));
        }
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.by_expiry.len(), 1);
        assert_eq!(cache.get(&"k", now), Some(&9));
    }
}
