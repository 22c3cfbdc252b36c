//! Server-side key backups: versions (each with its algorithm and auth data) and the
//! encrypted room keys stored under them. The server never sees a room key in clear.

use async_trait::async_trait;
use ruma::{OwnedRoomId, RoomId, UserId};

use super::{RowWrite, StorageResult};

/// A backup version as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupVersion {
    pub version: i64,
    /// `{"algorithm": ..., "auth_data": ...}`.
    pub algorithm: String,
    pub etag: i64,
    pub count: i64,
}

/// One backed-up session key.
#[derive(Clone, Debug)]
pub struct BackupKey {
    pub room_id: OwnedRoomId,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// The `KeyBackupData` object.
    pub json: String,
}

/// Which keys of a version an operation covers.
#[derive(Clone, Copy, Debug)]
pub enum KeyScope<'a> {
    All,
    Room(&'a RoomId),
    Session(&'a RoomId, &'a str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutKeysOutcome {
    /// The version's etag and key count afterwards.
    Stored {
        etag: i64,
        count: i64,
    },
    NoSuchVersion,
    /// Keys may only be added to the current version.
    NotCurrent {
        current: i64,
    },
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    /// Creates the next version, which becomes the current one.
    async fn create_version(&self, user_id: &UserId, algorithm: &str) -> StorageResult<i64>;

    /// A live version, or the current (latest live) one when `version` is `None`.
    async fn version(&self, user_id: &UserId, version: Option<i64>) -> StorageResult<Option<BackupVersion>>;

    /// Replaces a live version's auth data.
    async fn update_version(&self, user_id: &UserId, version: i64, algorithm: &str) -> StorageResult<RowWrite>;

    /// Deletes a live version and its keys.
    async fn delete_version(&self, user_id: &UserId, version: i64) -> StorageResult<RowWrite>;

    /// Stores keys in the current version, in one transaction. An already stored session is
    /// replaced only by a better key, as the spec orders them: verified over unverified,
    /// then a lower first message index, then a lower forwarded count. The etag moves when
    /// anything was written.
    async fn put_keys(&self, user_id: &UserId, version: i64, keys: &[BackupKey]) -> StorageResult<PutKeysOutcome>;

    /// The keys in scope, or `None` for an unknown version.
    async fn keys(&self, user_id: &UserId, version: i64, scope: KeyScope<'_>) -> StorageResult<Option<Vec<BackupKey>>>;

    /// Deletes the keys in scope; `None` for an unknown version, else the etag and count
    /// afterwards.
    async fn delete_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: KeyScope<'_>,
    ) -> StorageResult<Option<(i64, i64)>>;
}

pub(super) type BackupKeyRow = (String, String, i64, i64, bool, String);

pub(super) fn key_from_row(
    (room_id, session_id, first_message_index, forwarded_count, is_verified, json): BackupKeyRow,
) -> anyhow::Result<BackupKey> {
    Ok(BackupKey { room_id: room_id.try_into()?, session_id, first_message_index, forwarded_count, is_verified, json })
}

/// Whether `new` should replace `old`, as the spec orders backed-up keys.
pub(super) fn is_better(new: &BackupKey, old: (i64, i64, bool)) -> bool {
    let (old_index, old_forwarded, old_verified) = old;
    if new.is_verified != old_verified {
        return new.is_verified;
    }
    if new.first_message_index != old_index {
        return new.first_message_index < old_index;
    }
    new.forwarded_count < old_forwarded
}

/// The room and session filters of a scope, as optional bind values (`NULL` = any).
pub(super) fn scope_binds<'a>(scope: KeyScope<'a>) -> (Option<&'a str>, Option<&'a str>) {
    match scope {
        KeyScope::All => (None, None),
        KeyScope::Room(room) => (Some(room.as_str()), None),
        KeyScope::Session(room, session) => (Some(room.as_str()), Some(session)),
    }
}
