//! One room's part of a sync response.

use std::collections::BTreeSet;

use ruma::{
    OwnedEventId, OwnedUserId, RoomId, UInt, UserId,
    api::client::{
        filter::{EventFormat, Filter, LazyLoadOptions},
        sync::sync_events::{
            UnreadNotificationsCount,
            v3::{
                InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom, RoomAccountData, State,
                StateEvents, Timeline,
            },
        },
    },
    events::TimelineEventType,
    serde::Raw,
};
use serde_json::{Map, Value as JsonValue, value::RawValue};

use super::{SyncRequest, account_data_event};
use crate::{
    error::Result,
    service::{
        filter,
        push::PushService,
        rooms::{PduRef, Rooms, read::StreamToken},
    },
    storage::{AccountDataEntry, Membership, Storage},
};

/// Timeline events per room when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: u32 = 10;
/// How many heroes a room summary names.
const HEROES: usize = 5;

pub(super) struct RoomBuilder<'a> {
    pub rooms: &'a Rooms,
    pub storage: &'a Storage,
    pub push: &'a PushService,
    pub request: &'a SyncRequest,
    pub upto: i64,
}

/// A room's timeline and the state around it.
struct Section {
    timeline: Timeline,
    state: State,
    membership_changed: bool,
}

impl RoomBuilder<'_> {
    fn user(&self) -> &UserId {
        &self.request.user.user_id
    }

    fn since(&self) -> Option<i64> {
        self.request.since.map(|t| t.pos)
    }

    pub async fn joined(
        &self,
        membership: &Membership,
        room_data: &[&AccountDataEntry],
        ephemeral: Vec<JsonValue>,
    ) -> Result<Option<JoinedRoom>> {
        let since = self.since();
        let newly_joined = match since {
            Some(s) if membership.stream_pos > s => self.was_not_joined_at(&membership.room_id, s).await?,
            _ => false,
        };
        let full = since.is_none() || newly_joined || self.request.full_state;
        let section = self.section(membership, since, self.upto, full).await?;
        let account_data = self.room_account_data(room_data)?;
        let ephemeral_filter = &self.request.filter.room.ephemeral;
        let ephemeral: Vec<JsonValue> = ephemeral
            .into_iter()
            .filter(|e| {
                filter::types_match(
                    ephemeral_filter.types.as_deref(),
                    &ephemeral_filter.not_types,
                    e["type"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        if !full && section.timeline.events.is_empty() && account_data.events.is_empty() && ephemeral.is_empty() {
            return Ok(None);
        }
        let mut room = JoinedRoom::new();
        if full || section.membership_changed {
            self.summarise(&membership.room_id, &mut room).await?;
        }
        room.timeline = section.timeline;
        room.state = section.state;
        room.account_data = account_data;
        self.unread_counts(&membership.room_id, &mut room).await?;
        room.ephemeral.events =
            ephemeral.iter().map(|e| Ok(Raw::from_json(serde_json::value::to_raw_value(e)?))).collect::<Result<_>>()?;
        Ok(Some(room))
    }

    /// A room the user left (or was removed from): the timeline up to the leave event.
    pub async fn left(&self, membership: &Membership, room_data: &[&AccountDataEntry]) -> Result<Option<LeftRoom>> {
        if self.rooms.state.head(&membership.room_id).await?.is_none() {
            // An invite from another server, rejected here: the room was never here.
            let mut room = LeftRoom::new();
            room.account_data = self.room_account_data(room_data)?;
            return Ok(Some(room));
        }
        let since = self.since();
        let section = self.section(membership, since, membership.stream_pos.min(self.upto), since.is_none()).await?;
        let mut room = LeftRoom::new();
        room.timeline = section.timeline;
        room.state = section.state;
        room.account_data = self.room_account_data(room_data)?;
        Ok(Some(room))
    }

    pub async fn invited(&self, membership: &Membership) -> Result<InvitedRoom> {
        let mut room = InvitedRoom::new();
        let mut state = InviteState::new();
        state.events = match self.remote_invite(membership).await? {
            Some(events) => events,
            None => self.stripped_state(membership).await?,
        };
        room.invite_state = state;
        Ok(room)
    }

    pub async fn knocked(&self, membership: &Membership) -> Result<KnockedRoom> {
        let mut room = KnockedRoom::new();
        let mut state = KnockState::new();
        state.events = self.stripped_state(membership).await?;
        room.knock_state = state;
        Ok(room)
    }

    /// Whether the user was not yet joined at position `pos` (their join came after it).
    async fn was_not_joined_at(&self, room_id: &RoomId, pos: i64) -> Result<bool> {
        let Some(group) = self.rooms.read.group_at(room_id, pos).await? else { return Ok(true) };
        Ok(self.rooms.state.membership_in_group(group, self.user()).await? != "join")
    }

    /// The timeline over `(since, upto]` (its newest events when there are too many) and the
    /// state the client needs with it: the full state at the start of the timeline when
    /// `full`, the changes since `since` when the timeline has a gap, nothing otherwise.
    async fn section(&self, membership: &Membership, since: Option<i64>, upto: i64, full: bool) -> Result<Section> {
        let room_id = &membership.room_id;
        let (events, limited) = self.timeline_events(membership, since, upto, full).await?;
        let prev_batch = StreamToken(events.first().map_or(upto, |first| first.stream_pos - 1));

        // The state groups are only needed when state is sent: skip their look-ups otherwise.
        let lazy = matches!(self.request.filter.room.state.lazy_load_options, LazyLoadOptions::Enabled { .. });
        let needs_state = full || limited || self.request.use_state_after;
        let start_group = match events.first() {
            // A non-state event leaves the state as it found it: its group is the state before it.
            Some(first) if !first.is_state() => first.group(),
            _ if needs_state || lazy => self.group_at(room_id, prev_batch.0).await?,
            _ => None,
        };
        let since_group = match since {
            Some(s) if needs_state && !full => self.group_at(room_id, s).await?,
            _ => None,
        };
        let members = MemberSelection::new(lazy, &events, self.user());
        let (state_events, after) = if self.request.use_state_after {
            // `state_after`: the state at the end of the timeline, as a change from `since`.
            let end_group = self.group_at(room_id, upto).await?;
            let base = if full { None } else { since_group };
            (self.state_diff(end_group, base, &members).await?, true)
        } else if full {
            (self.state_diff(start_group, None, &members).await?, false)
        } else if limited {
            (self.state_diff(start_group, since_group, &members).await?, false)
        } else {
            (Vec::new(), false)
        };
        // Judged before lazy loading adds the senders' member events, which are not changes.
        let membership_changed =
            events.iter().chain(state_events.iter()).any(|p| p.event_type == TimelineEventType::RoomMember);
        let state_events = self.lazy_filter(state_events, &events, start_group).await?;

        let mut timeline = Timeline::new();
        timeline.limited = limited;
        timeline.prev_batch = Some(prev_batch.to_string());
        timeline.events = self.render(&events).await?;
        let mut state = StateEvents::new();
        state.events = self.render(&state_events).await?;
        let state = if after { State::After(state) } else { State::Before(state) };
        Ok(Section { timeline, state, membership_changed })
    }

    /// The timeline over `(since, upto]`: its newest `limit` events the user may see, oldest
    /// first, and whether older ones were left out. An incremental sync is served from the
    /// room's in-memory ring of recent events when it reaches back far enough.
    async fn timeline_events(
        &self,
        membership: &Membership,
        since: Option<i64>,
        upto: i64,
        full: bool,
    ) -> Result<(Vec<PduRef>, bool)> {
        let filter = &self.request.filter.room.timeline;
        let limit =
            filter.limit.map_or(DEFAULT_TIMELINE_LIMIT, |l| u32::try_from(u64::from(l)).unwrap_or(u32::MAX)).max(1);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if let Some(since) = since
            && !full
            && let Some(recent) = self.rooms.timeline.recent_events(&membership.room_id, since, upto)
        {
            let mut events = self.rooms.read.filter_visible_as(membership, recent).await?;
            events.retain(|p| filter::matches(filter, p));
            let limited = events.len() > limit;
            if limited {
                events.drain(..events.len() - limit);
            }
            return Ok((events, limited));
        }
        self.rooms.read.stream_page(membership, since, upto, limit, filter).await
    }

    /// The room's state group at stream position `pos`.
    async fn group_at(&self, room_id: &RoomId, pos: i64) -> Result<Option<i64>> {
        self.rooms.read.group_at(room_id, pos).await
    }

    /// The state events of `group` that differ from `base` (all of them without a base),
    /// passing the state filter.
    async fn state_diff(
        &self,
        group: Option<i64>,
        base: Option<i64>,
        members: &MemberSelection,
    ) -> Result<Vec<PduRef>> {
        let Some(group) = group else { return Ok(Vec::new()) };
        if Some(group) == base {
            return Ok(Vec::new());
        }
        let old: BTreeSet<OwnedEventId> = match base {
            Some(base) => self.rooms.state.group_entries(base).await?.iter().map(|(_, _, id)| id.clone()).collect(),
            None => BTreeSet::new(),
        };
        // Entries are filtered before any event is loaded: with lazy-loaded members, a large
        // room's member events are never read.
        let entries = self.rooms.state.group_entries(group).await?;
        let ids: Vec<OwnedEventId> = entries
            .iter()
            .filter(|(t, k, id)| !old.contains(id) && (t != "m.room.member" || members.wants(k)))
            .map(|(_, _, id)| id.clone())
            .collect();
        let mut state = self.rooms.events.pdus(&ids).await?;
        let state_filter = &self.request.filter.room.state;
        state.retain(|p| filter::matches(state_filter, p));
        state.sort_by_key(|p| p.stream_pos);
        Ok(state)
    }

    /// With lazy-loaded members, only the member events of the timeline's senders (and the
    /// user's own) are sent, taken from the state at the start of the timeline.
    async fn lazy_filter(
        &self,
        mut state: Vec<PduRef>,
        timeline: &[PduRef],
        start_group: Option<i64>,
    ) -> Result<Vec<PduRef>> {
        if !matches!(self.request.filter.room.state.lazy_load_options, LazyLoadOptions::Enabled { .. }) {
            return Ok(state);
        }
        let mut wanted: BTreeSet<OwnedUserId> = timeline.iter().map(|p| p.sender.clone()).collect();
        wanted.insert(self.user().to_owned());
        // Senders whose member event the client may not have: add it from the state.
        let in_timeline: BTreeSet<&str> = timeline
            .iter()
            .filter(|p| p.event_type == TimelineEventType::RoomMember)
            .filter_map(|p| p.state_key.as_deref())
            .collect();
        let present: BTreeSet<String> = state
            .iter()
            .filter(|p| p.event_type == TimelineEventType::RoomMember)
            .filter_map(|p| p.state_key.clone())
            .collect();
        if let Some(group) = start_group {
            for user in wanted {
                if present.contains(user.as_str()) || in_timeline.contains(user.as_str()) {
                    continue;
                }
                if let Some(member) = self.rooms.state.group_lookup(group, "m.room.member", user.as_str()).await? {
                    state.push(member);
                }
            }
        }
        Ok(state)
    }

    /// Notification and highlight counts since the user's read receipt; per thread when the
    /// filter asks, otherwise threads count towards the room.
    async fn unread_counts(&self, room_id: &RoomId, room: &mut JoinedRoom) -> Result<()> {
        let (main, threads) = self.push.unread(self.user(), room_id).await?;
        let per_thread = self.request.filter.room.timeline.unread_thread_notifications;
        let to_ruma = |c: &crate::storage::push::UnreadCounts| {
            let mut counts = UnreadNotificationsCount::new();
            counts.notification_count = UInt::try_from(c.notifications).ok();
            counts.highlight_count = UInt::try_from(c.highlights).ok();
            counts
        };
        if per_thread {
            room.unread_notifications = to_ruma(&main);
            for (thread, counts) in &threads {
                if let Ok(id) = OwnedEventId::try_from(thread.as_str()) {
                    room.unread_thread_notifications.insert(id, to_ruma(counts));
                }
            }
        } else {
            let mut all = main;
            for (_, counts) in &threads {
                all.notifications += counts.notifications;
                all.highlights += counts.highlights;
            }
            room.unread_notifications = to_ruma(&all);
        }
        Ok(())
    }

    async fn summarise(&self, room_id: &RoomId, room: &mut JoinedRoom) -> Result<()> {
        let members = self.storage.state.room_members(room_id, &["join", "invite"]).await?;
        let joined = members.iter().filter(|m| m.membership == "join").count();
        let invited = members.len() - joined;
        room.summary.joined_member_count = UInt::try_from(joined).ok();
        room.summary.invited_member_count = UInt::try_from(invited).ok();
        room.summary.heroes =
            members.into_iter().map(|m| m.user_id).filter(|u| u != self.user()).take(HEROES).collect();
        Ok(())
    }

    fn room_account_data(&self, entries: &[&AccountDataEntry]) -> Result<RoomAccountData> {
        let mut data = RoomAccountData::new();
        data.events = entries
            .iter()
            .filter(|e| {
                let wanted = &self.request.filter.room.account_data;
                filter::types_match(wanted.types.as_deref(), &wanted.not_types, &e.data_type)
            })
            .map(|e| account_data_event(&e.data_type, &e.content))
            .collect::<Result<_>>()?;
        Ok(data)
    }

    /// What an invitee or knocker may see of a room: a few state events, stripped to
    /// `type`, `state_key`, `sender` and `content`, plus their own member event.
    /// The stripped state another server sent with its invite to a room this server does
    /// not have, and the invite itself.
    async fn remote_invite<T>(&self, membership: &Membership) -> Result<Option<Vec<Raw<T>>>> {
        if self.rooms.state.head(&membership.room_id).await?.is_some() {
            return Ok(None);
        }
        let Some(invite) = self.storage.federation.remote_invite(&membership.room_id, self.user()).await? else {
            return Ok(None);
        };
        let mut events: Vec<Raw<T>> = serde_json::from_str::<Vec<Box<RawValue>>>(&invite.invite_state)
            .unwrap_or_default()
            .into_iter()
            .map(Raw::from_json)
            .collect();
        let own: JsonValue = serde_json::from_str(&invite.event_json)?;
        let stripped = serde_json::json!({
            "type": own["type"],
            "state_key": own["state_key"],
            "sender": own["sender"],
            "content": own["content"],
        });
        events.push(Raw::from_json(serde_json::value::to_raw_value(&stripped)?));
        Ok(Some(events))
    }

    async fn stripped_state<T>(&self, membership: &Membership) -> Result<Vec<Raw<T>>> {
        let mut events = Vec::new();
        for event_type in crate::service::rooms::timeline::STRIPPED_TYPES {
            if let Some(pdu) = self.rooms.state.current_state_event(&membership.room_id, event_type, "").await? {
                events.push(pdu);
            }
        }
        if let Some(own) = self.rooms.events.pdu(&membership.event_id).await? {
            events.push(own);
        }
        events
            .iter()
            .map(|pdu| {
                let stripped = serde_json::json!({
                    "type": pdu.event_type.to_string(),
                    "state_key": pdu.state_key,
                    "sender": pdu.sender,
                    "content": serde_json::from_str::<JsonValue>(pdu.content.get())?,
                });
                Ok(Raw::from_json(serde_json::value::to_raw_value(&stripped)?))
            })
            .collect()
    }

    /// Events in the sync format the filter asks for: the client format without `room_id`
    /// (or the PDU, for `event_format: federation`), cut down to `event_fields` if given.
    async fn render<T>(&self, pdus: &[PduRef]) -> Result<Vec<Raw<T>>> {
        let filter = &self.request.filter;
        let events: Vec<Box<RawValue>> = if filter.event_format == EventFormat::Federation {
            pdus.iter().map(|p| p.json.clone()).collect()
        } else {
            self.rooms.read.client_events(self.request.user.viewer(), pdus).await?
        };
        events
            .into_iter()
            .map(|raw| {
                let mut object: Map<String, JsonValue> = serde_json::from_str(raw.get())?;
                if filter.event_format != EventFormat::Federation {
                    object.remove("room_id");
                }
                if let Some(fields) = &filter.event_fields {
                    object = only_fields(object, fields);
                }
                Ok(Raw::from_json(serde_json::value::to_raw_value(&object)?))
            })
            .collect()
    }
}

/// Which member events the state section may carry: all, or with lazy-loaded members only
/// those of the timeline's senders and the user.
struct MemberSelection {
    only: Option<BTreeSet<String>>,
}

impl MemberSelection {
    fn new(lazy: bool, timeline: &[PduRef], user: &UserId) -> Self {
        let only = lazy.then(|| {
            let mut users: BTreeSet<String> = timeline.iter().map(|p| p.sender.to_string()).collect();
            users.insert(user.to_string());
            users
        });
        Self { only }
    }

    fn wants(&self, state_key: &str) -> bool {
        self.only.as_ref().is_none_or(|users| users.contains(state_key))
    }
}

/// Whether global or room account data of `data_type` passes an account-data filter.
pub(super) fn account_data_wanted(wanted: &Filter, data_type: &str) -> bool {
    filter::types_match(wanted.types.as_deref(), &wanted.not_types, data_type)
}

/// Keeps only the dotted paths in `fields` (e.g. `content.body`), per the filter's
/// `event_fields`.
fn only_fields(object: Map<String, JsonValue>, fields: &[String]) -> Map<String, JsonValue> {
    let mut out = Map::new();
    for field in fields {
        let path: Vec<&str> = field.split('.').collect();
        copy_path(&object, &mut out, &path);
    }
    out
}

fn copy_path(from: &Map<String, JsonValue>, to: &mut Map<String, JsonValue>, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(value) = from.get(*first) else { return };
    if rest.is_empty() {
        to.insert((*first).to_owned(), value.clone());
        return;
    }
    if let JsonValue::Object(inner) = value {
        let entry = to.entry((*first).to_owned()).or_insert_with(|| JsonValue::Object(Map::new()));
        if let JsonValue::Object(target) = entry {
            copy_path(inner, target, rest);
        }
    }
}
