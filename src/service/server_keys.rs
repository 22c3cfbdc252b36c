//! The server's keys: its own signing key (generated on first start, stored, and loaded
//! afterwards), and other servers' public keys, which verify their events and requests.
//!
//! Federation fills the store of remote keys by fetching them (directly or through a
//! notary); everything that verifies a signature asks this service.

use std::{
    collections::BTreeSet,
    sync::{Arc, OnceLock},
};

use parley_federation::{
    SigningKey,
    keys::{CachedKey, KeyCache, KeyCacheError, KeyFetcher, StoredResponse, VerifiedKeys, signers_of},
};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName, OwnedServerSigningKeyId,
    ServerName, UInt,
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
};

use super::{now_ms, secrets};
use crate::{
    error::{Error, Result},
    storage::{Storage, server_keys::RemoteKey},
};

pub struct ServerKeys {
    server_name: OwnedServerName,
    key: Arc<SigningKey>,
    storage: Storage,
    /// Fetches keys this server lacks from other servers; set when federation is on.
    fetcher: OnceLock<KeyFetcher>,
}

impl ServerKeys {
    /// Loads the signing key in use, or creates and stores one on first start.
    pub async fn load(server_name: OwnedServerName, storage: Storage) -> anyhow::Result<Self> {
        let key = Arc::new(load_or_create(&storage).await?);
        Ok(Self { server_name, key, storage, fetcher: OnceLock::new() })
    }

    /// Connects fetching keys from other servers; done once, when federation starts.
    pub fn set_fetcher(&self, fetcher: KeyFetcher) {
        let _ = self.fetcher.set(fetcher);
    }

    /// The fetcher of other servers' keys, when federation is on.
    pub fn fetcher(&self) -> Option<&KeyFetcher> {
        self.fetcher.get()
    }

