//! Building a local event: a complete PDU on the room's head, hashed and signed by this
//! server, checked against the current state with ruma's auth rules, then handed to the
//! persist step like any other event.
//!
//! Every step runs under the room's lock (`RoomGuard`), so the state the event is checked
//! against is exactly the state it will follow.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName,
    UserId, canonical_json::to_canonical_value, events::TimelineEventType, state_res,
};
use serde_json::Value as JsonValue;

use super::{
    Timeline,
    auth::{check_known, check_with_auth_events, check_with_state},
    persist::{Flow, Persist, StateBefore},
};
use crate::{
    error::{Error, Result},
    service::{
        now_ms,
        rooms::{Pdu, PduRef, RoomGuard, RoomHead},
    },
    storage::{NewRoom, Placement},
};

/// Forward extremities a new event may reference.
const MAX_PREV_EVENTS: usize = 20;
/// The spec's limit on a PDU's size.
pub(super) const MAX_PDU_BYTES: usize = 65_536;
/// The spec's limit on the length of an event type, in bytes.
const MAX_TYPE_BYTES: usize = 255;

/// An event a local user wants to send.
#[derive(Clone, Debug)]
pub struct EventDraft {
    pub event_type: TimelineEventType,
    /// A JSON object.
    pub content: JsonValue,
    pub state_key: Option<String>,
    /// For redactions: the event to redact.
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn message(event_type: TimelineEventType, content: JsonValue) -> Self {
        Self { event_type, content, state_key: None, redacts: None }
    }

    pub fn state(event_type: TimelineEventType, state_key: impl Into<String>, content: JsonValue) -> Self {
        Self { event_type, content, state_key: Some(state_key.into()), redacts: None }
    }
}

/// The device transaction an event was sent in.
#[derive(Clone, Copy, Debug)]
pub struct Txn<'a> {
    pub device_id: &'a DeviceId,
    /// The request scope (path) the client's transaction ID belongs to.
    pub key: &'a str,
    pub txn_id: &'a str,
}

impl Pdu {
    /// Parses a complete PDU object that is not stored yet.
    pub(super) fn from_object(
        event_id: OwnedEventId,
        room_id: OwnedRoomId,
        object: &CanonicalJsonObject,
    ) -> Result<Self> {
        let json = serde_json::to_string(object)?;
        if json.len() > MAX_PDU_BYTES {
            return Err(Error::too_large("Event is larger than 64 KiB"));
        }
        Pdu::from_stored(crate::storage::StoredEvent {
            stream_pos: 0,
            event_id,
            room_id,
            state_group: None,
            placement: Placement::Timeline,
            json: serde_json::value::RawValue::from_string(json)?,
            unsigned: None,
            redacted_by: None,
        })
        .map_err(|e| Error::bad_json(format!("Invalid event: {e}")))
    }
}

impl Timeline {
    /// Appends a local user's event to a room this server has, under the held lock.
    pub async fn append(
        &self,
        guard: &RoomGuard,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<Txn<'_>>,
    ) -> Result<PduRef> {
        let head = self.state.head(guard.room_id()).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if let Some(txn) = txn
            && let Some(existing) = self.storage.events.txn_event(sender, txn.device_id, txn.key).await?
            && let Some(pdu) = self.events.pdu(&existing).await?
        {
            return Ok(pdu);
        }
        let mut object = build(&head, Some(&head.room_id), sender, &draft, now_ms())?;
        let event_id = self.keys.hash_and_sign_event(&mut object, &head.rules)?;
        let pdu = Pdu::from_object(event_id, head.room_id.clone(), &object)?;
        self.authorize_local(&head, &pdu).await?;
        let persist = Persist {
            pdu,
            before: Some(StateBefore::current(&head)),
            placement: Placement::Timeline,
            flow: Flow::Live,
            txn: txn.map(|t| (sender, t)),
            new_room: None,
            has_successor: false,
            restart_head: false,
        };
        self.persist(guard, &head, persist).await
    }

