//! Reading rooms as a client may: who may read what (history visibility), timelines in
//! topological order (`/messages`, `/context`) and in stream order (`/sync`), state at a
//! point, and events in the client format.
//!
//! Owns no cache: it reads through the events, state and members services. Only events in
//! the timeline are ever returned; outliers, rejected and soft-failed events never are.

mod client;
pub mod token;
mod visibility;

use std::{collections::BTreeSet, sync::Arc};

use ruma::{
    EventId, OwnedUserId, RoomId, UserId,
    api::client::filter::{LazyLoadOptions, RoomEventFilter},
};

pub use self::{
    client::Viewer,
    token::{PageToken, StreamToken},
};
use super::{Pdu, PduRef, events::Events, members::Members, state::RoomState};
use crate::{
    error::{Error, Result},
    service::filter,
    storage::{Direction, Membership, Storage, StreamAllocator, TopoFrom, TopoPoint},
};

/// Events fetched from storage per round while filling a page.
const FETCH_BATCH: u32 = 100;
/// The most events one page may hold.
pub const MAX_PAGE: u32 = 1000;

/// Where a page starts and which way it goes.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    /// Where to start; `None`: the latest event going backwards, the first going forwards.
    pub from: Option<PageToken>,
    /// Stop at this point, if given.
    pub to: Option<PageToken>,
    pub dir: Direction,
    pub limit: u32,
}

/// One page of a timeline.
pub struct Page {
    /// Where the page started (the token given, or the point it stood for).
    pub start: PageToken,
    pub events: Vec<PduRef>,
    /// Where the next page starts; `None` when there is nothing more in that direction.
    pub end: Option<PageToken>,
}

pub struct Reader {
    storage: Storage,
    stream: Arc<StreamAllocator>,
    events: Arc<Events>,
    state: Arc<RoomState>,
    members: Arc<Members>,
}

impl Reader {
    pub fn new(
        storage: Storage,
        stream: Arc<StreamAllocator>,
        events: Arc<Events>,
        state: Arc<RoomState>,
        members: Arc<Members>,
    ) -> Self {
        Self { storage, stream, events, state, members }
    }

    /// Fails unless the user may read the room at all: they are or were a member (or were
    /// invited), or the room is world-readable. Individual events are then filtered by
    /// history visibility.
    pub async fn check_can_read(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        if self.state.head(room_id).await?.is_none() {
            return Err(Error::forbidden("You are not in this room"));
        }
        if self.members.membership(room_id, user_id).await?.is_some() || self.is_world_readable(room_id).await? {
            return Ok(());
        }
        Err(Error::forbidden("You are not in this room"))
    }

    /// An event of the room's timeline the user may see, or `404` (whether it does not
    /// exist, is not in the timeline, or is hidden from them: the spec says not to tell).
    pub async fn visible_event(&self, user_id: &UserId, room_id: &RoomId, event_id: &EventId) -> Result<PduRef> {
        let not_found = || Error::not_found("Event not found");
        let pdu = self.events.pdu(event_id).await?.filter(|p| p.room_id == room_id && p.in_timeline());
        let pdu = pdu.ok_or_else(not_found)?;
        if !self.can_see(user_id, &pdu).await? {
            return Err(not_found());
        }
        Ok(pdu)
    }

    /// A page of events the user may see, matching `filter`, in topological order.
    pub async fn paginate(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        request: PageRequest,
        filter: &RoomEventFilter,
    ) -> Result<Page> {
        let PageRequest { from, to, dir, limit } = request;
        let limit = limit.clamp(1, MAX_PAGE);
        // Nothing beyond the watermark, where a position may still be committing; but first
        // let it reach every write already acknowledged, so the reader sees those.
        self.stream.read_your_writes().await;
        let ceiling = self.stream.watermark();
        let from = from.unwrap_or(match dir {
            Direction::Backward => PageToken::Stream(StreamToken(ceiling)),
            Direction::Forward => PageToken::Stream(StreamToken(0)),
        });
        let to = match to {
            Some(PageToken::Topo(point)) => Some(point),
            Some(PageToken::Stream(StreamToken(pos))) => self.point_at_stream(room_id, pos).await?,
            None => None,
        };
        let mut cursor = match from {
            PageToken::Stream(StreamToken(pos)) => TopoFrom::Stream(pos.min(ceiling)),
            PageToken::Topo(point) => TopoFrom::Point(point),
        };
        let mut events = Vec::new();
        loop {
            let batch = self.storage.events.room_events_topo(room_id, cursor, to, ceiling, dir, FETCH_BATCH).await?;
            let exhausted = batch.len() < FETCH_BATCH as usize;
            let pdus: Vec<PduRef> =
                batch.into_iter().map(|e| Pdu::from_stored(e).map(Arc::new)).collect::<anyhow::Result<_>>()?;
            let visible = self.filter_visible(user_id, room_id, pdus.clone()).await?;
            let visible: std::collections::HashSet<_> = visible.iter().map(|p| p.event_id.clone()).collect();
            for pdu in pdus {
                let point = TopoPoint { depth: pdu.depth_i64(), stream: pdu.stream_pos };
                let next = match dir {
                    Direction::Backward => PageToken::before(point),
                    Direction::Forward => PageToken::after(point),
                };
                if let PageToken::Topo(point) = next {
                    cursor = TopoFrom::Point(point);
                }
                if visible.contains(&pdu.event_id) && filter::matches(filter, &pdu) {
                    events.push(pdu);
                    if events.len() >= limit as usize {
                        return Ok(Page { start: from, events, end: Some(next) });
                    }
                }
            }
            if exhausted {
                // Nothing further in this direction: no `end`, as the spec asks.
                return Ok(Page { start: from, events, end: None });
            }
        }
    }

