//! End-to-end encryption keys: uploading, querying and claiming device keys and one-time
//! keys, and which users' keys changed. Cross-signing lives in `cross_signing`, device-list
//! tracking in `device_lists`.
//!
//! The server only stores and relays keys. It checks what it must to keep clients from
//! confusing each other (a device uploads keys for itself only; a signature is valid before
//! it is relayed), never anything that would need a private key.

pub mod cross_signing;
pub mod device_lists;

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedServerName, OwnedUserId, UInt, UserId,
    api::client::keys::{claim_keys, get_key_changes, get_keys, upload_keys},
    encryption::{DeviceKeys, OneTimeKey},
    serde::Raw,
};
use serde_json::{Map, Value as JsonValue, json, value::RawValue};

pub use self::device_lists::DeviceLists;
use super::{auth::AuthedUser, sync::SyncToken};
use crate::{
    error::{Error, Result},
    storage::{
        Storage, StreamAllocator,
        keys::{KeySignature, KeyUpload, NewKey, UploadOutcome},
    },
};

pub struct KeyService {
    server_name: OwnedServerName,
    storage: Storage,
    stream: Arc<StreamAllocator>,
    device_lists: Arc<DeviceLists>,
}

impl KeyService {
    pub fn new(
        server_name: OwnedServerName,
        storage: Storage,
        stream: Arc<StreamAllocator>,
        device_lists: Arc<DeviceLists>,
    ) -> Self {
        Self { server_name, storage, stream, device_lists }
    }

    fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    /// Stores a device's keys and returns its unclaimed one-time keys per algorithm. The
    /// device keys must be the requesting device's own; all or nothing is stored.
    pub async fn upload(
        &self,
        user: &AuthedUser,
        request: &upload_keys::v3::Request,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        if let Some(raw) = &request.device_keys {
            let keys: DeviceKeys =
                raw.deserialize().map_err(|e| Error::bad_json(format!("Invalid device_keys: {e}")))?;
            if keys.user_id != user.user_id || keys.device_id != user.device_id {
                return Err(Error::invalid_param(
                    "device_keys.user_id and device_id must be those of the access token's user and device",
                ));
            }
        }
        let one_time_keys = checked_keys(&request.one_time_keys, "one_time_keys")?;
        let fallback_keys = checked_keys(&request.fallback_keys, "fallback_keys")?;
        let upload = KeyUpload {
            device_keys: request.device_keys.as_ref().map(|raw| raw.json().get()),
            one_time_keys: one_time_keys
                .iter()
                .map(|(a, id, json)| NewKey { algorithm: a, key_id: id, json })
                .collect(),
            fallback_keys: fallback_keys
                .iter()
                .map(|(a, id, json)| NewKey { algorithm: a, key_id: id, json })
                .collect(),
        };
        // Only device keys can change the device list; one-time keys alone need no position,
        // but the storage method takes one, and an unused position costs nothing.
        let pos = if upload.device_keys.is_some() {
            self.device_lists.position_for(&[&user.user_id]).await?
        } else {
            self.stream.allocate()
        };
        match self.storage.keys.upload(&user.user_id, &user.device_id, &upload, &pos).await? {
            UploadOutcome::Stored { .. } => {}
            UploadOutcome::OneTimeKeyConflict(key_id) => {
                return Err(Error::invalid_param(format!("One-time key {key_id} already exists with other content")));
            }
            UploadOutcome::NoDevice => return Err(Error::unknown_token("The device has been deleted")),
        }
        drop(pos);
        self.one_time_key_counts(user).await
    }