    /// The signing key, to share with federation's client.
    pub fn signing_key_arc(&self) -> Arc<SigningKey> {
        Arc::clone(&self.key)
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Adds the content hash and this server's signature to a new event, and returns the
    /// event ID the room version derives from it.
    pub fn hash_and_sign_event(
        &self,
        object: &mut CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<OwnedEventId> {
        parley_federation::pdu::hash_and_sign(object, rules, &self.server_name, &self.key)
            .map_err(|e| Error::bad_json(e.to_string()))
    }

    /// The public keys of `servers` that may verify `object` (signed at `ts`, milliseconds),
    /// as ruma's verification functions take them; fetched from those servers when this one
    /// lacks them. A server whose keys cannot be had is absent.
    pub async fn public_keys(
        &self,
        object: &CanonicalJsonObject,
        servers: &BTreeSet<OwnedServerName>,
        ts: i64,
    ) -> Result<PublicKeyMap> {
        let signers = signers_of(object);
        let mut map = PublicKeyMap::new();
        for server in servers {
            let key_ids = signers.get(server).cloned().unwrap_or_default();
            let set = self.keys_of(server, &key_ids, ts).await?;
            if !set.is_empty() {
                map.insert(server.to_string(), set);
            }
        }
        Ok(map)
    }

    /// The keys of `server` among `key_ids` valid at `ts`: this server's own, or another's
    /// from the store or fetched. Empty when none can be had.
    pub async fn keys_of(
        &self,
        server: &ServerName,
        key_ids: &[OwnedServerSigningKeyId],
        ts: i64,
    ) -> Result<PublicKeySet> {
        let mut set = PublicKeySet::new();
        if server == self.server_name {
            set.insert(self.key.key_id().to_string(), Base64::new(self.key.public_key().to_vec()));
            return Ok(set);
        }
        if let Some(fetcher) = self.fetcher.get() {
            let at = MilliSecondsSinceUnixEpoch(UInt::try_from(ts.max(0)).unwrap_or_default());
            return Ok(match fetcher.get_keys(server, key_ids, Some(at)).await {
                Ok(set) => set,
                Err(e) => {
                    tracing::info!(%server, error = %e, "no usable key");
                    set
                }
            });
        }
        for key in self.storage.server_keys.remote_keys(server).await? {
            // The spec lets a key verify what was signed while it was valid, old (expired)
            // keys included.
            if key.valid_until_ts < ts {
                continue;
            }
            match Base64::parse(&key.public_key) {
                Ok(public) => {
                    set.insert(key.key_id, public);
                }
                Err(e) => tracing::warn!(%server, key_id = %key.key_id, error = %e, "stored key is not base64"),
            }
        }
        Ok(set)
    }

    /// Records keys of another server, once their signatures have been checked.
    pub async fn store_remote_keys(&self, server: &ServerName, keys: &[RemoteKey]) -> Result<()> {
        self.storage.server_keys.store_remote_keys(server, keys, now_ms()).await?;
        Ok(())
    }
}

/// The database as federation's key cache: other servers' keys, and their latest responses
/// for notary answers.
pub struct DbKeyCache(pub Storage);

#[async_trait::async_trait]
impl KeyCache for DbKeyCache {
    async fn get(&self, server: &ServerName) -> std::result::Result<Vec<CachedKey>, KeyCacheError> {
        let rows =
            self.0.server_keys.remote_keys(server).await.map_err(|e| KeyCacheError::new(e.into_boxed_dyn_error()))?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(CachedKey {
                    key_id: OwnedServerSigningKeyId::try_from(row.key_id).ok()?,
                    key: Base64::parse(&row.public_key).ok()?,
                    valid_until_ts: MilliSecondsSinceUnixEpoch(UInt::try_from(row.valid_until_ts.max(0)).ok()?),
                    expired: row.expired,
                })
            })
            .collect())
    }

    async fn put(&self, server: &ServerName, keys: &VerifiedKeys) -> std::result::Result<(), KeyCacheError> {
        let rows: Vec<RemoteKey> = keys
            .keys
            .iter()
            .map(|k| RemoteKey {
                key_id: k.key_id.to_string(),
                public_key: k.key.encode(),
                valid_until_ts: i64::from(k.valid_until_ts.get()),
                expired: k.expired,
            })
            .collect();
        let fail = |e: anyhow::Error| KeyCacheError::new(e.into_boxed_dyn_error());
        self.0.server_keys.store_remote_keys(server, &rows, now_ms()).await.map_err(fail)?;
        let response = serde_json::to_string(&keys.response).map_err(KeyCacheError::new)?;
        self.0.server_keys.store_response(server, &response, i64::from(keys.valid_until_ts.get())).await.map_err(fail)
    }

    async fn get_response(&self, server: &ServerName) -> std::result::Result<Option<StoredResponse>, KeyCacheError> {
        let fail = |e: anyhow::Error| KeyCacheError::new(e.into_boxed_dyn_error());
        let Some((json, valid_until_ts)) = self.0.server_keys.response(server).await.map_err(fail)? else {
            return Ok(None);
        };
        let response: CanonicalJsonObject = serde_json::from_str(&json).map_err(KeyCacheError::new)?;
        let valid_until_ts = MilliSecondsSinceUnixEpoch(UInt::try_from(valid_until_ts.max(0)).unwrap_or_default());
        Ok(Some(StoredResponse { response, valid_until_ts }))
    }
}

async fn load_or_create(storage: &Storage) -> anyhow::Result<SigningKey> {
    if let Some((version, der)) = storage.rooms.current_signing_key().await? {
        return Ok(SigningKey::from_der(&der, &version)?);
    }
    let version =
        format!("a_{}", secrets::random_string(4, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"));
    let fresh = SigningKey::generate(&version)?;
    // Another process sharing the database may have stored its key first; use whichever won.
    let (version, der) = storage.rooms.insert_signing_key(&version, fresh.der(), now_ms()).await?;
    tracing::info!(key_id = %format!("ed25519:{version}"), "signing key ready");
    Ok(SigningKey::from_der(&der, &version)?)
}
