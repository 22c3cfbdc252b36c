//! Push: per-recipient actions of events, pushers, and the notification delivery queue.

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{RowWrite, StorageResult};

/// The actions the push rules gave an event for one recipient (stored only when they notify).
#[derive(Clone, Debug)]
pub struct PushActionRow {
    pub user_id: OwnedUserId,
    pub thread_id: String,
    pub highlight: bool,
    /// The JSON array of actions.
    pub actions: String,
}

/// One notification for one pusher, waiting for delivery.
#[derive(Clone, Debug)]
pub struct QueuedPush {
    pub id: i64,
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    pub event_id: String,
    pub room_id: OwnedRoomId,
    pub highlight: bool,
    pub actions: String,
    pub attempts: i32,
}

/// A new queue entry, written with its event.
#[derive(Clone, Debug)]
pub struct NewQueuedPush {
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    pub highlight: bool,
    pub actions: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PusherRow {
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// JSON object: `url`, `format`, ...
    pub data: String,
    pub created_at: i64,
}

/// Unread counts of one room (or thread).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    pub notifications: i64,
    pub highlights: i64,
}

/// An entry of `GET /notifications`.
#[derive(Clone, Debug)]
pub struct NotificationRow {
    pub event_id: String,
    pub room_id: OwnedRoomId,
    pub stream_pos: i64,
    pub actions: String,
    pub ts: i64,
}

#[async_trait]
pub trait PushStore: Send + Sync {
    async fn pushers(&self, user_id: &UserId) -> StorageResult<Vec<PusherRow>>;

    async fn pusher(&self, user_id: &UserId, app_id: &str, pushkey: &str) -> StorageResult<Option<PusherRow>>;

    /// Creates or replaces the user's pusher for `(app_id, pushkey)`; unless `append`, also
    /// removes other users' pushers with the same app ID and pushkey, as the spec requires.
    async fn set_pusher(&self, pusher: &PusherRow, append: bool) -> StorageResult<()>;

    /// Deletes a pusher and the notifications still queued for it.
    async fn delete_pusher(&self, user_id: &UserId, app_id: &str, pushkey: &str) -> StorageResult<RowWrite>;

    /// Deletes every user's pushers with this app ID and pushkey (the gateway rejected it).
    async fn delete_pushkey(&self, app_id: &str, pushkey: &str) -> StorageResult<u64>;

    /// Queue entries due at `now`, oldest first.
    async fn due(&self, now_ms: i64, limit: i64) -> StorageResult<Vec<QueuedPush>>;

    /// The earliest time a queue entry is due, if any.
    async fn next_due(&self) -> StorageResult<Option<i64>>;

    async fn delete_queued(&self, id: i64) -> StorageResult<()>;

    async fn reschedule(&self, id: i64, attempts: i32, next_attempt_at: i64) -> StorageResult<()>;

    /// Unread counts in a room, after the later of the user's read receipt (main timeline) and
    /// their own latest membership change: the main timeline (thread `""` or `main`) and,
    /// separately, each thread. One query: syncs ask this of every room they return.
    async fn unread(&self, user_id: &UserId, room_id: &RoomId) -> StorageResult<Vec<(String, UnreadCounts)>>;

    /// Notifying events across all rooms the user has not read (after their read receipt and
    /// their latest membership change), for push payloads.
    async fn total_unread(&self, user_id: &UserId) -> StorageResult<i64>;

    /// The user's notifications, newest first, below `before` (exclusive).
    async fn notifications(
        &self,
        user_id: &UserId,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> StorageResult<Vec<NotificationRow>>;
}

pub(super) type PusherDbRow = (String, String, String, String, String, String, Option<String>, String, String, i64);

pub(super) fn pusher_from_row(
    (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, created_at): PusherDbRow,
) -> anyhow::Result<PusherRow> {
    Ok(PusherRow {
        user_id: user_id.try_into()?,
        app_id,
        pushkey,
        kind,
        app_display_name,
        device_display_name,
        profile_tag,
        lang,
        data,
        created_at,
    })
}

pub(super) type QueueDbRow = (i64, String, String, String, String, String, bool, String, i32);

pub(super) fn queued_from_row(
    (id, user_id, app_id, pushkey, event_id, room_id, highlight, actions, attempts): QueueDbRow,
) -> anyhow::Result<QueuedPush> {
    Ok(QueuedPush {
        id,
        user_id: user_id.try_into()?,
        app_id,
        pushkey,
        event_id,
        room_id: room_id.try_into()?,
        highlight,
        actions,
        attempts,
    })
}

/// Folds `(thread, notifications, highlights)` rows into the main timeline's counts (thread
/// `""` and `main` together) and each thread's.
pub(super) fn unread_from_rows(rows: Vec<(String, i64, i64)>) -> Vec<(String, UnreadCounts)> {
    let mut out: Vec<(String, UnreadCounts)> = Vec::new();
    for (thread, notifications, highlights) in rows {
        let key = if thread == "main" { String::new() } else { thread };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, counts)) => {
                counts.notifications += notifications;
                counts.highlights += highlights;
            }
            None => out.push((key, UnreadCounts { notifications, highlights })),
        }
    }
    out
}
