//! Bounded in-memory caches that never drift from the database.
//!
//! Two rules make a cache safe here:
//! - **Every map has a bound.** [`BoundedLru`] evicts the least recently used entries once
//!   the total weight of its entries (bytes, members, events: the caller decides) passes its
//!   budget, so memory stays flat however many rooms and users churn through.
//! - **A load never overwrites a newer write.** A reader that misses loads from the database
//!   and then inserts; a writer may commit and update the cache in between, and the entry may
//!   even be evicted again before the reader inserts. [`Generations`] is a seqlock per key
//!   hash: writers bump it around their commit-and-update, and a reader only inserts what it
//!   loaded if the generation did not move meanwhile.

use std::{
    hash::{BuildHasher, Hash},
    num::NonZeroUsize,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use lru::LruCache;

/// An LRU map bounded by the total weight of its entries.
pub struct BoundedLru<K: Hash + Eq, V> {
    inner: Mutex<Inner<K, V>>,
    budget: usize,
}

struct Inner<K: Hash + Eq, V> {
    map: LruCache<K, (V, usize)>,
    weight: usize,
}

impl<K: Hash + Eq, V: Clone> BoundedLru<K, V> {
    /// A cache whose entries weigh at most `budget` in total.
    pub fn new(budget: usize) -> Self {
        Self { inner: Mutex::new(Inner { map: LruCache::unbounded(), weight: 0 }), budget }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().map.get(key).map(|(v, _)| v.clone())
    }

    /// Inserts or replaces, then evicts the least recently used entries beyond the budget.
    /// An entry heavier than the whole budget is not kept.
    pub fn put(&self, key: K, value: V, weight: usize) {
        let mut inner = self.lock();
        if weight > self.budget {
            if let Some((_, (_, old))) = inner.map.pop_entry(&key) {
                inner.weight -= old;
            }
            return;
        }
        if let Some((_, old)) = inner.map.put(key, (value, weight)) {
            inner.weight -= old;
        }
        inner.weight += weight;
        self.evict(&mut inner);
    }

    pub fn remove(&self, key: &K) {
        let mut inner = self.lock();
        if let Some((_, w)) = inner.map.pop(key) {
            inner.weight -= w;
        }
    }

    /// Changes an entry in place, if present, with its new weight.
    pub fn update(&self, key: &K, f: impl FnOnce(&mut V) -> usize) {
        let mut inner = self.lock();
        let Some((value, weight)) = inner.map.get_mut(key) else { return };
        let old = *weight;
        *weight = f(value);
        let new = *weight;
        inner.weight = inner.weight - old + new;
        self.evict(&mut inner);
    }

    /// Changes an entry in place, inserting `init()` first when absent; `f` returns the
    /// entry's new weight.
    pub fn upsert(&self, key: K, init: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> usize) {
        let mut inner = self.lock();
        let (value, weight) = inner.map.get_or_insert_mut(key, || (init(), 0));
        let old = *weight;
        *weight = f(value);
        let new = *weight;
        inner.weight = inner.weight - old + new;
        self.evict(&mut inner);
    }

    /// Reads an entry in place (and marks it recently used) without cloning it.
    pub fn with<R>(&self, key: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.lock().map.get(key).map(|(v, _)| f(v))
    }

    fn evict(&self, inner: &mut Inner<K, V>) {
        while inner.weight > self.budget {
            match inner.map.pop_lru() {
                Some((_, (_, w))) => inner.weight -= w,
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight held.
    pub fn weight(&self) -> usize {
        self.lock().weight
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Slots in [`Generations`]; keys share a slot by hash, which only costs a skipped insert.
const SLOTS: usize = 1024;

/// Write generations per key hash (see the module comment). Odd while a write is under way.
pub struct Generations {
    slots: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(), hasher: std::hash::RandomState::new() }
    }
}

/// What a reader saw before loading; see [`Generations::unchanged`].
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    slot: usize,
    generation: u64,
}

impl Generations {
    fn slot<K: Hash + ?Sized>(&self, key: &K) -> usize {
        usize::try_from(self.hasher.hash_one(key)).unwrap_or_default() % self.slots.len()
    }

    /// Taken by a reader before it loads what it may cache.
    pub fn snapshot<K: Hash + ?Sized>(&self, key: &K) -> Snapshot {
        let slot = self.slot(key);
        Snapshot { slot, generation: self.slots[slot].load(Ordering::Acquire) }
    }

    /// Whether no write to the key started or ended since the snapshot: then what the reader
    /// loaded is still what the database holds, and it may be cached.
    pub fn unchanged(&self, snapshot: Snapshot) -> bool {
        snapshot.generation.is_multiple_of(2)
            && self.slots[snapshot.slot].load(Ordering::Acquire) == snapshot.generation
    }

    /// Marks a write to `key` as under way until the guard is dropped (after the commit and
    /// the cache updates, or on any failure, which may have left the database changed).
    pub fn write<K: Hash + ?Sized>(&self, key: &K) -> WriteGuard<'_> {
        let slot = self.slot(key);
        self.slots[slot].fetch_add(1, Ordering::AcqRel);
        WriteGuard { generations: self, slot }
    }
}

/// See [`Generations::write`].
pub struct WriteGuard<'a> {
    generations: &'a Generations,
    slot: usize,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.generations.slots[self.slot].fetch_add(1, Ordering::AcqRel);
    }
}

/// A budget for caches sized by count, as a `NonZeroUsize`.
pub fn non_zero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_by_weight_least_recent_first() {
        let cache = BoundedLru::new(10);
        cache.put("a", 1, 4);
        cache.put("b", 2, 4);
        assert_eq!(cache.get(&"a"), Some(1), "touch a: b is now the least recent");
        cache.put("c", 3, 4);
        assert_eq!(cache.get(&"b"), None);
        assert_eq!((cache.get(&"a"), cache.get(&"c")), (Some(1), Some(3)));
        assert_eq!(cache.weight(), 8);
        cache.put("huge", 4, 11);
        assert_eq!(cache.get(&"huge"), None, "heavier than the budget: not kept, and evicts nothing");
        assert_eq!(cache.weight(), 8);
        cache.update(&"a", |v| {
            *v = 5;
            6
        });
        assert_eq!((cache.get(&"a"), cache.weight()), (Some(5), 10));
        cache.update(&"a", |_| 7);
        assert_eq!((cache.get(&"a"), cache.get(&"c"), cache.weight()), (Some(5), None, 7), "growing evicts c");
    }

    #[test]
    fn a_load_that_raced_a_write_is_not_cached() {
        let generations = Generations::default();
        let before = generations.snapshot("room");
        assert!(generations.unchanged(before));
        let during = {
            let _write = generations.write("room");
            let during = generations.snapshot("room");
            assert!(!generations.unchanged(during), "a snapshot taken mid-write is never valid");
            during
        };
        assert!(!generations.unchanged(before));
        assert!(!generations.unchanged(during));
        assert!(generations.unchanged(generations.snapshot("room")));
    }
}
