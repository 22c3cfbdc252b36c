//! Reading timelines: `/messages`, `/context`, `/timestamp_to_event`, and access checks.
//!
//! Pagination tokens name a point in the stream: token `N` lies between the events at
//! positions N and N+1. Paginating backwards from N returns events at N and below;
//! forwards, events above N. Sync tokens (`s{N}_...`) are accepted too, as the spec asks.

use std::{collections::BTreeSet, fmt, str::FromStr};

use ruma::{
    OwnedUserId, RoomId, UserId,
    api::client::filter::{LazyLoadOptions, RoomEventFilter},
};

use super::{PduRef, Rooms};
use crate::{
    error::{Error, Result},
    service::filter,
    storage::Direction,
};

/// Events fetched from storage per round while filling a page.
const FETCH_BATCH: u32 = 100;
/// The most events one page may hold.
pub const MAX_PAGE: u32 = 1000;

/// A point in the stream, as clients see it in `start`/`end`/`prev_batch` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamToken(pub i64);

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl FromStr for StreamToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid pagination token `{s}`"));
        let digits = s.strip_prefix('s').ok_or_else(invalid)?;
        let digits = digits.split('_').next().unwrap_or_default();
        let pos: i64 = digits.parse().map_err(|_| invalid())?;
        if pos < 0 {
            return Err(invalid());
        }
        Ok(Self(pos))
    }
}

/// Where a page starts and which way it goes.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub from: StreamToken,
    /// Stop at this point, if given.
    pub to: Option<StreamToken>,
    pub dir: Direction,
    pub limit: u32,
}

/// One page of a timeline.
pub struct Page {
    pub events: Vec<PduRef>,
    /// Where the next page starts; `None` when there is nothing more in that direction.
    pub end: Option<StreamToken>,
}

impl Rooms {
    /// Fails unless the user may read the room at all: they are or were a member (or were
    /// invited), or the room is world-readable. Individual events are then filtered by
    /// history visibility.
    pub async fn check_can_read(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        if self.head(room_id).await?.is_none() {
            return Err(Error::forbidden("You are not in this room"));
        }
        if self.membership(room_id, user_id).await?.is_some() || self.is_world_readable(room_id).await? {
            return Ok(());
        }
        Err(Error::forbidden("You are not in this room"))
    }

    /// A page of events the user may see, matching `filter`, starting at `from`.
    pub async fn paginate(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        request: PageRequest,
        filter: &RoomEventFilter,
    ) -> Result<Page> {
        let PageRequest { from, to, dir, limit } = request;
        let limit = limit.clamp(1, MAX_PAGE);
        // Nothing beyond the watermark: a position above it may still be committing, and a
        // reader that skipped it would never see it.
        let ceiling = self.stream.watermark();
        let mut events = Vec::new();
        let mut cursor = from.0.min(ceiling);
        loop {
            let (after, before) = match dir {
                Direction::Backward => (to.map_or(0, |t| t.0), cursor + 1),
                Direction::Forward => (cursor, to.map_or(ceiling, |t| t.0.min(ceiling)) + 1),
            };
            if after + 1 >= before {
                return Ok(Page { events, end: None });
            }
            let batch = self.storage.events.room_events(room_id, after, before, dir, FETCH_BATCH).await?;
            let exhausted = batch.len() < FETCH_BATCH as usize;
            let pdus: Vec<PduRef> = batch
                .into_iter()
                .map(|e| super::Pdu::from_stored(e).map(std::sync::Arc::new))
                .collect::<anyhow::Result<_>>()?;
            let visible = self.filter_visible(user_id, room_id, pdus.clone()).await?;
            let visible: std::collections::HashSet<_> = visible.iter().map(|p| p.stream_pos).collect();
            for pdu in pdus {
                cursor = match dir {
                    Direction::Backward => pdu.stream_pos - 1,
                    Direction::Forward => pdu.stream_pos,
                };
                if visible.contains(&pdu.stream_pos) && filter::matches(filter, &pdu) {
                    events.push(pdu);
                    if events.len() >= limit as usize {
                        return Ok(Page { events, end: Some(StreamToken(cursor)) });
                    }
                }
            }
            if exhausted {
                // Nothing further in this direction: no `end`, as the spec asks.
                return Ok(Page { events, end: None });
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
        let mut members = Vec::new();
        for sender in senders {
            if let Some(pdu) = self.group_lookup(at.state_group, "m.room.member", sender.as_str()).await? {
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
        let Some(pdu) = self.pdu(&event_id).await? else { return Ok(None) };
        Ok(self.can_see(user_id, &pdu).await?.then_some(pdu))
    }

    /// The latest position any reader may see.
    pub fn current_token(&self) -> StreamToken {
        StreamToken(self.stream.watermark())
    }
}

#[cfg(test)]
mod tests {
    use super::StreamToken;

    #[test]
    fn tokens_round_trip_and_accept_sync_tokens() {
        assert_eq!("s42".parse::<StreamToken>().ok(), Some(StreamToken(42)));
        assert_eq!("s42_7_3".parse::<StreamToken>().ok(), Some(StreamToken(42)));
        assert_eq!(StreamToken(9).to_string(), "s9");
        for bad in ["", "42", "sx", "s-1", "t5"] {
            assert!(bad.parse::<StreamToken>().is_err(), "{bad}");
        }
    }
}
