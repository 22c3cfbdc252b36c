//! Cross-signing: uploading a user's master, self-signing and user-signing keys, and
//! signatures made with them (or with a device key, on the master key).
//!
//! Every signature is verified before it is stored: a client trusts keys because of the
//! signatures on them, and a server that relayed a bad one would make clients show errors
//! (or worse, an attacker's key next to a valid-looking chain).

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedUserId, SigningKeyAlgorithm, UserId,
    api::client::{
        keys::{upload_signatures::v3::Failure, upload_signing_keys},
        uiaa::{AuthFlow, AuthType},
    },
    encryption::{CrossSigningKey, KeyUsage},
    serde::{Base64, Raw},
};
use serde_json::{json, value::RawValue};

use super::KeyService;
use crate::{
    error::{Error, Result},
    service::{
        auth::AuthedUser,
        uiaa::{UiaaRequest, UiaaService},
    },
    storage::keys::{CrossSigningKeyRow, CrossSigningWrite, KeySignature, MasterKeyCheck},
};

/// How many times an unauthorised upload retries after losing a race before it asks for UIA.
const UPLOAD_ATTEMPTS: usize = 2;

/// A cross-signing key that passed the shape checks.
struct CheckedKey {
    row: CrossSigningKeyRow,
    /// The public key (the key ID without `ed25519:`).
    public_key: String,
}

impl KeyService {
    /// `/keys/device_signing/upload`. UIA (the password stage) is required unless the user
    /// has no master key yet, or every uploaded key equals the stored one (a retry), as the
    /// spec allows.
    pub async fn upload_signing_keys(
        &self,
        uiaa: &UiaaService,
        user: &AuthedUser,
        request: &upload_signing_keys::v3::Request,
    ) -> Result<()> {
        let user_id = &user.user_id;
        let uploads = [
            (&request.master_key, "master", KeyUsage::Master),
            (&request.self_signing_key, "self_signing", KeyUsage::SelfSigning),
            (&request.user_signing_key, "user_signing", KeyUsage::UserSigning),
        ];
        let mut keys = Vec::new();
        for (raw, key_type, usage) in uploads {
            if let Some(raw) = raw {
                keys.push(check_key(raw, user_id, key_type, usage)?);
            }
        }
        for _ in 0..UPLOAD_ATTEMPTS {
            let stored = self.storage.keys.cross_signing_keys(user_id).await?;
            let stored_master = stored.iter().find(|k| k.key_type == "master");
            let master = match keys.iter().find(|k| k.row.key_type == "master") {
                Some(new) => Some((new.row.key_id.clone(), new.public_key.clone())),
                None => stored_master.map(|k| (k.key_id.clone(), public_key(&k.key_id).to_owned())),
            };
            for key in keys.iter().filter(|k| k.row.key_type != "master") {
                let Some((master_id, master_public)) = &master else {
                    return Err(Error::missing_param("Upload a master key before the keys it signs"));
                };
                if !verify(&key.row.json, user_id, master_id, master_public)? {
                    return Err(Error::invalid_param(format!(
                        "The {} key must be signed by the master key",
                        key.row.key_type
                    )));
                }
            }
            let new_keys = keys.iter().any(|k| !stored.contains(&k.row));
            if !new_keys {
                return Ok(());
            }
            let check = if stored_master.is_some() {
                uiaa.authenticate(UiaaRequest {
                    scope: "device_signing_upload",
                    user_id: Some(user_id),
                    flows: vec![AuthFlow::new(vec![AuthType::Password])],
                    auth: request.auth.as_ref(),
                })
                .await?;
                MasterKeyCheck::Any
            } else {
                MasterKeyCheck::Is(None)
            };
            let rows: Vec<CrossSigningKeyRow> = keys.iter().map(|k| k.row.clone()).collect();
            let pos = self.device_lists.position_for(&[user_id]).await?;
            match self.storage.keys.put_cross_signing_keys(user_id, &rows, check, &pos).await? {
                CrossSigningWrite::Stored => {
                    drop(pos);
                    // The user-signing key is private to the user: it never leaves this server.
                    let mut content = serde_json::json!({ "user_id": user_id });
                    for (field, raw) in
                        [("master_key", &request.master_key), ("self_signing_key", &request.self_signing_key)]
                    {
                        if let Some(raw) = raw {
                            content[field] = serde_json::from_str(raw.json().get())?;
                        }
                    }
                    if content.as_object().is_some_and(|o| o.len() > 1) {
                        self.edus.to_users_rooms(user_id, "m.signing_key_update", content).await?;
                    }
                    return Ok(());
                }
                CrossSigningWrite::MasterKeyChanged => {}
            }
            // Someone uploaded a master key in between: look again, which now needs UIA.
        }
        Err(Error::conflict("Cross-signing keys changed concurrently; try again"))
    }

