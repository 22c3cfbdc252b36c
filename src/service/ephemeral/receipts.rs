//! Read receipts (`m.read`, `m.read.private`) and the fully-read marker.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value as JsonValue, json};

use crate::{
    error::{Error, Result},
    service::{account_data::AccountDataService, latest::Key, notifier::Notifier, now_ms, rooms::Rooms},
    storage::{
        Storage, StreamAllocator,
        receipts::{Receipt, ReceiptWrite},
    },
};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";
pub const FULLY_READ: &str = "m.fully_read";

pub struct ReceiptService {
    storage: Storage,
    stream: Arc<StreamAllocator>,
    rooms: Arc<Rooms>,
    notifier: Arc<Notifier>,
}

impl ReceiptService {
    pub fn new(storage: Storage, stream: Arc<StreamAllocator>, rooms: Arc<Rooms>, notifier: Arc<Notifier>) -> Self {
        Self { storage, stream, rooms, notifier }
    }

    /// Records that the user read up to `event_id`. Public receipts reach every member;
    /// private ones only the user's own devices. A receipt for an event earlier than the
    /// user's current one is accepted and ignored: receipts only move forward.
    pub async fn set_receipt(
        &self,
        account_data: &AccountDataService,
        user_id: &UserId,
        room_id: &RoomId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        if !self.rooms.members.is_joined(room_id, user_id).await? {
            return Err(Error::forbidden("You are not in this room"));
        }
        let event = self
            .rooms
            .events
            .pdu(event_id)
            .await?
            .filter(|p| p.room_id == room_id)
            .ok_or_else(|| Error::not_found("Event not found in this room"))?;
        if !self.rooms.read.can_see(user_id, &event).await? {
            return Err(Error::not_found("Event not found in this room"));
        }
        if receipt_type == FULLY_READ {
            let content = serde_json::value::to_raw_value(&json!({ "event_id": event_id }))?;
            return account_data.store(user_id, Some(room_id), FULLY_READ, &content).await;
        }
        if receipt_type != READ && receipt_type != READ_PRIVATE {
            return Err(Error::invalid_param(format!("Unsupported receipt type {receipt_type}")));
        }
        let receipt = Receipt {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread_id.unwrap_or_default().to_owned(),
            event_id: event_id.to_string(),
            event_pos: event.stream_pos,
            ts: now_ms(),
            stream_pos: 0,
        };
        let mut pos = self.stream.allocate();
        self.notifier.latest().note(Key::Receipts(room_id.to_owned()), pos.get());
        if self.storage.receipts.put(&receipt, &pos).await? == ReceiptWrite::Stored {
            let notifier = Arc::clone(&self.notifier);
            let audience: Vec<_> = if receipt_type == READ {
                self.rooms.members.audience_of(room_id).await?.iter().cloned().collect()
            } else {
                vec![user_id.to_owned()]
            };
            pos.on_visible(move || notifier.notify_users(audience.iter().map(|u| &**u)));
        }
        Ok(())
    }

    /// The `m.receipt` ephemeral event content of each room with receipts `viewer` may see:
    /// those set in `(after, up_to]`, or all current ones when `after` is `None`.
    pub async fn receipts_for(
        &self,
        viewer: &UserId,
        room_ids: &[OwnedRoomId],
        after: Option<i64>,
        up_to: i64,
    ) -> Result<BTreeMap<OwnedRoomId, JsonValue>> {
        let receipts = match after {
            Some(after) => self.storage.receipts.changed_since(room_ids, after, up_to).await?,
            None => {
                let mut all = Vec::new();
                for room_id in room_ids {
                    all.extend(
                        self.storage
                            .receipts
                            .room_receipts(room_id)
                            .await?
                            .into_iter()
                            .filter(|r| r.stream_pos <= up_to),
                    );
                }
                all
            }
        };
        let mut by_room: BTreeMap<OwnedRoomId, JsonValue> = BTreeMap::new();
        for r in receipts {
            if r.receipt_type == READ_PRIVATE && r.user_id != viewer {
                continue;
            }
            let mut receipt = json!({ "ts": r.ts });
            if !r.thread_id.is_empty() {
                receipt["thread_id"] = r.thread_id.clone().into();
            }
            let content = by_room.entry(r.room_id.clone()).or_insert_with(|| json!({}));
            content[&r.event_id][&r.receipt_type][r.user_id.as_str()] = receipt;
        }
        Ok(by_room)
    }
}
