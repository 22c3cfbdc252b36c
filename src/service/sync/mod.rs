//! `/sync`: everything a device has not seen yet, exactly once and in order, waiting (without
//! polling) until there is something when there is nothing.
//!
//! A response covers the stream positions `(since, upto]`, where `upto` is the watermark at
//! the time it was built: every position up to it is committed, so nothing below it can still
//! appear, and `next_batch = upto` never skips an event. The same `since` always yields the
//! same data for the same range.

mod e2ee;
mod room;
pub mod token;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use ruma::{
    OwnedRoomId,
    api::client::{
        filter::FilterDefinition,
        sync::sync_events::v3::{self, GlobalAccountData, Rooms as SyncRooms},
    },
    presence::PresenceState,
    serde::Raw,
};
use serde_json::value::RawValue;
use tokio::sync::watch;

pub use self::token::SyncToken;
use super::{
    auth::AuthedUser,
    ephemeral::{presence::PresenceService, receipts::ReceiptService, typing::TypingService},
    latest::Key,
    notifier::Notifier,
    push::PushService,
    rooms::Rooms,
};
use crate::{
    error::{Error, Result},
    storage::{Membership, Storage, StreamAllocator},
};

/// How many joined rooms one response builds at once. Enough to overlap the queries' round
/// trips; few enough that one initial sync does not take every database connection.
const ROOMS_AT_ONCE: usize = 4;

/// A parsed sync request.
pub struct SyncRequest {
    pub user: AuthedUser,
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub filter: FilterDefinition,
    pub timeout: Duration,
    pub use_state_after: bool,
    /// `set_presence`: `online` (the default), `unavailable` or `offline`.
    pub set_presence: PresenceState,
}

/// What a sync reads besides storage.
pub struct SyncSources {
    pub rooms: Arc<Rooms>,
    pub stream: Arc<StreamAllocator>,
    pub notifier: Arc<Notifier>,
    pub typing: Arc<TypingService>,
    pub receipts: Arc<ReceiptService>,
    pub presence: Arc<PresenceService>,
    pub push: Arc<PushService>,
}

pub struct SyncService {
    storage: Storage,
    rooms: Arc<Rooms>,
    stream: Arc<StreamAllocator>,
    notifier: Arc<Notifier>,
    typing: Arc<TypingService>,
    receipts: Arc<ReceiptService>,
    presence: Arc<PresenceService>,
    push: Arc<PushService>,
    /// Flips to true when the server shuts down: waiting syncs answer at once.
    shutdown: watch::Receiver<bool>,
}

impl SyncService {
    pub fn new(storage: Storage, sources: SyncSources, shutdown: watch::Receiver<bool>) -> Self {
        let SyncSources { rooms, stream, notifier, typing, receipts, presence, push } = sources;
        Self { storage, rooms, stream, notifier, typing, receipts, presence, push, shutdown }
    }

    /// Runs one sync; while it runs, the user counts as syncing for presence.
    pub async fn sync(&self, request: &SyncRequest) -> Result<v3::Response> {
        let user_id = &request.user.user_id;
        let _syncing = self.presence.sync_started(user_id, &request.set_presence);
        self.sync_inner(request).await
    }

    async fn sync_inner(&self, request: &SyncRequest) -> Result<v3::Response> {
        // Everything acknowledged before this request (the client's own sends, a message
        // someone told them about) is in the response, even while a lower position is still
        // being written by someone else.
        self.stream.read_your_writes().await;
        if let Some(since) = request.since
            && since.pos > self.stream.watermark()
        {
            return Err(Error::invalid_param("The since token is not one this server issued"));
        }
        if let Some(since) = request.since {
            e2ee::acknowledge(&self.storage, self.notifier.latest(), &request.user, since.pos).await?;
        }
        let listener = self.notifier.listen(&request.user.user_id);
        let deadline = tokio::time::Instant::now() + request.timeout;
        let mut shutdown = self.shutdown.clone();
        loop {
            // Listen before looking: a write that lands while the response is built still
            // wakes this wait, so it cannot be slept through.
            let woken = listener.notify().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let typing = self.typing.mark();
            let upto = self.stream.watermark();
            let response = self.build(request, SyncToken { pos: upto, typing }).await?;
            let initial = request.since.is_none();
            if initial || has_news(&response) || request.timeout.is_zero() || *shutdown.borrow() {
                return Ok(response);
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(deadline) => return Ok(response),
                _ = shutdown.changed() => return Ok(response),
            }
        }
    }