    /// `/keys/signatures/upload`. Allowed: a user's self-signing key signing their own
    /// devices, a device signing its user's master key, and a user-signing key signing another
    /// user's master key. Each key gets either its signatures stored or a failure.
    pub async fn upload_signatures(
        &self,
        signer: &AuthedUser,
        signed: &BTreeMap<OwnedUserId, ruma::api::client::keys::upload_signatures::v3::SignedKeys>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, Failure>>> {
        let signer_id = &signer.user_id;
        let own_cross = self.storage.keys.cross_signing_keys(signer_id).await?;
        let own_key = |key_type: &str| own_cross.iter().find(|k| k.key_type == key_type);
        let own_devices = self.storage.keys.device_keys(signer_id).await?;

        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, Failure>> = BTreeMap::new();
        let mut accepted = Vec::new();
        let mut changed: Vec<OwnedUserId> = Vec::new();
        for (target_user, keys) in signed {
            let target_cross = if target_user == signer_id {
                own_cross.clone()
            } else if self.is_local(target_user) {
                self.storage.keys.cross_signing_keys(target_user).await?
            } else {
                Vec::new()
            };
            let target_master = target_cross.iter().find(|k| k.key_type == "master");
            for (key_id, uploaded) in keys.iter() {
                // What is being signed, as stored, and which keys of the signer may sign it.
                let (stored_json, signing_keys): (String, Vec<(String, String)>) =
                    match target_master.filter(|m| public_key(&m.key_id) == key_id) {
                        Some(master) if target_user == signer_id => {
                            // A device vouching for its user's master key.
                            let device_keys = own_devices
                                .iter()
                                .map(|d| device_signing_key(&d.json))
                                .collect::<Result<Vec<_>>>()?
                                .into_iter()
                                .flatten()
                                .collect();
                            (master.json.clone(), device_keys)
                        }
                        Some(master) => {
                            let usk = own_key("user_signing").map(|k| (k.key_id.clone(), public_key(&k.key_id).into()));
                            (master.json.clone(), usk.into_iter().collect())
                        }
                        None if target_user == signer_id => {
                            match own_devices.iter().find(|d| d.device_id.as_str() == key_id) {
                                Some(device) => {
                                    let ssk = own_key("self_signing")
                                        .map(|k| (k.key_id.clone(), public_key(&k.key_id).into()));
                                    (device.json.clone(), ssk.into_iter().collect())
                                }
                                None => {
                                    failures
                                        .entry(target_user.clone())
                                        .or_default()
                                        .insert(key_id.to_owned(), failure("M_NOT_FOUND", "No such device or key"));
                                    continue;
                                }
                            }
                        }
                        None => {
                            failures.entry(target_user.clone()).or_default().insert(
                                key_id.to_owned(),
                                failure("M_NOT_FOUND", "Only another user's master key can be signed"),
                            );
                            continue;
                        }
                    };
                match new_signatures(&stored_json, uploaded, signer_id, &signing_keys) {
                    Ok(signatures) => {
                        for (signer_key_id, signature) in signatures {
                            accepted.push(KeySignature {
                                target_user_id: target_user.clone(),
                                target_key_id: key_id.to_owned(),
                                signer_user_id: signer_id.clone(),
                                signer_key_id,
                                signature,
                            });
                        }
                        // Signatures by a user-signing key are shown to the signer only, so
                        // only the signer's devices need to look again.
                        let whose =
                            if target_user == signer_id || target_master.is_none() { target_user } else { signer_id };
                        changed.push(whose.clone());
                    }
                    Err(message) => {
                        failures
                            .entry(target_user.clone())
                            .or_default()
                            .insert(key_id.to_owned(), failure("M_INVALID_SIGNATURE", &message));
                    }
                }
            }
        }
        if !accepted.is_empty() {
            changed.sort();
            changed.dedup();
            let users: Vec<&UserId> = changed.iter().map(|u| &**u).collect();
            let pos = self.device_lists.position_for(&users).await?;
            self.storage.keys.add_signatures(&accepted, &changed, &pos).await?;
        }
        Ok(failures)
    }
}

/// Checks a cross-signing key's shape: the uploader's, of the right usage, one ed25519 key
/// whose ID names its own public key.
fn check_key(raw: &Raw<CrossSigningKey>, user_id: &UserId, key_type: &str, usage: KeyUsage) -> Result<CheckedKey> {
    let key: CrossSigningKey =
        raw.deserialize().map_err(|e| Error::bad_json(format!("Invalid {key_type} key: {e}")))?;
    if key.user_id != user_id {
        return Err(Error::invalid_param(format!("The {key_type} key belongs to another user")));
    }
    if !key.usage.contains(&usage) {
        return Err(Error::invalid_param(format!("The {key_type} key lacks the {} usage", usage.as_str())));
    }
    let mut entries = key.keys.iter();
    let (Some((key_id, value)), None) = (entries.next(), entries.next()) else {
        return Err(Error::invalid_param(format!("The {key_type} key must hold exactly one key")));
    };
    if key_id.algorithm() != ruma::SigningKeyAlgorithm::Ed25519 || key_id.key_name().as_str() != value {
        return Err(Error::invalid_param(format!("The {key_type} key must be ed25519:<its public key>")));
    }
    Ok(CheckedKey {
        row: CrossSigningKeyRow {
            key_type: key_type.to_owned(),
            key_id: key_id.to_string(),
            json: raw.json().get().to_owned(),
        },
        public_key: value.clone(),
    })
}

/// `ed25519:<public key>` -> the public key.
fn public_key(key_id: &str) -> &str {
    key_id.strip_prefix("ed25519:").unwrap_or(key_id)
}

/// A device's signing key from its device-keys JSON: `(ed25519:<device ID>, public key)`.
/// The keys were checked when uploaded, so JSON that does not parse back is an internal error
/// (logged), not a device without a key.
fn device_signing_key(json: &str) -> Result<Option<(String, String)>> {
    let keys: ruma::encryption::DeviceKeys = serde_json::from_str(json)?;
    let key_id = format!("ed25519:{}", keys.device_id);
    Ok(keys.keys.iter().find(|(id, _)| id.as_str() == key_id).map(|(_, public)| (key_id.clone(), public.clone())))
}

/// Whether `json` carries a valid signature by `signer`'s key `key_id`.
fn verify(json: &str, signer: &UserId, key_id: &str, public_key: &str) -> Result<bool> {
    let object: CanonicalJsonObject =
        serde_json::from_str(json).map_err(|e| Error::bad_json(format!("Key is not canonical JSON: {e}")))?;
    let Some(signature) = signature_in(&object, signer, key_id) else { return Ok(false) };
    Ok(check_signature(&object, public_key, signature))
}

fn signature_in<'a>(object: &'a CanonicalJsonObject, signer: &UserId, key_id: &str) -> Option<&'a str> {
    let CanonicalJsonValue::Object(all) = object.get("signatures")? else { return None };
    let CanonicalJsonValue::Object(by_signer) = all.get(signer.as_str())? else { return None };
    match by_signer.get(key_id)? {
        CanonicalJsonValue::String(signature) => Some(signature),
        _ => None,
    }
}

