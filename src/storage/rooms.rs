//! Rooms, their aliases, the public room directory, and the server's signing keys.

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};

use super::StorageResult;

#[derive(Clone, Debug)]
pub struct RoomInfo {
    pub room_id: OwnedRoomId,
    pub room_version: String,
    pub creator: OwnedUserId,
    pub is_public: bool,
}

#[async_trait]
pub trait RoomStore: Send + Sync {
    async fn get(&self, room_id: &RoomId) -> StorageResult<Option<RoomInfo>>;

    /// Lists the room in, or removes it from, the public directory.
    async fn set_public(&self, room_id: &RoomId, public: bool) -> StorageResult<bool>;

    /// Public rooms with their joined member counts, most members first.
    async fn public_rooms(&self) -> StorageResult<Vec<(OwnedRoomId, i64)>>;

    /// Creates an alias. Returns `false`, changing nothing, when it exists.
    async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
        now_ms: i64,
    ) -> StorageResult<bool>;

    /// The room and creator of an alias.
    async fn resolve_alias(&self, alias: &RoomAliasId) -> StorageResult<Option<(OwnedRoomId, OwnedUserId)>>;

    async fn delete_alias(&self, alias: &RoomAliasId) -> StorageResult<bool>;

    async fn room_aliases(&self, room_id: &RoomId) -> StorageResult<Vec<String>>;

    /// The signing key in use: `(version, PKCS#8 DER)`.
    async fn current_signing_key(&self) -> StorageResult<Option<(String, Vec<u8>)>>;

    /// Stores a new signing key, unless one is already in use (another process may have raced
    /// us at first start); returns the key in use afterwards.
    async fn insert_signing_key(&self, version: &str, der: &[u8], now_ms: i64) -> StorageResult<(String, Vec<u8>)>;
}