    /// Builds, signs and checks a new room's events in memory, writing nothing: the create
    /// event, then `drafts`, each on the state the previous ones make. Returns the room's
    /// lock, held, and the events, for [`Timeline::persist_planned`]. Any event that would
    /// fail fails here, before the room exists, so a refused createRoom leaves nothing.
    pub(super) async fn plan_room(
        &self,
        creator: &UserId,
        version: &RoomVersionId,
        create_content: JsonValue,
        drafts: Vec<EventDraft>,
    ) -> Result<(RoomGuard, Vec<PduRef>)> {
        let rules = RoomHead::rules_for(version)?;
        let mut ts = now_ms();
        loop {
            let room_id = if rules.authorization.room_create_event_id_as_room_id {
                None
            } else {
                let local =
                    crate::service::secrets::random_string(18, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
                Some(
                    OwnedRoomId::try_from(format!("!{local}:{}", self.config.server_name))
                        .map_err(|e| Error::internal(e.to_string()))?,
                )
            };
            // A room without events yet: the create event follows nothing.
            let empty = RoomHead {
                room_id: room_id.clone().unwrap_or_else(|| head_placeholder(&self.config.server_name)),
                version: version.clone(),
                rules: rules.clone(),
                extremities: Vec::new(),
                current_group: 0,
                chain_len: 0,
                state: Arc::default(),
            };
            let draft = EventDraft::state(TimelineEventType::RoomCreate, "", create_content.clone());
            let mut object = build(&empty, room_id.as_deref(), creator, &draft, ts)?;
            let event_id = self.keys.hash_and_sign_event(&mut object, &rules)?;
            let room_id = match room_id {
                Some(room_id) => room_id,
                None => parley_federation::pdu::room_id_from_create(&event_id)
                    .map_err(|e| Error::internal(e.to_string()))?,
            };
            let guard = self.lock(&room_id).await;
            if self.storage.rooms.get(&room_id).await?.is_some() {
                // Two identical create events (same creator, content and millisecond) would
                // name the same room; move the timestamp and try again.
                ts += 1;
                continue;
            }
            let mut head = RoomHead { room_id: room_id.clone(), ..empty };
            let mut known = HashMap::new();
            let mut planned = Vec::with_capacity(drafts.len() + 1);
            let create = Pdu::from_object(event_id, room_id.clone(), &object)?;
            let forbidden = |reason: String| Error::forbidden(format!("Event not allowed: {reason}"));
            check_known(&head.rules, &create, &head.state, &known).map_err(forbidden)?;
            planned.push(advance(&mut head, &mut known, create));
            for draft in &drafts {
                let mut object = build(&head, Some(&room_id), creator, draft, ts)?;
                let event_id = self.keys.hash_and_sign_event(&mut object, &head.rules)?;
                let pdu = Pdu::from_object(event_id, room_id.clone(), &object)?;
                check_known(&head.rules, &pdu, &head.state, &known).map_err(forbidden)?;
                planned.push(advance(&mut head, &mut known, pdu));
            }
            return Ok((guard, planned));
        }
    }

    /// Persists the events [`Timeline::plan_room`] made, in order, the first one creating the
    /// room.
    pub(super) async fn persist_planned(
        &self,
        guard: &RoomGuard,
        version: &RoomVersionId,
        creator: &UserId,
        planned: Vec<PduRef>,
    ) -> Result<()> {
        let room_id = guard.room_id();
        for (i, pdu) in planned.into_iter().enumerate() {
            let pdu = Arc::unwrap_or_clone(pdu);
            let (head, new_room) = if i == 0 {
                let head = RoomHead {
                    room_id: room_id.to_owned(),
                    version: version.clone(),
                    rules: RoomHead::rules_for(version)?,
                    extremities: Vec::new(),
                    current_group: 0,
                    chain_len: 0,
                    state: Arc::default(),
                };
                let created_at = i64::from(pdu.origin_server_ts.get());
                (Arc::new(head), Some(NewRoom { room_version: version.as_str(), creator, created_at }))
            } else {
                (self.state.head(room_id).await?.ok_or_else(|| Error::internal("the new room vanished"))?, None)
            };
            let persist = Persist {
                pdu,
                before: Some(StateBefore::current(&head)),
                placement: Placement::Timeline,
                flow: Flow::Live,
                txn: None,
                new_room,
                has_successor: false,
                restart_head: false,
            };
            self.persist(guard, &head, persist).await?;
        }
        Ok(())
    }

    /// Runs the room version's authorization rules against the event's auth events and the
    /// current state, which under the lock is the state before it. A local event that fails
    /// is refused: nothing is stored.
    pub(super) async fn authorize_local(&self, head: &RoomHead, pdu: &Pdu) -> Result<()> {
        let forbidden = |reason: String| Error::forbidden(format!("Event not allowed: {reason}"));
        let auth = self.auth_events_of(head, pdu).await?;
        check_with_auth_events(&head.rules, pdu, &auth).map_err(forbidden)?;
        let state = self.auth_state(&head.rules, pdu, &head.state).await?.map_err(forbidden)?;
        check_with_state(&head.rules, pdu, &state).map_err(forbidden)?;
        self.check_redaction(head, pdu).await
    }

    /// A client may redact an event of this room only; redacting someone else's event also
    /// needs the room's `redact` level (client-server spec, "Redactions"), which the auth
    /// rules do not check.
    async fn check_redaction(&self, head: &RoomHead, pdu: &Pdu) -> Result<()> {
        if pdu.event_type != TimelineEventType::RoomRedaction {
            return Ok(());
        }
        let Some(target) = &pdu.redacts else { return Err(Error::bad_json("A redaction must name its event")) };
        let original = self.events.pdu(target).await?;
        let Some(original) = original.filter(|o| o.room_id == head.room_id && o.in_timeline()) else {
            return Err(Error::not_found("Event not found"));
        };
        if original.sender == pdu.sender {
            return Ok(());
        }
        if !self.state.power_levels(&head.room_id).await?.user_can_redact_event_of_other(&pdu.sender) {
            return Err(Error::forbidden("You may not redact other users' events"));
        }
        Ok(())
    }
}

/// The PDU for `draft`, without hashes and signatures.
pub(super) fn build(
    head: &RoomHead,
    room_id: Option<&RoomId>,
    sender: &UserId,
    draft: &EventDraft,
    ts: i64,
) -> Result<CanonicalJsonObject> {
    let event_type = draft.event_type.to_string();
    if event_type.len() > MAX_TYPE_BYTES {
        return Err(Error::bad_json("Event types are at most 255 bytes"));
    }
    if draft.state_key.as_ref().is_some_and(|k| k.len() > MAX_TYPE_BYTES) {
        return Err(Error::bad_json("State keys are at most 255 bytes"));
    }
    let mut content = match to_canonical_value(&draft.content) {
        Ok(CanonicalJsonValue::Object(content)) => content,
        Ok(_) => return Err(Error::bad_json("Event content must be a JSON object")),
        Err(e) => return Err(Error::bad_json(format!("Event content is not canonical JSON: {e}"))),
    };
    let auth_types = state_res::auth_types_for_event(
        &draft.event_type,
        sender,
        draft.state_key.as_deref(),
        &serde_json::value::to_raw_value(&draft.content)?,
        &head.rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?;
    let auth_events: Vec<CanonicalJsonValue> = auth_types
        .iter()
        .filter_map(|(event_type, state_key)| head.state_event(&event_type.to_string(), state_key))
        .map(|id| CanonicalJsonValue::String(id.to_string()))
        .collect();
    // The deepest extremities first, so that the ones left out (beyond the limit) are the
    // stalest forks; the next event will include them.
    let mut extremities = head.extremities.clone();
    extremities.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let prev_events: Vec<CanonicalJsonValue> =
        extremities.iter().take(MAX_PREV_EVENTS).map(|(id, _)| CanonicalJsonValue::String(id.to_string())).collect();
    // The spec caps depth at 2^63 - 1.
    let depth = head.depth().saturating_add(1);

    let mut object = CanonicalJsonObject::new();
    if let Some(redacts) = &draft.redacts {
        if head.rules.redaction.keep_room_redaction_redacts {
            content.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        } else {
            object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
    }
    object.insert("type".into(), CanonicalJsonValue::String(event_type));
    object.insert("content".into(), CanonicalJsonValue::Object(content));
    object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
    if let Some(room_id) = room_id {
        object.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    }
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(ts.try_into().unwrap_or_default()));
    object.insert("depth".into(), CanonicalJsonValue::Integer(depth.try_into().unwrap_or_default()));
    object.insert("prev_events".into(), CanonicalJsonValue::Array(prev_events));
    object.insert("auth_events".into(), CanonicalJsonValue::Array(auth_events));
    if let Some(state_key) = &draft.state_key {
        object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }
    Ok(object)
}

/// Moves an in-memory head past a planned event.
fn advance(head: &mut RoomHead, known: &mut HashMap<OwnedEventId, PduRef>, pdu: Pdu) -> PduRef {
    head.extremities = vec![(pdu.event_id.clone(), pdu.depth_i64())];
    if let Some(key) = &pdu.state_key {
        Arc::make_mut(&mut head.state).insert((pdu.event_type.to_string(), key.clone()), pdu.event_id.clone());
    }
    let pdu = Arc::new(pdu);
    known.insert(pdu.event_id.clone(), Arc::clone(&pdu));
    pdu
}

/// The room ID of a v12 room is known only once its create event is hashed; until then the
/// head carries a syntactically valid stand-in that is never stored or sent.
fn head_placeholder(server_name: &ServerName) -> OwnedRoomId {
    OwnedRoomId::try_from(format!("!unnamed:{server_name}")).unwrap_or_else(|_| unreachable!("server names are valid"))
}
