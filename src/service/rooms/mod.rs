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
mod recent;
mod send;
pub mod state;
pub mod visibility;

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;
use parley_federation::SigningKey;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};

pub use self::{
    append::EventDraft,
    client::Viewer,
    head::RoomHead,
    lock::{RoomGuard, RoomLocks},
    pdu::{ClientExtras, Pdu, PduRef},
};
use super::notifier::Notifier;
use crate::{
    config::Config,
    error::Result,
    storage::{Storage, StreamAllocator},
};

/// Events kept in memory; auth events and recent timelines are read far more than written.
const EVENT_CACHE_SIZE: usize = 20_000;
/// Single-key state lookups `(group, type, key)` kept in memory; state groups never change.
const LOOKUP_CACHE_SIZE: usize = 50_000;
/// Whole state groups kept in memory (their entries only: event IDs, not events).
const GROUP_CACHE_SIZE: usize = 2_000;

/// What the push rules said about an event: per-recipient actions and queued notifications.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub actions: Vec<crate::storage::push::PushActionRow>,
    pub queue: Vec<crate::storage::push::NewQueuedPush>,
}

/// Push rule evaluation, run in the append path so its results commit with the event.
/// Implemented by the push service, which is built after `Rooms`.
#[async_trait::async_trait]
pub trait PushEvaluator: Send + Sync {
    async fn evaluate(&self, head: &RoomHead, pdu: &Pdu) -> Result<PushOutcome>;

    /// Notifications were queued and are now committed.
    fn queued(&self);
}

pub struct Rooms {
    config: Arc<Config>,
    storage: Storage,
    stream: Arc<StreamAllocator>,
    key: Arc<SigningKey>,
    locks: RoomLocks,
    heads: Mutex<std::collections::HashMap<ruma::OwnedRoomId, Arc<RoomHead>>>,
    events: Mutex<LruCache<OwnedEventId, PduRef>>,
    lookups: Mutex<LruCache<(i64, String, String), Option<OwnedEventId>>>,
    /// Whole state groups' entries, for syncs that send state.
    group_entries: Mutex<LruCache<i64, Arc<Vec<crate::storage::StateEntry>>>>,
    notifier: Arc<Notifier>,
    /// Per room: the users an event there concerns (joined, invited, knocking).
    audiences: Mutex<HashMap<OwnedRoomId, Arc<HashSet<OwnedUserId>>>>,
    /// Per room: the stream position of its latest event, so an incremental sync can skip
    /// rooms where nothing happened without asking the database.
    latest: Mutex<HashMap<OwnedRoomId, i64>>,
    push: std::sync::OnceLock<Arc<dyn PushEvaluator>>,
    recent: Mutex<HashMap<OwnedRoomId, recent::Ring>>,
}

impl Rooms {
    pub fn new(
        config: Arc<Config>,
        storage: Storage,
        stream: Arc<StreamAllocator>,
        key: Arc<SigningKey>,
        notifier: Arc<Notifier>,
    ) -> Self {
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
            group_entries: Mutex::new(LruCache::new(size(GROUP_CACHE_SIZE))),
            notifier,
            audiences: Mutex::default(),
            latest: Mutex::default(),
            push: std::sync::OnceLock::new(),
            recent: Mutex::default(),
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

    /// Connects push rule evaluation; done once, when the services are built.
    pub fn set_push_evaluator(&self, evaluator: Arc<dyn PushEvaluator>) {
        let _ = self.push.set(evaluator);
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The users an event in the room concerns.
    pub async fn audience_of(&self, room_id: &RoomId) -> Result<Arc<HashSet<OwnedUserId>>> {
        if let Some(users) = self.audiences.lock().unwrap_or_else(PoisonError::into_inner).get(room_id) {
            return Ok(Arc::clone(users));
        }
        let users: HashSet<OwnedUserId> = self
            .storage
            .state
            .room_members(room_id, &["join", "invite", "knock"])
            .await?
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        let users = Arc::new(users);
        self.audiences.lock().unwrap_or_else(PoisonError::into_inner).insert(room_id.to_owned(), Arc::clone(&users));
        Ok(users)
    }

    /// The latest event position of each room, from memory where known.
    pub async fn latest_positions(&self, room_ids: &[OwnedRoomId]) -> Result<HashMap<OwnedRoomId, i64>> {
        let mut known = HashMap::new();
        let mut missing = Vec::new();
        {
            let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            for room in room_ids {
                match latest.get(room) {
                    Some(pos) => {
                        known.insert(room.clone(), *pos);
                    }
                    None => missing.push(room.clone()),
                }
            }
        }
        if !missing.is_empty() {
            let loaded = self.storage.events.latest_positions(&missing).await?;
            let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            for (room, pos) in loaded {
                // An append may have raced ahead of this read; keep the larger.
                let entry = latest.entry(room.clone()).or_insert(pos);
                *entry = (*entry).max(pos);
                known.insert(room, *entry);
            }
        }
        Ok(known)
    }
}
