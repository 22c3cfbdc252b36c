//! Other servers' signing keys: fetched over federation (directly or through a notary),
//! verified, and kept so that their events and requests can be checked without asking again.

use async_trait::async_trait;
use ruma::ServerName;

use super::StorageResult;

/// One of a server's public keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded standard base64.
    pub public_key: String,
    /// Until when the key may be trusted; for an old key, when it expired.
    pub valid_until_ts: i64,
    /// The server lists it under `old_verify_keys`.
    pub expired: bool,
}

#[async_trait]
pub trait ServerKeyStore: Send + Sync {
    /// Every key stored for the server.
    async fn remote_keys(&self, server_name: &ServerName) -> StorageResult<Vec<RemoteKey>>;

    /// Stores or refreshes keys of a server.
    async fn store_remote_keys(
        &self,
        server_name: &ServerName,
        keys: &[RemoteKey],
        fetched_at: i64,
    ) -> StorageResult<()>;

    /// Keeps a server's latest verified key response (JSON), to relay as a notary.
    async fn store_response(&self, server_name: &ServerName, response: &str, valid_until_ts: i64) -> StorageResult<()>;

    /// The stored key response of a server and its `valid_until_ts`.
    async fn response(&self, server_name: &ServerName) -> StorageResult<Option<(String, i64)>>;
}
