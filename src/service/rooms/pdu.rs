//! `Pdu`: a stored event, parsed once, usable by ruma's auth rules and state resolution
//! (it implements `state_res::Event`) and servable to clients.

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::TimelineEventType, state_res,
};
use serde::Deserialize;
use serde_json::{Map, Value as JsonValue, value::RawValue};

use crate::storage::{Placement, StoredEvent};

/// The PDU fields Parley reads; everything else stays in `json` untouched.
#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "type")]
    event_type: TimelineEventType,
    sender: OwnedUserId,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
    #[serde(default)]
    state_key: Option<String>,
    content: Box<RawValue>,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    #[serde(default)]
    depth: UInt,
    #[serde(default)]
    redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct ContentRedacts {
    #[serde(default)]
    redacts: Option<OwnedEventId>,
}

#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room, also for a v12 create event whose JSON carries none.
    pub room_id: OwnedRoomId,
    pub(super) json_room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub event_type: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: UInt,
    /// Top-level `redacts` (v1–v10) or `content.redacts` (v11+).
    pub redacts: Option<OwnedEventId>,
    /// The full PDU as stored (redacted once redacted).
    pub json: Box<RawValue>,
    /// Unsigned data the server keeps beside the PDU (`prev_content`, `replaces_state`, ...).
    pub unsigned: Option<Box<RawValue>>,
    /// The event's position in the stream while it is in the timeline; 0 otherwise.
    pub stream_pos: i64,
    /// The state group after this event (before it, when rejected); `None` for outliers.
    pub state_group: Option<i64>,
    pub placement: Placement,
    pub redacted_by: Option<OwnedEventId>,
}

impl Pdu {
    pub fn from_stored(stored: StoredEvent) -> anyhow::Result<Self> {
        let fields: Fields = serde_json::from_str(stored.json.get())?;
        let redacts = match fields.redacts {
            Some(id) => Some(id),
            None if fields.event_type == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<ContentRedacts>(fields.content.get()).ok().and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Self {
            event_id: stored.event_id,
            room_id: stored.room_id,
            json_room_id: fields.room_id,
            sender: fields.sender,
            event_type: fields.event_type,
            state_key: fields.state_key,
            content: fields.content,
            origin_server_ts: fields.origin_server_ts,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            depth: fields.depth,
            redacts,
            json: stored.json,
            unsigned: stored.unsigned,
            stream_pos: stored.stream_pos,
            state_group: stored.state_group,
            placement: stored.placement,
            redacted_by: stored.redacted_by,
        })
    }

    /// The content, parsed into `T` leniently (a malformed content gives `None`).
    pub fn content_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.content.get()).ok()
    }

    /// For member events, the `membership` of the content.
    pub fn membership(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Member {
            membership: String,
        }
        (self.event_type == TimelineEventType::RoomMember).then(|| self.content_as::<Member>().map(|m| m.membership))?
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// Whether the event is in the room's timeline: the only events clients are ever shown.
    pub fn in_timeline(&self) -> bool {
        self.placement == Placement::Timeline
    }

    /// The state group after the event, for an event in the timeline.
    pub fn group(&self) -> Option<i64> {
        if self.in_timeline() { self.state_group } else { None }
    }

    /// The event's place in the room's topological order (for an event in the timeline).
    pub fn topo_point(&self) -> crate::storage::TopoPoint {
        crate::storage::TopoPoint { depth: self.depth_i64(), stream: self.stream_pos }
    }

    /// The depth, as stored and ordered by (the spec bounds it by 2^63 - 1).
    pub fn depth_i64(&self) -> i64 {
        i64::try_from(u64::from(self.depth)).unwrap_or(i64::MAX)
    }

    /// The event in the client-server format: the PDU without its federation fields, with
    /// `event_id`, and the unsigned data clients expect.
    pub fn to_client(&self, extra: ClientExtras<'_>) -> JsonValue {
        let mut object: Map<String, JsonValue> = serde_json::from_str(self.json.get()).unwrap_or_default();
        for field in ["auth_events", "prev_events", "depth", "hashes", "signatures", "origin", "membership"] {
            object.remove(field);
        }
        object.insert("event_id".into(), self.event_id.as_str().into());
        object.insert("room_id".into(), self.room_id.as_str().into());
        if let Some(redacts) = &self.redacts {
            // v11 moved `redacts` into the content; clients still read the top-level field.
            object.insert("redacts".into(), redacts.as_str().into());
        }
        let mut unsigned: Map<String, JsonValue> =
            self.unsigned.as_ref().and_then(|u| serde_json::from_str(u.get()).ok()).unwrap_or_default();
        let age = extra.now.get().saturating_sub(self.origin_server_ts.get());
        unsigned.insert("age".into(), JsonValue::from(u64::from(age)));
        if let Some(txn_id) = extra.transaction_id {
            unsigned.insert("transaction_id".into(), txn_id.into());
        }
        if let Some(because) = extra.redacted_because {
            unsigned.insert("redacted_because".into(), because);
        }
        object.insert("unsigned".into(), unsigned.into());
        object.into()
    }
}

/// What a client's view of an event adds beyond the PDU.
pub struct ClientExtras<'a> {
    pub now: MilliSecondsSinceUnixEpoch,
    /// The sending device's transaction ID, shown only to that device.
    pub transaction_id: Option<&'a str>,
    /// The redaction event, in client format, when the event has been redacted.
    pub redacted_because: Option<JsonValue>,
}

impl ClientExtras<'_> {
    pub fn now() -> Self {
        Self { now: MilliSecondsSinceUnixEpoch::now(), transaction_id: None, redacted_because: None }
    }
}

impl state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.json_room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        matches!(self.placement, Placement::Rejected(_))
    }
}

/// Events are shared between caches and requests.
pub type PduRef = Arc<Pdu>;