    /// The events the user may see with stream positions in `(since, upto]`, newest
    /// `limit` of them, oldest first, and whether older ones were left out: a /sync timeline.
    pub async fn stream_page(
        &self,
        membership: &Membership,
        since: Option<i64>,
        upto: i64,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<(Vec<PduRef>, bool)> {
        let mut before = upto.min(self.stream.watermark()) + 1;
        let after = since.unwrap_or(0);
        let mut events = Vec::new();
        loop {
            let batch = self
                .storage
                .events
                .room_events(&membership.room_id, after, before, Direction::Backward, FETCH_BATCH)
                .await?;
            let exhausted = batch.len() < FETCH_BATCH as usize;
            let pdus: Vec<PduRef> =
                batch.into_iter().map(|e| Pdu::from_stored(e).map(Arc::new)).collect::<anyhow::Result<_>>()?;
            if let Some(last) = pdus.last() {
                before = last.stream_pos;
            }
            let visible = self.filter_visible_as(membership, pdus).await?;
            for pdu in visible {
                if filter::matches(filter, &pdu) {
                    if events.len() == limit {
                        events.reverse();
                        return Ok((events, true));
                    }
                    events.push(pdu);
                }
            }
            if exhausted {
                events.reverse();
                return Ok((events, false));
            }
        }
    }

    /// For lazy-loading clients: the member events of the given senders, at the state after
    /// `at` (an event of the page), skipping members the client already has unless asked.
    pub async fn lazy_members(
        &self,
        at: &PduRef,
        senders: BTreeSet<OwnedUserId>,
        filter: &RoomEventFilter,
    ) -> Result<Vec<PduRef>> {
        if !matches!(filter.lazy_load_options, LazyLoadOptions::Enabled { .. }) {
            return Ok(Vec::new());
        }
        let Some(group) = at.group() else { return Ok(Vec::new()) };
        let mut members = Vec::new();
        for sender in senders {
            if let Some(pdu) = self.state.group_lookup(group, "m.room.member", sender.as_str()).await? {
                members.push(pdu);
            }
        }
        Ok(members)
    }

    /// The event nearest `ts` in the direction given, if the user may see it.
    pub async fn event_near_ts(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        ts: i64,
        dir: Direction,
    ) -> Result<Option<PduRef>> {
        let Some((event_id, _)) = self.storage.events.event_near_ts(room_id, ts, dir).await? else { return Ok(None) };
        let Some(pdu) = self.events.pdu(&event_id).await? else { return Ok(None) };
        Ok(self.can_see(user_id, &pdu).await?.then_some(pdu))
    }

    /// The latest position any reader may see.
    pub fn current_token(&self) -> StreamToken {
        StreamToken(self.stream.watermark())
    }

    /// The state a user may read: the current state while joined (or when the room is
    /// world-readable); the state when they left, once they have left; the state at `at`
    /// when given and visible to them. Never-members of other rooms get `403`.
    pub async fn readable_state(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        at: Option<PageToken>,
    ) -> Result<Vec<PduRef>> {
        self.check_can_read(room_id, user_id).await?;
        if let Some(at) = at {
            let Some(pdu) = self.event_at(room_id, at).await? else { return Ok(Vec::new()) };
            if !self.can_see(user_id, &pdu).await? {
                return Err(Error::forbidden("You may not see the room at that point"));
            }
            let Some(group) = pdu.group() else { return Ok(Vec::new()) };
            return self.state.group_state(group).await;
        }
        let membership = self.members.membership(room_id, user_id).await?;
        match membership {
            Some(m) if m.membership == "join" => self.state.current_state(room_id).await,
            _ if self.is_world_readable(room_id).await? => self.state.current_state(room_id).await,
            Some(m) if matches!(m.membership.as_str(), "leave" | "ban") => {
                let Some(group) = self.events.pdu(&m.event_id).await?.and_then(|e| e.group()) else {
                    return Ok(Vec::new());
                };
                self.state.group_state(group).await
            }
            _ => Err(Error::forbidden("You are not in this room")),
        }
    }

    /// The last timeline event at or before a token.
    async fn event_at(&self, room_id: &RoomId, at: PageToken) -> Result<Option<PduRef>> {
        let event_id = match at {
            PageToken::Stream(StreamToken(pos)) => {
                self.storage.events.last_event_at_or_before(room_id, pos).await?.map(|(id, _)| id)
            }
            PageToken::Topo(point) => {
                let from = TopoFrom::Point(point);
                let ceiling = self.stream.watermark();
                let found =
                    self.storage.events.room_events_topo(room_id, from, None, ceiling, Direction::Backward, 1).await?;
                found.into_iter().next().map(|e| e.event_id)
            }
        };
        match event_id {
            Some(id) => self.events.pdu(&id).await,
            None => Ok(None),
        }
    }

    /// The topological point of the room's last event at or before a stream position.
    async fn point_at_stream(&self, room_id: &RoomId, pos: i64) -> Result<Option<TopoPoint>> {
        let Some((event_id, _)) = self.storage.events.last_event_at_or_before(room_id, pos).await? else {
            return Ok(None);
        };
        Ok(self.storage.events.topo_point(&event_id).await?)
    }

    /// The room's state group at a stream position: its current state just after the last
    /// event at or before it.
    pub async fn group_at(&self, room_id: &RoomId, pos: i64) -> Result<Option<i64>> {
        Ok(self.storage.events.last_event_at_or_before(room_id, pos).await?.map(|(_, group)| group))
    }
}
