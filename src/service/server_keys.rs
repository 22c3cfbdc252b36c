//! The server's keys: its own signing key (generated on first start, stored, and loaded
//! afterwards), and other servers' public keys, which verify their events and requests.
//!
//! Federation fills the store of remote keys by fetching them (directly or through a
//! notary); everything that verifies a signature asks this service.

use std::collections::BTreeSet;

use parley_federation::SigningKey;
use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedServerName, ServerName,
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
    key: SigningKey,
    storage: Storage,
}

impl ServerKeys {
    /// Loads the signing key in use, or creates and stores one on first start.
    pub async fn load(server_name: OwnedServerName, storage: Storage) -> anyhow::Result<Self> {
        let key = load_or_create(&storage).await?;
        Ok(Self { server_name, key, storage })
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

    /// The public keys of `servers` that were valid at `ts` (milliseconds), as ruma's
    /// verification functions take them. A server whose keys are unknown is absent.
    pub async fn public_keys(&self, servers: &BTreeSet<OwnedServerName>, ts: i64) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for server in servers {
            let mut set = PublicKeySet::new();
            if *server == self.server_name {
                set.insert(self.key.key_id().to_string(), Base64::new(self.key.public_key().to_vec()));
            } else {
                for key in self.storage.server_keys.remote_keys(server).await? {
                    // The spec lets an event be checked with a key that was valid when it was
                    // sent, old (expired) keys included.
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
            }
            if !set.is_empty() {
                map.insert(server.to_string(), set);
            }
        }
        Ok(map)
    }

    /// Records keys of another server, once their signatures have been checked.
    pub async fn store_remote_keys(&self, server: &ServerName, keys: &[RemoteKey]) -> Result<()> {
        self.storage.server_keys.store_remote_keys(server, keys, now_ms()).await?;
        Ok(())
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
