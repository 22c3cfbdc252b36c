//! Events by ID, whatever their place: the one cache of parsed PDUs.
//!
//! Owns: the event cache. Events change only when the timeline persists one (a new event, an
//! outlier brought into the graph, a redacted target); the timeline updates this cache after
//! its commit, and bumps the event's generation around it so that a concurrent load cannot
//! put an older copy back.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId};

use super::{Pdu, PduRef};
use crate::{
    error::Result,
    service::cache::{BoundedLru, Generations, WriteGuard},
    storage::Storage,
};

/// Bytes of event JSON kept in memory. Auth events and recent timelines are read far more
/// often than they are written.
const EVENT_CACHE_BYTES: usize = 48 << 20;
/// What a cached event costs beyond its JSON: the parsed fields and the map entry.
const EVENT_OVERHEAD: usize = 512;

pub struct Events {
    storage: Storage,
    cache: BoundedLru<OwnedEventId, PduRef>,
    generations: Generations,
}

impl Events {
    pub fn new(storage: Storage) -> Self {
        Self { storage, cache: BoundedLru::new(EVENT_CACHE_BYTES), generations: Generations::default() }
    }

    /// One event, from the cache or storage, whatever its placement.
    pub async fn pdu(&self, event_id: &EventId) -> Result<Option<PduRef>> {
        if let Some(pdu) = self.cache.get(&event_id.to_owned()) {
            return Ok(Some(pdu));
        }
        let snapshot = self.generations.snapshot(event_id);
        let Some(stored) = self.storage.events.get(event_id).await? else { return Ok(None) };
        let pdu = Arc::new(Pdu::from_stored(stored)?);
        if self.generations.unchanged(snapshot) {
            self.insert(&pdu);
        }
        Ok(Some(pdu))
    }

    /// Several events, in no particular order; unknown IDs are skipped.
    pub async fn pdus(&self, event_ids: &[OwnedEventId]) -> Result<Vec<PduRef>> {
        let mut found = Vec::with_capacity(event_ids.len());
        let mut missing = Vec::new();
        for id in event_ids {
            match self.cache.get(id) {
                Some(pdu) => found.push(pdu),
                None => missing.push(id.clone()),
            }
        }
        if !missing.is_empty() {
            let snapshots: Vec<_> = missing.iter().map(|id| (id.clone(), self.generations.snapshot(id))).collect();
            let loaded = self.storage.events.get_many(&missing).await?;
            let snapshots: std::collections::HashMap<_, _> = snapshots.into_iter().collect();
            for stored in loaded {
                let pdu = Arc::new(Pdu::from_stored(stored)?);
                if snapshots.get(&pdu.event_id).is_some_and(|s| self.generations.unchanged(*s)) {
                    self.insert(&pdu);
                }
                found.push(pdu);
            }
        }
        Ok(found)
    }

    /// Several events, keyed by ID.
    pub async fn pdu_map(&self, event_ids: &[OwnedEventId]) -> Result<std::collections::HashMap<OwnedEventId, PduRef>> {
        Ok(self.pdus(event_ids).await?.into_iter().map(|p| (p.event_id.clone(), p)).collect())
    }

    /// Marks a write to the event under way; see [`Generations`].
    pub(super) fn write(&self, event_id: &EventId) -> WriteGuard<'_> {
        self.generations.write(event_id)
    }

    /// Caches an event as it now is in storage. Call under [`Events::write`].
    pub(super) fn insert(&self, pdu: &PduRef) {
        self.cache.put(pdu.event_id.clone(), Arc::clone(pdu), pdu.json.get().len() + EVENT_OVERHEAD);
    }

    /// Drops a cached event after it changed in storage. Call under [`Events::write`].
    pub(super) fn forget(&self, event_id: &EventId) {
        self.cache.remove(&event_id.to_owned());
    }
}
