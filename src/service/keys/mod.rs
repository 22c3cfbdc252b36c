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

use parley_federation::client::FederationClient;
use ruma::api::federation::keys as federation_keys;

pub use self::device_lists::DeviceLists;
use super::{auth::AuthedUser, federation::EduOut, sync::SyncToken};
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
    /// Other servers' users' keys are asked of their servers, through this.
    remote: Option<FederationClient>,
    /// Tells other servers when a local user's devices change.
    edus: EduOut,
}

impl KeyService {
    pub fn new(
        server_name: OwnedServerName,
        storage: Storage,
        stream: Arc<StreamAllocator>,
        device_lists: Arc<DeviceLists>,
        remote: Option<FederationClient>,
        edus: EduOut,
    ) -> Self {
        Self { server_name, storage, stream, device_lists, remote, edus }
    }

    /// Another server said a user's devices or cross-signing keys changed: the local users
    /// who share a room with them hear of it in `/sync` (`device_lists.changed`), and ask
    /// again. No copy of remote device lists is kept, so there is nothing to resynchronise.
    pub async fn remote_devices_changed(&self, user_id: &UserId) -> Result<()> {
        let pos = self.device_lists.position_for(&[user_id]).await?;
        self.storage.keys.record_device_list_change(user_id, &pos).await?;
        Ok(())
    }

    /// Tells the servers sharing a room with a local user that one of their devices changed
    /// (`keys` unset for a deleted device).
    pub async fn announce_device(
        &self,
        user_id: &UserId,
        device_id: &ruma::DeviceId,
        keys: Option<&RawValue>,
        stream_id: i64,
    ) -> Result<()> {
        let mut content = json!({
            "user_id": user_id,
            "device_id": device_id,
            "stream_id": stream_id.max(0),
            "prev_id": [],
        });
        match keys {
            Some(keys) => content["keys"] = serde_json::from_str(keys.get())?,
            None => content["deleted"] = true.into(),
        }
        self.edus.to_users_rooms(user_id, "m.device_list_update", content).await
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
        let stream_id = pos.get();
        match self.storage.keys.upload(&user.user_id, &user.device_id, &upload, &pos).await? {
            UploadOutcome::Stored { .. } => {}
            UploadOutcome::OneTimeKeyConflict(key_id) => {
                return Err(Error::invalid_param(format!("One-time key {key_id} already exists with other content")));
            }
            UploadOutcome::NoDevice => return Err(Error::unknown_token("The device has been deleted")),
        }
        drop(pos);
        if let Some(raw) = &request.device_keys {
            self.announce_device(&user.user_id, &user.device_id, Some(raw.json()), stream_id).await?;
        }
        self.one_time_key_counts(user).await
    }

