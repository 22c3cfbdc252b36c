//! Rooms as an event DAG, split into services that each own one thing:
//!
//! - [`events`](Events): events by ID, whatever their place; owns the event cache.
//! - [`state`](RoomState): state groups, room heads, state resolution; owns the head and
//!   state-group caches.
//! - [`members`](Members): memberships and whom a room's events concern; owns the audience
//!   cache.
//! - [`timeline`](Timeline): one pipeline for every event, local or remote: build, receive,
//!   persist, publish; owns the room locks, latest positions and recent-event rings.
//! - [`read`](Reader): what clients may read (history visibility, pagination, the client
//!   format); owns nothing.
//! - [`directory`](Directory): aliases and the public room directory; owns nothing.
//!
//! Caches change only in the timeline's post-commit routine, under the room's lock, so they
//! cannot drift from the database. See docs/architecture.md, "Rooms: the event DAG".

pub mod directory;
pub mod events;
pub mod lock;
pub mod members;
pub mod pdu;
pub mod read;
pub mod state;
pub mod timeline;

use std::sync::Arc;

pub use self::{
    directory::Directory,
    events::Events,
    lock::{RoomGuard, RoomLocks},
    members::Members,
    pdu::{ClientExtras, Pdu, PduRef},
    read::{Reader, Viewer},
    state::{RoomHead, RoomState},
    timeline::{EventDraft, PushEvaluator, PushOutcome, Timeline, TimelineParts},
};
use super::{notifier::Notifier, server_keys::ServerKeys};
use crate::{
    config::Config,
    storage::{Storage, StreamAllocator},
};

/// The room services of one homeserver.
pub struct Rooms {
    pub events: Arc<Events>,
    pub state: Arc<RoomState>,
    pub members: Arc<Members>,
    pub timeline: Arc<Timeline>,
    pub read: Arc<Reader>,
    pub directory: Arc<Directory>,
}

/// What the room services are built from.
pub struct RoomsParts {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub stream: Arc<StreamAllocator>,
    /// The lowest stream position stored (backfilled events go below it).
    pub lowest_pos: i64,
    pub keys: Arc<ServerKeys>,
    pub notifier: Arc<Notifier>,
}

impl Rooms {
    pub fn new(parts: RoomsParts) -> Self {
        let RoomsParts { config, storage, stream, lowest_pos, keys, notifier } = parts;
        let events = Arc::new(Events::new(storage.clone()));
        let state = Arc::new(RoomState::new(storage.clone(), Arc::clone(&events)));
        let members = Arc::new(Members::new(storage.clone()));
        let timeline = Arc::new(Timeline::new(TimelineParts {
            config: Arc::clone(&config),
            storage: storage.clone(),
            stream: Arc::clone(&stream),
            lowest_pos,
            keys,
            notifier,
            events: Arc::clone(&events),
            state: Arc::clone(&state),
            members: Arc::clone(&members),
        }));
        let read = Arc::new(Reader::new(
            storage.clone(),
            stream,
            Arc::clone(&events),
            Arc::clone(&state),
            Arc::clone(&members),
        ));
        let directory = Arc::new(Directory::new(config, storage, Arc::clone(&state), Arc::clone(&members)));
        Self { events, state, members, timeline, read, directory }
    }
}