    pub async fn one_time_key_counts(&self, user: &AuthedUser) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        one_time_key_counts(&self.storage, user).await
    }

    /// `/keys/query`: device keys with their signatures, and cross-signing keys. A user's
    /// user-signing key is only ever shown to that user.
    pub async fn query(&self, requester: &UserId, request: &get_keys::v3::Request) -> Result<get_keys::v3::Response> {
        let mut response = get_keys::v3::Response::new();
        for (user_id, wanted) in &request.device_keys {
            if !self.is_local(user_id) {
                response.failures.insert(user_id.server_name().to_string(), unreachable_server());
                continue;
            }
            let signatures = self.storage.keys.signatures(user_id).await?;
            let mut devices = BTreeMap::new();
            for row in self.storage.keys.device_keys(user_id).await? {
                if !wanted.is_empty() && !wanted.contains(&row.device_id) {
                    continue;
                }
                let sigs = signatures.iter().filter(|s| s.target_key_id == row.device_id.as_str());
                let json = merge_into_key(&row.json, sigs, row.display_name.as_deref())?;
                devices.insert(row.device_id, Raw::from_json(json));
            }
            response.device_keys.insert(user_id.clone(), devices);

            for key in self.storage.keys.cross_signing_keys(user_id).await? {
                // Signatures on a master key by other users are private to the signer.
                let visible = |s: &&KeySignature| {
                    key.key_type == "master"
                        && key.key_id.strip_prefix("ed25519:") == Some(s.target_key_id.as_str())
                        && (s.signer_user_id == *user_id || s.signer_user_id == requester)
                };
                let json = Raw::from_json(merge_into_key(&key.json, signatures.iter().filter(visible), None)?);
                match key.key_type.as_str() {
                    "master" => response.master_keys.insert(user_id.clone(), json),
                    "self_signing" => response.self_signing_keys.insert(user_id.clone(), json),
                    "user_signing" if user_id == requester => response.user_signing_keys.insert(user_id.clone(), json),
                    _ => None,
                };
            }
        }
        Ok(response)
    }

    /// `/keys/claim`: one key per requested device, each handed out at most once.
    pub async fn claim(&self, request: &claim_keys::v3::Request) -> Result<claim_keys::v3::Response> {
        let mut claimed = BTreeMap::new();
        let mut failures = BTreeMap::new();
        for (user_id, devices) in &request.one_time_keys {
            if !self.is_local(user_id) {
                failures.insert(user_id.server_name().to_string(), unreachable_server());
                continue;
            }
            let mut per_device: BTreeMap<OwnedDeviceId, BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>> = BTreeMap::new();
            for (device_id, algorithm) in devices {
                let Some(key) = self.storage.keys.claim(user_id, device_id, algorithm.as_str()).await? else {
                    continue;
                };
                let key_id = OwnedOneTimeKeyId::try_from(key.key_id.as_str())
                    .map_err(|e| Error::internal(format!("stored one-time key ID {}: {e}", key.key_id)))?;
                let json = RawValue::from_string(key.json)?;
                per_device.entry(device_id.clone()).or_default().insert(key_id, Raw::from_json(json));
            }
            if !per_device.is_empty() {
                claimed.insert(user_id.clone(), per_device);
            }
        }
        let mut response = claim_keys::v3::Response::new(claimed);
        response.failures = failures;
        Ok(response)
    }

    /// `/keys/changes`: users whose keys changed between two sync tokens.
    pub async fn changes(
        &self,
        requester: &UserId,
        request: &get_key_changes::v3::Request,
    ) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
        let from: SyncToken = request.from.parse()?;
        let to: SyncToken = request.to.parse()?;
        // Never read past the watermark: positions beyond it may still be filled in.
        let to = to.pos.min(self.stream.watermark());
        device_lists::changes(&self.storage, requester, from.pos, to).await
    }
}

/// The device's unclaimed one-time keys per algorithm. `signed_curve25519` is always listed,
/// zero included: some clients read a missing count as "unknown" rather than zero.
pub async fn one_time_key_counts(storage: &Storage, user: &AuthedUser) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
    let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
    for (algorithm, count) in storage.keys.one_time_key_counts(&user.user_id, &user.device_id).await? {
        counts.insert(algorithm.as_str().into(), UInt::try_from(count).unwrap_or(UInt::MAX));
    }
    Ok(counts)
}

/// Checks one-time or fallback keys: each must be a key string or a signed key object.
/// Returns `(algorithm, key ID, JSON)` per key.
fn checked_keys(
    keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    field: &str,
) -> Result<Vec<(String, String, String)>> {
    keys.iter()
        .map(|(key_id, raw)| {
            raw.deserialize().map_err(|e| Error::bad_json(format!("Invalid key {key_id} in {field}: {e}")))?;
            Ok((key_id.algorithm().to_string(), key_id.to_string(), raw.json().get().to_owned()))
        })
        .collect()
}

/// What `failures` says about a server Parley cannot reach: without federation, any other.
fn unreachable_server() -> JsonValue {
    json!({"status": 503, "message": "Federation is not available on this server"})
}

/// A stored key object with signatures uploaded later merged into its `signatures`, and the
/// device's display name in `unsigned` when given. Signatures already in the object win.
pub(crate) fn merge_into_key<'a>(
    json: &str,
    signatures: impl Iterator<Item = &'a KeySignature>,
    display_name: Option<&str>,
) -> Result<Box<RawValue>> {
    let mut signatures = signatures.peekable();
    if signatures.peek().is_none() && display_name.is_none() {
        return Ok(RawValue::from_string(json.to_owned())?);
    }
    let mut object: Map<String, JsonValue> = serde_json::from_str(json)?;
    let all = object.entry("signatures").or_insert_with(|| JsonValue::Object(Map::new()));
    if let JsonValue::Object(all) = all {
        for sig in signatures {
            let by_user = all.entry(sig.signer_user_id.to_string()).or_insert_with(|| JsonValue::Object(Map::new()));
            if let JsonValue::Object(by_user) = by_user {
                by_user.entry(sig.signer_key_id.clone()).or_insert_with(|| JsonValue::String(sig.signature.clone()));
            }
        }
    }
    if let Some(name) = display_name {
        let unsigned = object.entry("unsigned").or_insert_with(|| JsonValue::Object(Map::new()));
        if let JsonValue::Object(unsigned) = unsigned {
            unsigned.insert("device_display_name".to_owned(), JsonValue::String(name.to_owned()));
        }
    }
    Ok(RawValue::from_string(serde_json::to_string(&object)?)?)
}