    pub async fn one_time_key_counts(&self, user: &AuthedUser) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        one_time_key_counts(&self.storage, user).await
    }

    /// `/keys/query`: device keys with their signatures, and cross-signing keys. A user's
    /// user-signing key is only ever shown to that user.
    pub async fn query(&self, requester: &UserId, request: &get_keys::v3::Request) -> Result<get_keys::v3::Response> {
        let mut response = get_keys::v3::Response::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> = BTreeMap::new();
        for (user_id, wanted) in &request.device_keys {
            if !self.is_local(user_id) {
                remote.entry(user_id.server_name().to_owned()).or_default().insert(user_id.clone(), wanted.clone());
                continue;
            }
            self.local_keys(Some(requester), user_id, wanted, &mut response).await?;
        }
        for (server, device_keys) in remote {
            let Some(client) = &self.remote else {
                response.failures.insert(server.to_string(), unreachable_server());
                continue;
            };
            match client.send(&server, federation_keys::get_keys::v1::Request::new(device_keys)).await {
                Ok(answer) => {
                    // Only what the server may speak for: its own users.
                    let own = |user: &OwnedUserId| user.server_name() == server;
                    response.device_keys.extend(answer.device_keys.into_iter().filter(|(u, _)| own(u)));
                    response.master_keys.extend(answer.master_keys.into_iter().filter(|(u, _)| own(u)));
                    response.self_signing_keys.extend(answer.self_signing_keys.into_iter().filter(|(u, _)| own(u)));
                }
                Err(e) => {
                    tracing::info!(%server, error = %e, "could not query keys");
                    response.failures.insert(server.to_string(), unreachable_server());
                }
            }
        }
        Ok(response)
    }

    /// A local user's device keys (those in `wanted`, or all) and cross-signing keys, as
    /// `requester` may see them: `None` for another server, which never gets a user-signing
    /// key or other users' signatures on a master key.
    async fn local_keys(
        &self,
        requester: Option<&UserId>,
        user_id: &OwnedUserId,
        wanted: &[OwnedDeviceId],
        response: &mut get_keys::v3::Response,
    ) -> Result<()> {
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
                    && (s.signer_user_id == *user_id || Some(&*s.signer_user_id) == requester)
            };
            let json = Raw::from_json(merge_into_key(&key.json, signatures.iter().filter(visible), None)?);
            match key.key_type.as_str() {
                "master" => response.master_keys.insert(user_id.clone(), json),
                "self_signing" => response.self_signing_keys.insert(user_id.clone(), json),
                "user_signing" if Some(&**user_id) == requester => {
                    response.user_signing_keys.insert(user_id.clone(), json)
                }
                _ => None,
            };
        }
        Ok(())
    }

    /// `POST /_matrix/federation/v1/user/keys/query`: local users' keys for another server.
    pub async fn query_for_server(
        &self,
        device_keys: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<federation_keys::get_keys::v1::Response> {
        let mut local = get_keys::v3::Response::new();
        for (user_id, wanted) in device_keys.iter().filter(|(u, _)| self.is_local(u)) {
            self.local_keys(None, user_id, wanted, &mut local).await?;
        }
        let mut response = federation_keys::get_keys::v1::Response::new(local.device_keys);
        response.master_keys = local.master_keys;
        response.self_signing_keys = local.self_signing_keys;
        Ok(response)
    }

    /// `POST /_matrix/federation/v1/user/keys/claim`: local devices' one-time keys for
    /// another server's users.
    pub async fn claim_for_server(
        &self,
        one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<federation_keys::claim_keys::v1::Response> {
        let local = one_time_keys.into_iter().filter(|(u, _)| self.is_local(u)).collect();
        let claimed = self.claim(&claim_keys::v3::Request::new(local)).await?;
        Ok(federation_keys::claim_keys::v1::Response::new(claimed.one_time_keys))
    }

    /// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices, with the
    /// stream ID of their latest change and their public cross-signing keys.
    pub async fn devices_for_server(
        &self,
        user_id: &OwnedUserId,
    ) -> Result<ruma::api::federation::device::get_devices::v1::Response> {
        use ruma::api::federation::device::get_devices::v1;
        if !self.is_local(user_id) {
            return Err(Error::not_found("Not a user of this server"));
        }
        let mut keys = get_keys::v3::Response::new();
        self.local_keys(None, user_id, &[], &mut keys).await?;
        let names: BTreeMap<OwnedDeviceId, Option<String>> =
            self.storage.devices.list(user_id).await?.into_iter().map(|d| (d.device_id, d.display_name)).collect();
        let stream_id = UInt::try_from(self.stream.watermark().max(0)).unwrap_or_default();
        let mut response = v1::Response::new(user_id.clone(), stream_id);
        for (device_id, raw) in keys.device_keys.remove(user_id).unwrap_or_default() {
            let mut device = v1::UserDevice::new(device_id.clone(), raw);
            device.device_display_name = names.get(&device_id).cloned().flatten();
            response.devices.push(device);
        }
        response.master_key = keys.master_keys.remove(user_id);
        response.self_signing_key = keys.self_signing_keys.remove(user_id);
        Ok(response)
    }

    /// `/keys/claim`: one key per requested device, each handed out at most once.
    pub async fn claim(&self, request: &claim_keys::v3::Request) -> Result<claim_keys::v3::Response> {
        let mut claimed = BTreeMap::new();
        let mut failures = BTreeMap::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>> =
            BTreeMap::new();
        for (user_id, devices) in &request.one_time_keys {
            if !self.is_local(user_id) {
                remote.entry(user_id.server_name().to_owned()).or_default().insert(user_id.clone(), devices.clone());
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
        for (server, one_time_keys) in remote {
            let Some(client) = &self.remote else {
                failures.insert(server.to_string(), unreachable_server());
                continue;
            };
            match client.send(&server, federation_keys::claim_keys::v1::Request::new(one_time_keys)).await {
                Ok(answer) => {
                    claimed.extend(answer.one_time_keys.into_iter().filter(|(u, _)| u.server_name() == server));
                }
                Err(e) => {
                    tracing::info!(%server, error = %e, "could not claim keys");
                    failures.insert(server.to_string(), unreachable_server());
                }
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
    json!({"status": 503, "message": "The user's server could not be reached"})
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