fn check_signature(object: &CanonicalJsonObject, public_key: &str, signature: &str) -> bool {
    let (Ok(public_key), Ok(signature)) = (
        Base64::<ruma::serde::base64::Standard>::parse(public_key),
        Base64::<ruma::serde::base64::Standard>::parse(signature),
    ) else {
        return false;
    };
    let Ok(canonical) = ruma::signatures::to_canonical_json_string_for_signing(object) else { return false };
    ruma::signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        canonical.as_bytes(),
    )
    .is_ok()
}

/// The valid signatures by `signer` with one of `signing_keys` that `uploaded` adds to
/// `stored`. The uploaded object must be the stored key (signatures and `unsigned` aside).
fn new_signatures(
    stored: &str,
    uploaded: &RawValue,
    signer: &UserId,
    signing_keys: &[(String, String)],
) -> std::result::Result<Vec<(String, String)>, String> {
    let stored: CanonicalJsonObject = serde_json::from_str(stored).map_err(|e| format!("stored key: {e}"))?;
    let uploaded: CanonicalJsonObject =
        serde_json::from_str(uploaded.get()).map_err(|e| format!("Not a canonical JSON object: {e}"))?;
    let signed_part =
        |object: &CanonicalJsonObject| ruma::signatures::to_canonical_json_string_for_signing(object).ok();
    if signed_part(&stored).is_none() || signed_part(&stored) != signed_part(&uploaded) {
        return Err("The signed object differs from the stored key".to_owned());
    }
    let mut found = Vec::new();
    for (key_id, public_key) in signing_keys {
        if let Some(signature) = signature_in(&uploaded, signer, key_id) {
            if !check_signature(&stored, public_key, signature) {
                return Err(format!("Invalid signature by {key_id}"));
            }
            found.push((key_id.clone(), signature.to_owned()));
        }
    }
    if found.is_empty() {
        return Err("No signature by a key allowed to sign this key".to_owned());
    }
    Ok(found)
}

/// A failure entry; ruma's `Failure` has no public constructor, so it is built from JSON.
fn failure(errcode: &str, message: &str) -> Failure {
    let value = json!({"errcode": errcode, "error": message});
    serde_json::from_value(value).unwrap_or_else(|_| unreachable!("a Failure is errcode and error"))
}
