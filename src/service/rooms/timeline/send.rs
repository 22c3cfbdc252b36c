//! Sending events as a client: messages, state, redactions.

use ruma::{DeviceId, EventId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Value as JsonValue, json};

use super::{EventDraft, Timeline, Txn};
use crate::error::{Error, Result};
use crate::service::rooms::PduRef;

impl Timeline {
    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`: idempotent per device and path.
    pub async fn send_message(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        device_id: &DeviceId,
        event_type: &str,
        txn_id: &str,
        content: JsonValue,
    ) -> Result<PduRef> {
        let key = format!("send/{room_id}/{event_type}/{txn_id}");
        let txn = Txn { device_id, key: &key, txn_id };
        self.append_locked(room_id, sender, EventDraft::message(event_type.into(), content), Some(txn)).await
    }

    /// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
    pub async fn send_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event_type: &str,
        state_key: &str,
        content: JsonValue,
    ) -> Result<PduRef> {
        if event_type == "m.room.canonical_alias" {
            self.check_canonical_alias(room_id, &content).await?;
        }
        self.append_locked(room_id, sender, EventDraft::state(event_type.into(), state_key, content), None).await
    }

    /// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
    pub async fn redact(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        device_id: &DeviceId,
        target: &EventId,
        txn_id: &str,
        reason: Option<&str>,
    ) -> Result<PduRef> {
        let mut content = json!({});
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let draft = EventDraft {
            event_type: TimelineEventType::RoomRedaction,
            content,
            state_key: None,
            redacts: Some(target.to_owned()),
        };
        let key = format!("redact/{room_id}/{target}/{txn_id}");
        self.append_locked(room_id, sender, draft, Some(Txn { device_id, key: &key, txn_id })).await
    }

    /// Appends under the room's lock. (Readers wait for every acknowledged write before they
    /// read, `StreamAllocator::read_your_writes`, so the sender's next read includes it.)
    pub(super) async fn append_locked(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<Txn<'_>>,
    ) -> Result<PduRef> {
        let guard = self.lock(room_id).await;
        self.append(&guard, sender, draft, txn).await
    }

    /// Every alias an `m.room.canonical_alias` event names must point to the room
    /// (`M_BAD_ALIAS` otherwise).
    async fn check_canonical_alias(&self, room_id: &RoomId, content: &JsonValue) -> Result<()> {
        let mut aliases: Vec<&str> = Vec::new();
        if let Some(alias) = content.get("alias").and_then(JsonValue::as_str) {
            aliases.push(alias);
        }
        if let Some(alt) = content.get("alt_aliases").and_then(JsonValue::as_array) {
            aliases.extend(alt.iter().filter_map(JsonValue::as_str));
        }
        let bad =
            |message: String| Error::new(http::StatusCode::BAD_REQUEST, ruma::api::error::ErrorKind::BadAlias, message);
        for alias in aliases {
            let parsed =
                ruma::RoomAliasId::parse(alias).map_err(|_| Error::invalid_param(format!("Invalid alias {alias}")))?;
            match self.storage.rooms.resolve_alias(&parsed).await? {
                Some((target, _)) if target == room_id => {}
                _ => return Err(bad(format!("{alias} does not point to this room"))),
            }
        }
        Ok(())
    }
}
