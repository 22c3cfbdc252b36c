//! Rooms as a signed event graph.
//!
//! `Rooms` owns the append path (one event at a time per room, under the room's lock), the
//! caches of room heads and events, and the reads built on them. Its methods are spread over
//! the files of this module by area: `append` (building, signing, authorising and persisting
//! an event), `state` (reading state), `visibility` (history visibility), `membership`,
//! `create`, `read` (timelines) and `directory`.

mod append;
pub mod client;
pub mod create;
pub mod directory;
mod head;
pub mod lock;
pub mod membership;
pub mod pdu;
mod power;
pub mod read;
mod send;
pub mod state;
pub mod visibility;

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;
use parley_federation::SigningKey;
use ruma::{EventId, OwnedEventId, RoomId};

pub use self::{
    append::EventDraft,
    client::Viewer,
    head::RoomHead,
    lock::{RoomGuard, RoomLocks},
    pdu::{ClientExtras, Pdu, PduRef},
};
use crate::{
    config::Config,
    error::Result,
    storage::{Storage, StreamAllocator},
};

/// Events kept in memory; auth events and recent timelines are read far more than written.
const EVENT_CACHE_SIZE: usize = 20_000;
/// Single-key state lookups `(group, type, key)` kept in memory; state groups never change.
const LOOKUP_CACHE_SIZE: usize = 50_000;

pub struct Rooms {
    config: Arc<Config>,
    storage: Storage,
    stream: Arc<StreamAllocator>,
    key: Arc<SigningKey>,
    locks: RoomLocks,
    heads: Mutex<std::collections::HashMap<ruma::OwnedRoomId, Arc<RoomHead>>>,
    events: Mutex<LruCache<OwnedEventId, PduRef>>,
    lookups: Mutex<LruCache<(i64, String, String), Option<OwnedEventId>>>,
}

impl Rooms {
    pub fn new(config: Arc<Config>, storage: Storage, stream: Arc<StreamAllocator>, key: Arc<SigningKey>) -> Self {
        let size = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            config,
            storage,
            stream,
            key,
            locks: RoomLocks::default(),
            heads: Mutex::default(),
            events: Mutex::new(LruCache::new(size(EVENT_CACHE_SIZE))),
            lookups: Mutex::new(LruCache::new(size(LOOKUP_CACHE_SIZE))),
        }
    }

    /// Takes the room's append lock.
    pub async fn lock(&self, room_id: &RoomId) -> RoomGuard {
        self.locks.lock(room_id).await
    }

    /// One event, from the cache or storage.
    pub async fn pdu(&self, event_id: &EventId) -> Result<Option<PduRef>> {
        if let Some(pdu) = self.events.lock().unwrap_or_else(PoisonError::into_inner).get(event_id) {
            return Ok(Some(Arc::clone(pdu)));
        }
        let Some(stored) = self.storage.events.get(event_id).await? else { return Ok(None) };
        let pdu = Arc::new(Pdu::from_stored(stored)?);
        self.cache_pdu(&pdu);
        Ok(Some(pdu))
    }

    /// Several events, in no particular order; unknown IDs are skipped.
    pub async fn pdus(&self, event_ids: &[OwnedEventId]) -> Result<Vec<PduRef>> {
        let mut found = Vec::with_capacity(event_ids.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            for id in event_ids {
                match cache.get(id) {
                    Some(pdu) => found.push(Arc::clone(pdu)),
                    None => missing.push(id.clone()),
                }
            }
        }
        if !missing.is_empty() {
            for stored in self.storage.events.get_many(&missing).await? {
                let pdu = Arc::new(Pdu::from_stored(stored)?);
                self.cache_pdu(&pdu);
                found.push(pdu);
            }
        }
        Ok(found)
    }

    fn cache_pdu(&self, pdu: &PduRef) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).put(pdu.event_id.clone(), Arc::clone(pdu));
    }

    /// Drops a cached event, after it was changed in storage (redaction).
    fn uncache_pdu(&self, event_id: &EventId) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).pop(event_id);
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}
