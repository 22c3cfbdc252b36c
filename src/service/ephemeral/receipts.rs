//! Read receipts (`m.read`, `m.read.private`) and the fully-read marker.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value as JsonValue, json};

use crate::{
    error::{Error, Result},
    service::{
        account_data::AccountDataService, federation::EduOut, latest::Key, notifier::Notifier, now_ms, rooms::Rooms,
    },
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
    /// Tells other servers in the room about local users' public receipts.
    edus: EduOut,
}

impl ReceiptService {
    pub fn new(
        storage: Storage,
        stream: Arc<StreamAllocator>,
        rooms: Arc<Rooms>,
        notifier: Arc<Notifier>,
        edus: EduOut,
    ) -> Self {
        Self { storage, stream, rooms, notifier, edus }
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
        let ts = now_ms();
        let stored = self.store(user_id, room_id, receipt_type, &event, thread_id, ts).await?;
        if stored && receipt_type == READ {
            let mut data = json!({ "ts": ts });
            if let Some(thread_id) = thread_id {
                data["thread_id"] = thread_id.into();
            }
            let content = json!({ room_id.as_str(): { READ: { user_id.as_str(): {
                "event_ids": [event_id], "data": data,
            }}}});
            if let Err(e) = self.edus.to_room(room_id, "m.receipt", content).await {
                tracing::warn!(%room_id, error = %e, "could not queue a receipt for other servers");
            }
        }
        Ok(())
    }

    /// A remote user's public receipt, as their server reported it: kept if they are in the
    /// room and the event is one of its timeline's.
    pub async fn receive_remote(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        thread_id: Option<&str>,
        ts: i64,
    ) -> Result<()> {
        if !self.rooms.members.is_joined(room_id, user_id).await? {
            return Ok(());
        }
        let event = self.rooms.events.pdu(event_id).await?;
        let Some(event) = event.filter(|p| p.room_id == room_id && p.in_timeline()) else { return Ok(()) };
        self.store(user_id, room_id, READ, &event, thread_id, ts).await?;
        Ok(())
    }

    /// Stores a receipt at a new stream position and wakes whom it concerns. Returns whether it
    /// moved the user's receipt forward.
    async fn store(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        receipt_type: &str,
        event: &crate::service::rooms::PduRef,
        thread_id: Option<&str>,
        ts: i64,
    ) -> Result<bool> {
        let receipt = Receipt {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread_id.unwrap_or_default().to_owned(),
            event_id: event.event_id.to_string(),
            event_pos: event.stream_pos,
            ts,
            stream_pos: 0,
        };
        // Who to wake is looked up before the position is taken: an open position holds back
        // every reader's watermark.
        let audience: Vec<_> = if receipt_type == READ {
            self.rooms.members.audience_of(room_id).await?.iter().cloned().collect()
        } else {
            vec![user_id.to_owned()]
        };
        let mut pos = self.stream.allocate();
        self.notifier.latest().note(Key::Receipts(room_id.to_owned()), pos.get());
        let stored = self.storage.receipts.put(&receipt, &pos).await? == ReceiptWrite::Stored;
        if stored {
            let notifier = Arc::clone(&self.notifier);
            pos.on_visible(move || notifier.notify_users(audience.iter().map(|u| &**u)));
        }
        Ok(stored)
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
