//! The timeline: one pipeline for every event, local or remote.
//!
//! - **Build** (`build`): a local user's event becomes a complete, signed PDU on the room's
//!   head, and is checked against the current state.
//! - **Receive** (`inbound`): a remote PDU goes through the spec's checks in order (format,
//!   signatures, hashes, auth events, the state before it, the current state).
//! - **Persist** (`persist`): the same step for both. It plans the state group after the
//!   event, the new forward extremities and the new current state (resolved when the graph
//!   forks), then commits everything in one transaction and publishes it to every cache in
//!   one post-commit routine.
//!
//! Owns: the room locks, the per-room latest positions and the recent-event rings. The
//! commit and its publication run in a task of their own, so a caller that is dropped
//! half-way (a reset stream, a timeout) cannot leave a committed event out of the caches.

mod auth;
mod build;
pub mod create;
mod inbound;
pub mod membership;
mod persist;
mod recent;
mod remote_membership;
mod send;

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, atomic::AtomicI64},
};

use ruma::{OwnedRoomId, RoomId};

pub use self::{
    build::{EventDraft, Txn},
    inbound::{EventSource, Received},
    recent::RING_SIZE,
    remote_membership::STRIPPED_TYPES,
};
use super::{PduRef, RoomGuard, RoomHead, events::Events, lock::RoomLocks, members::Members, state::RoomState};
use crate::{
    config::Config,
    error::Result,
    service::{
        cache::{BoundedLru, Generations},
        notifier::Notifier,
        server_keys::ServerKeys,
    },
    storage::{Storage, StreamAllocator},
};

/// Rooms whose latest position is kept in memory.
const LATEST_CACHE_ROOMS: usize = 200_000;

/// What the push rules said about an event: per-recipient actions and queued notifications.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub actions: Vec<crate::storage::push::PushActionRow>,
    pub queue: Vec<crate::storage::push::NewQueuedPush>,
}

/// Federation's outbound queue, told after a commit that events were queued for servers.
pub trait Outbox: Send + Sync {
    fn queued(&self, destinations: &[ruma::OwnedServerName]);
}

/// Push rule evaluation, run in the persist step so its results commit with the event.
/// Implemented by the push service, which is built after the rooms.
#[async_trait::async_trait]
pub trait PushEvaluator: Send + Sync {
    async fn evaluate(&self, head: &RoomHead, pdu: &super::Pdu) -> Result<PushOutcome>;

    /// Notifications were queued and are now committed.
    fn queued(&self);
}

pub struct Timeline {
    config: Arc<Config>,
    keys: Arc<ServerKeys>,
    locks: RoomLocks,
    storage: Storage,
    events: Arc<Events>,
    state: Arc<RoomState>,
    members: Arc<Members>,
    publisher: Publisher,
    source: OnceLock<Arc<dyn EventSource>>,
}

/// Everything the commit and its publication touch, shared with the task they run in.
#[derive(Clone)]
struct Publisher {
    storage: Storage,
    stream: Arc<StreamAllocator>,
    /// The next position for an event backfilled into the past: below every other.
    backfill: Arc<AtomicI64>,
    events: Arc<Events>,
    state: Arc<RoomState>,
    members: Arc<Members>,
    notifier: Arc<Notifier>,
    push: Arc<OnceLock<Arc<dyn PushEvaluator>>>,
    outbox: Arc<OnceLock<Arc<dyn Outbox>>>,
    latest: Arc<BoundedLru<OwnedRoomId, i64>>,
    latest_generations: Arc<Generations>,
    recent: Arc<recent::Recent>,
}

/// What a [`Timeline`] is built from.
pub struct TimelineParts {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub stream: Arc<StreamAllocator>,
    /// The lowest stream position stored (backfilled events go below it).
    pub lowest_pos: i64,
    pub keys: Arc<ServerKeys>,
    pub notifier: Arc<Notifier>,
    pub events: Arc<Events>,
    pub state: Arc<RoomState>,
    pub members: Arc<Members>,
}

impl Timeline {
    pub fn new(parts: TimelineParts) -> Self {
        let TimelineParts { config, storage, stream, lowest_pos, keys, notifier, events, state, members } = parts;
        let publisher = Publisher {
            storage: storage.clone(),
            stream,
            backfill: Arc::new(AtomicI64::new(lowest_pos.min(0) - 1)),
            events: Arc::clone(&events),
            state: Arc::clone(&state),
            members: Arc::clone(&members),
            notifier,
            push: Arc::new(OnceLock::new()),
            outbox: Arc::new(OnceLock::new()),
            latest: Arc::new(BoundedLru::new(LATEST_CACHE_ROOMS)),
            latest_generations: Arc::new(Generations::default()),
            recent: Arc::new(recent::Recent::default()),
        };
        Self {
            config,
            keys,
            locks: RoomLocks::default(),
            storage,
            events,
            state,
            members,
            publisher,
            source: OnceLock::new(),
        }
    }

    /// Takes the room's lock: events of a room are persisted one at a time.
    pub async fn lock(&self, room_id: &RoomId) -> RoomGuard {
        self.locks.lock(room_id).await
    }

    /// Connects push rule evaluation; done once, when the services are built.
    pub fn set_push_evaluator(&self, evaluator: Arc<dyn PushEvaluator>) {
        let _ = self.publisher.push.set(evaluator);
    }

    /// Connects federation's outbound queue; done once.
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.publisher.outbox.set(outbox);
    }

    /// Connects where missing events are fetched from (federation); done once.
    pub fn set_event_source(&self, source: Arc<dyn EventSource>) {
        let _ = self.source.set(source);
    }

    /// The latest timeline position of each room, from memory where known.
    pub async fn latest_positions(&self, room_ids: &[OwnedRoomId]) -> Result<HashMap<OwnedRoomId, i64>> {
        let latest = &self.publisher.latest;
        let mut known = HashMap::new();
        let mut missing = Vec::new();
        for room in room_ids {
            match latest.get(room) {
                Some(pos) => {
                    known.insert(room.clone(), pos);
                }
                None => missing.push(room.clone()),
            }
        }
        if !missing.is_empty() {
            let generations = &self.publisher.latest_generations;
            let snapshots: Vec<_> = missing.iter().map(|r| generations.snapshot(r)).collect();
            let loaded: HashMap<OwnedRoomId, i64> =
                self.storage.events.latest_positions(&missing).await?.into_iter().collect();
            for (room, snapshot) in missing.into_iter().zip(snapshots) {
                let Some(pos) = loaded.get(&room).copied() else { continue };
                if generations.unchanged(snapshot) {
                    latest.put(room.clone(), pos, 1);
                }
                known.insert(room, pos);
            }
        }
        Ok(known)
    }

    /// The room's events with positions in `(after, up_to]`, oldest first, if they are all
    /// still in memory.
    pub fn recent_events(&self, room_id: &RoomId, after: i64, up_to: i64) -> Option<Vec<PduRef>> {
        self.publisher.recent.events(room_id, after, up_to)
    }
}