    async fn build(&self, request: &SyncRequest, next: SyncToken) -> Result<v3::Response> {
        let upto = next.pos;
        let user_id = &request.user.user_id;
        let since = request.since.map(|t| t.pos);
        // First: when more to-device messages wait than one response carries, it covers less.
        let (to_device, upto) =
            e2ee::to_device(&self.storage, self.notifier.latest(), &request.user, since, upto).await?;
        let room_filter = &request.filter.room;
        let memberships = self.storage.state.user_rooms(user_id, &["join", "invite", "knock", "leave", "ban"]).await?;
        let wanted = |room_id: &OwnedRoomId| {
            room_filter.rooms.as_ref().is_none_or(|rooms| rooms.contains(room_id))
                && !room_filter.not_rooms.contains(room_id)
        };
        let memberships: Vec<Membership> =
            memberships.into_iter().filter(|m| wanted(&m.room_id) && m.stream_pos <= upto).collect();

        let index = self.notifier.latest();
        let account_data_key = Key::AccountData(user_id.clone());
        let account_data = match since {
            Some(s) if !index.may_have_changed(&account_data_key, s) => Vec::new(),
            _ => {
                let entries = self.storage.account_data.changed_since(user_id, since.unwrap_or(0), upto).await?;
                if let Some(s) = since {
                    index.learned(account_data_key, s, entries.iter().map(|e| e.stream_pos).max());
                }
                entries
            }
        };
        let builder = room::RoomBuilder { rooms: &self.rooms, storage: &self.storage, push: &self.push, request, upto };

        let mut rooms = SyncRooms::new();
        let joined_ids: Vec<OwnedRoomId> =
            memberships.iter().filter(|m| m.membership == "join").map(|m| m.room_id.clone()).collect();
        let latest = self.rooms.timeline.latest_positions(&joined_ids).await?;
        // Receipts only of rooms where one may have been set since the token.
        let receipt_rooms: Vec<OwnedRoomId> = match since {
            Some(s) => {
                joined_ids.iter().filter(|r| index.may_have_changed(&Key::Receipts((*r).clone()), s)).cloned().collect()
            }
            None => joined_ids.clone(),
        };
        let mut receipts = if receipt_rooms.is_empty() {
            Default::default()
        } else {
            self.receipts.receipts_for(user_id, &receipt_rooms, since, upto).await?
        };
        if let Some(s) = since {
            for room_id in &receipt_rooms {
                // What the query returned for a room is at or below `upto`; nothing more is there.
                let found = receipts.contains_key(room_id).then_some(upto);
                index.learned(Key::Receipts(room_id.clone()), s, found);
            }
        }
        // Joined rooms are built several at a time: each takes a handful of small queries, and
        // an initial sync of hundreds of rooms would otherwise wait on them one after another
        // (measured: 500 rooms, see docs/benchmarks.md). Each room reads at the same `upto`, so
        // the order of building changes nothing in the response.
        let mut joined_jobs = Vec::new();
        for membership in &memberships {
            let room_id = &membership.room_id;
            let room_data: Vec<_> =
                account_data.iter().filter(|e| e.room_id.as_deref() == Some(room_id.as_str())).collect();
            match membership.membership.as_str() {
                "join" => {
                    let mut ephemeral = Vec::new();
                    if let Some(typing) = self.typing.typing_since(room_id, request.since.map(|t| t.typing)) {
                        ephemeral.push(serde_json::json!({"type": "m.typing", "content": {"user_ids": typing}}));
                    }
                    if let Some(content) = receipts.remove(room_id) {
                        ephemeral.push(serde_json::json!({"type": "m.receipt", "content": content}));
                    }
                    let changed = since.is_none_or(|s| {
                        latest.get(room_id).is_some_and(|pos| *pos > s)
                            || !room_data.is_empty()
                            || !ephemeral.is_empty()
                            || request.full_state
                    });
                    if changed {
                        joined_jobs.push((membership, room_data, ephemeral));
                    }
                }
                "invite" if since.is_none_or(|s| membership.stream_pos > s) => {
                    rooms.invite.insert(room_id.clone(), builder.invited(membership).await?);
                }
                "knock" if since.is_none_or(|s| membership.stream_pos > s) => {
                    rooms.knock.insert(room_id.clone(), builder.knocked(membership).await?);
                }
                "leave" | "ban" if !membership.forgotten => {
                    let fresh = since.is_some_and(|s| membership.stream_pos > s);
                    if (fresh || (since.is_none() && room_filter.include_leave))
                        && let Some(left) = builder.left(membership, &room_data).await?
                    {
                        rooms.leave.insert(room_id.clone(), left);
                    }
                }
                _ => {}
            }
        }
        // The futures are made before they go into the stream: a closure there would make the
        // handler's future fail the `Send` check (a known limitation of the compiler).
        let mut builds: Vec<JoinedBuild<'_>> = Vec::with_capacity(joined_jobs.len());
        for (membership, room_data, ephemeral) in joined_jobs {
            let builder = &builder;
            builds.push(Box::pin(async move {
                let joined = builder.joined(membership, &room_data, ephemeral).await?;
                Ok(joined.map(|joined| (membership.room_id.clone(), joined)))
            }));
        }
        let built: Vec<_> = futures::stream::iter(builds).buffered(ROOMS_AT_ONCE).try_collect().await?;
        rooms.join.extend(built.into_iter().flatten());

        // `upto`, not `next.pos`: a to-device backlog may have made this response cover less.
        let mut response = v3::Response::new(SyncToken { pos: upto, typing: next.typing }.to_string());
        let presence_events = match since {
            Some(s) if !index.may_have_changed(&Key::Presence, s) => Vec::new(),
            _ => self.presence.events_for(user_id, &joined_ids, since, upto).await?,
        };
        response.presence.events = presence_events
            .into_iter()
            .filter(|event| {
                let kind = event["type"].as_str().unwrap_or_default();
                room::account_data_wanted(&request.filter.presence, kind)
                    && request
                        .filter
                        .presence
                        .senders
                        .as_ref()
                        .is_none_or(|s| s.iter().any(|u| Some(u.as_str()) == event["sender"].as_str()))
                    && !request.filter.presence.not_senders.iter().any(|u| Some(u.as_str()) == event["sender"].as_str())
            })
            .map(|event| Ok(Raw::from_json(serde_json::value::to_raw_value(&event)?)))
            .collect::<Result<_>>()?;
        response.rooms = rooms;
        let mut global = GlobalAccountData::new();
        global.events = account_data
            .iter()
            .filter(|e| e.room_id.is_none())
            .filter(|e| room::account_data_wanted(&request.filter.account_data, &e.data_type))
            .map(|e| account_data_event(&e.data_type, &e.content))
            .collect::<Result<_>>()?;
        response.account_data = global;
        response.to_device = to_device;
        e2ee::fill(&self.storage, self.notifier.latest(), &request.user, since, upto, &mut response).await?;
        Ok(response)
    }
}

/// The building of one joined room's section, boxed so that many fit in one stream.
type JoinedBuild<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<(OwnedRoomId, v3::JoinedRoom)>>> + Send + 'a>>;

/// Whether a response carries anything for the client (the token alone does not count).
fn has_news(response: &v3::Response) -> bool {
    let rooms = &response.rooms;
    !rooms.join.is_empty()
        || !rooms.invite.is_empty()
        || !rooms.leave.is_empty()
        || !rooms.knock.is_empty()
        || !response.account_data.events.is_empty()
        || !response.presence.events.is_empty()
        || !response.to_device.events.is_empty()
        || !response.device_lists.changed.is_empty()
        || !response.device_lists.left.is_empty()
}

/// `{"type": .., "content": ..}`, the shape of account data events in sync.
fn account_data_event<T>(data_type: &str, content: &RawValue) -> Result<Raw<T>> {
    let json = format!(r#"{{"type":{},"content":{}}}"#, serde_json::to_string(data_type)?, content.get());
    Ok(Raw::from_json(RawValue::from_string(json)?))
}
