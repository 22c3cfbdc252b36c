//! Other servers' key responses (`/_matrix/key/v2/server`, and the same objects relayed by a
//! notary): checking their signatures and turning them into keys with a validity.
//!
//! A response must be signed by the server it describes, with one of the `verify_keys` it
//! lists: otherwise anyone could hand out keys in its name. A response relayed by a notary
//! must carry that signature *and* one by the notary, with a key of the notary's we already
//! trust. `valid_until_ts` says until when events may be checked with the keys (the spec:
//! keys verify an event only if they were valid at its `origin_server_ts`); a server may not
//! claim more than a bounded time ahead, so a stolen key cannot be pinned for years.

use std::{collections::BTreeMap, time::Duration};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId,
    ServerName, SigningKeyAlgorithm, UInt,
    api::federation::discovery::ServerSigningKeys,
    serde::{Base64, Raw},
    signatures::{VerificationError, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};

/// How far ahead of now a `valid_until_ts` is believed, as Synapse does.
pub const DEFAULT_MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One public key of a remote server, as the [`KeyCache`](super::KeyCache) stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedKey {
    pub key_id: OwnedServerSigningKeyId,
    pub key: Base64,
    /// The latest `origin_server_ts` this key may verify: the response's `valid_until_ts`
    /// (capped) for a current key, its `expired_ts` for an old one.
    pub valid_until_ts: MilliSecondsSinceUnixEpoch,
    /// Listed under `old_verify_keys`: it will not be renewed.
    pub expired: bool,
}

impl CachedKey {
    /// Whether the key may verify something sent at `ts`.
    pub fn is_valid_at(&self, ts: MilliSecondsSinceUnixEpoch) -> bool {
        ts <= self.valid_until_ts
    }
}

/// A key response whose signatures checked out.
#[derive(Clone, Debug)]
pub struct VerifiedKeys {
    pub server_name: OwnedServerName,
    /// Current keys, then old ones.
    pub keys: Vec<CachedKey>,
    /// `valid_until_ts` as capped (see [`DEFAULT_MAX_VALIDITY`]).
    pub valid_until_ts: MilliSecondsSinceUnixEpoch,
    /// The response as received, signatures included: what a notary relays.
    pub response: CanonicalJsonObject,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyVerifyError {
    #[error("not a server key response")]
    Malformed(#[source] serde_json::Error),
    #[error("response is for {got}, not {expected}")]
    WrongServer { expected: OwnedServerName, got: OwnedServerName },
    #[error("response lists no ed25519 verify key")]
    NoVerifyKeys,
    #[error("key {key_id} is not a 32-byte ed25519 key")]
    InvalidKey { key_id: OwnedServerSigningKeyId },
    #[error("response is not signed by {signer} with a key we accept")]
    NotSigned { signer: OwnedServerName },
    #[error("signature of {signer} with {key_id} does not verify")]
    BadSignature {
        signer: OwnedServerName,
        key_id: String,
        #[source]
        source: VerificationError,
    },
}

/// Checks a response from `GET /_matrix/key/v2/server` on `server`: it describes `server` and
/// is signed by it with a key it lists.
pub fn verify_server_keys(
    response: &Raw<ServerSigningKeys>,
    server: &ServerName,
    now: MilliSecondsSinceUnixEpoch,
    max_validity: Duration,
) -> Result<VerifiedKeys, KeyVerifyError> {
    let (object, keys) = parse(response, server)?;
    let current: BTreeMap<String, Base64> =
        keys.verify_keys.iter().map(|(id, key)| (id.to_string(), key.key.clone())).collect();
    check_signed_by(&object, server, &current)?;
    Ok(verified(object, keys, now, max_validity))
}

/// Checks one entry of a notary's answer about `server`: signed by `server` with a key it
/// lists, and by `notary` with one of `notary_keys` (key ID → public key), which the caller
/// already trusts.
pub fn verify_notary_keys(
    response: &Raw<ServerSigningKeys>,
    server: &ServerName,
    notary: &ServerName,
    notary_keys: &BTreeMap<String, Base64>,
    now: MilliSecondsSinceUnixEpoch,
    max_validity: Duration,
) -> Result<VerifiedKeys, KeyVerifyError> {
    let verified = verify_server_keys(response, server, now, max_validity)?;
    check_signed_by(&verified.response, notary, notary_keys)?;
    Ok(verified)
}

/// Who signed `object` and with which keys, read from its `signatures`: what
/// [`KeyFetcher::public_key_map`](super::KeyFetcher::public_key_map) needs. Entries that are
/// not a server name and an `ed25519` key ID are skipped (nothing could verify them).
pub fn signers_of(object: &CanonicalJsonObject) -> BTreeMap<OwnedServerName, Vec<OwnedServerSigningKeyId>> {
    let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else { return BTreeMap::new() };
    signatures
        .iter()
        .filter_map(|(server, by_key)| {
            let server = OwnedServerName::try_from(server.as_str()).ok()?;
            let CanonicalJsonValue::Object(by_key) = by_key else { return None };
            let key_ids: Vec<OwnedServerSigningKeyId> = by_key
                .keys()
                .filter_map(|id| OwnedServerSigningKeyId::try_from(id.as_str()).ok())
                .filter(|id| id.algorithm() == SigningKeyAlgorithm::Ed25519)
                .collect();
            (!key_ids.is_empty()).then_some((server, key_ids))
        })
        .collect()
}

fn parse(
    response: &Raw<ServerSigningKeys>,
    server: &ServerName,
) -> Result<(CanonicalJsonObject, ServerSigningKeys), KeyVerifyError> {
    let keys: ServerSigningKeys = response.deserialize().map_err(KeyVerifyError::Malformed)?;
    if keys.server_name != server {
        return Err(KeyVerifyError::WrongServer { expected: server.to_owned(), got: keys.server_name });
    }
    let object: CanonicalJsonObject = serde_json::from_str(response.json().get()).map_err(KeyVerifyError::Malformed)?;
    let mut ed25519 = 0;
    for (key_id, key) in &keys.verify_keys {
        if key_id.algorithm() == SigningKeyAlgorithm::Ed25519 {
            if key.key.as_bytes().len() != 32 {
                return Err(KeyVerifyError::InvalidKey { key_id: key_id.clone() });
            }
            ed25519 += 1;
        }
    }
    if ed25519 == 0 {
        return Err(KeyVerifyError::NoVerifyKeys);
    }
    Ok((object, keys))
}

/// At least one signature of `signer` by a key in `keys`, and every such signature valid.
/// Signatures by other keys (old ones, unknown algorithms) are not looked at.
fn check_signed_by(
    object: &CanonicalJsonObject,
    signer: &ServerName,
    keys: &BTreeMap<String, Base64>,
) -> Result<(), KeyVerifyError> {
    let not_signed = || KeyVerifyError::NotSigned { signer: signer.to_owned() };
    let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else { return Err(not_signed()) };
    let Some(CanonicalJsonValue::Object(by_signer)) = signatures.get(signer.as_str()) else { return Err(not_signed()) };
    let bad = |key_id: &str, source| KeyVerifyError::BadSignature {
        signer: signer.to_owned(),
        key_id: key_id.to_owned(),
        source,
    };
    let canonical = to_canonical_json_string_for_signing(object).map_err(|e| bad("", VerificationError::Json(e)))?;
    let mut checked = 0;
    for (key_id, signature) in by_signer {
        let Some(public_key) = keys.get(key_id) else { continue };
        if !key_id.starts_with("ed25519:") {
            continue;
        }
        let CanonicalJsonValue::String(signature) = signature else { return Err(not_signed()) };
        let signature = Base64::<ruma::serde::base64::Standard>::parse(signature).map_err(|source| {
            let path = format!("signatures.{signer}.{key_id}");
            bad(key_id, VerificationError::InvalidBase64Signature { path, source })
        })?;
        verify_canonical_json_bytes(
            &SigningKeyAlgorithm::Ed25519,
            public_key.as_bytes(),
            signature.as_bytes(),
            canonical.as_bytes(),
        )
        .map_err(|e| bad(key_id, e))?;
        checked += 1;
    }
    if checked == 0 {
        return Err(not_signed());
    }
    Ok(())
}

fn verified(
    response: CanonicalJsonObject,
    keys: ServerSigningKeys,
    now: MilliSecondsSinceUnixEpoch,
    max_validity: Duration,
) -> VerifiedKeys {
    let cap = now.get().saturating_add(UInt::try_from(max_validity.as_millis()).unwrap_or(UInt::MAX));
    let valid_until_ts = MilliSecondsSinceUnixEpoch(keys.valid_until_ts.get().min(cap));
    let current = keys
        .verify_keys
        .into_iter()
        .filter(|(id, _)| id.algorithm() == SigningKeyAlgorithm::Ed25519)
        .map(|(key_id, key)| CachedKey { key_id, key: key.key, valid_until_ts, expired: false });
    let old = keys
        .old_verify_keys
        .into_iter()
        .filter(|(id, key)| id.algorithm() == SigningKeyAlgorithm::Ed25519 && key.key.as_bytes().len() == 32)
        .map(|(key_id, key)| CachedKey { key_id, key: key.key, valid_until_ts: key.expired_ts, expired: true });
    VerifiedKeys { server_name: keys.server_name, keys: current.chain(old).collect(), valid_until_ts, response }
}

#[cfg(test)]
mod tests {
    use ruma::{
        api::federation::discovery::{OldVerifyKey, VerifyKey},
        server_name,
    };

    use super::*;
    use crate::{SigningKey, keys::sign_as_notary};

    const DAY: u64 = 24 * 3600 * 1000;

    fn ts(ms: u64) -> MilliSecondsSinceUnixEpoch {
        MilliSecondsSinceUnixEpoch(UInt::try_from(ms).expect("ms"))
    }

    /// A response for `server` listing `listed`, with `old` keys, signed by `signers`.
    fn response(
        server: &ServerName,
        listed: &[&SigningKey],
        old: &[(&SigningKey, u64)],
        valid_until: u64,
        signers: &[&SigningKey],
    ) -> CanonicalJsonObject {
        let mut keys = ServerSigningKeys::new(server.to_owned(), ts(valid_until));
        for key in listed {
            keys.verify_keys.insert(key.key_id().to_owned(), VerifyKey::new(Base64::new(key.public_key().to_vec())));
        }
        for (key, expired) in old {
            keys.old_verify_keys.insert(
                key.key_id().to_owned(),
                OldVerifyKey::new(ts(*expired), Base64::new(key.public_key().to_vec())),
            );
        }
        let mut object = match ruma::canonical_json::to_canonical_value(&keys).expect("canonical") {
            CanonicalJsonValue::Object(object) => object,
            _ => unreachable!(),
        };
        object.remove("signatures");
        for signer in signers {
            signer.sign_json(server, &mut object).expect("sign");
        }
        object
    }

    fn raw(object: &CanonicalJsonObject) -> Raw<ServerSigningKeys> {
        Raw::from_json_string(serde_json::to_string(object).expect("json")).expect("raw")
    }

    #[test]
    fn self_signed_response_gives_current_and_old_keys() {
        let (a, old) = (SigningKey::generate("a").expect("key"), SigningKey::generate("old").expect("key"));
        let server = server_name!("origin.test");
        let now = 1_000 * DAY;
        let object = response(server, &[&a], &[(&old, now - DAY)], now + DAY, &[&a]);
        let verified = verify_server_keys(&raw(&object), server, ts(now), DEFAULT_MAX_VALIDITY).expect("valid");
        assert_eq!(verified.valid_until_ts, ts(now + DAY));
        assert_eq!(verified.keys.len(), 2);
        assert_eq!(verified.keys[0].key_id.as_str(), "ed25519:a");
        assert!(!verified.keys[0].expired && verified.keys[0].is_valid_at(ts(now + DAY)));
        assert!(!verified.keys[0].is_valid_at(ts(now + DAY + 1)));
        assert!(verified.keys[1].expired);
        assert_eq!(verified.keys[1].valid_until_ts, ts(now - DAY));
        assert_eq!(verified.response, object);
    }

    #[test]
    fn signers_are_read_from_signatures() {
        let (a, b) = (SigningKey::generate("a").expect("key"), SigningKey::generate("b").expect("key"));
        let object = response(server_name!("origin.test"), &[&a], &[], DAY, &[&a, &b]);
        let signers = signers_of(&object);
        assert_eq!(signers.len(), 1);
        let ids: Vec<&str> = signers[server_name!("origin.test")].iter().map(|id| id.as_str()).collect();
        assert_eq!(ids, vec!["ed25519:a", "ed25519:b"]);
        assert!(signers_of(&CanonicalJsonObject::new()).is_empty());
    }

    #[test]
    fn validity_is_capped() {
        let a = SigningKey::generate("a").expect("key");
        let server = server_name!("origin.test");
        let now = 1_000 * DAY;
        let object = response(server, &[&a], &[], now + 365 * DAY, &[&a]);
        let verified = verify_server_keys(&raw(&object), server, ts(now), DEFAULT_MAX_VALIDITY).expect("valid");
        assert_eq!(verified.valid_until_ts, ts(now + 7 * DAY));
        assert_eq!(verified.keys[0].valid_until_ts, ts(now + 7 * DAY));
    }

    #[test]
    fn forged_or_misdirected_responses_are_refused() {
        let (a, b) = (SigningKey::generate("a").expect("key"), SigningKey::generate("b").expect("key"));
        let server = server_name!("origin.test");
        let now = ts(DAY);

        // Signed only by a key it does not list.
        let object = response(server, &[&a], &[], 2 * DAY, &[&b]);
        let err = verify_server_keys(&raw(&object), server, now, DEFAULT_MAX_VALIDITY).expect_err("unlisted signer");
        assert!(matches!(err, KeyVerifyError::NotSigned { .. }), "{err:?}");

        // Changed after signing.
        let mut object = response(server, &[&a], &[], 2 * DAY, &[&a]);
        object.insert("valid_until_ts".into(), CanonicalJsonValue::Integer((300 * DAY).try_into().expect("int")));
        let err = verify_server_keys(&raw(&object), server, now, DEFAULT_MAX_VALIDITY).expect_err("tampered");
        assert!(matches!(err, KeyVerifyError::BadSignature { .. }), "{err:?}");

        // One good and one bad signature by listed keys: refused.
        let mut object = response(server, &[&a, &b], &[], 2 * DAY, &[&a]);
        let other = response(server, &[&a, &b], &[], 3 * DAY, &[&b]);
        let sig_b = other["signatures"].clone();
        if let (Some(CanonicalJsonValue::Object(mine)), CanonicalJsonValue::Object(theirs)) =
            (object.get_mut("signatures"), sig_b)
            && let (Some(CanonicalJsonValue::Object(mine)), Some(CanonicalJsonValue::Object(theirs))) =
                (mine.get_mut("origin.test"), theirs.get("origin.test"))
        {
            mine.extend(theirs.clone());
        }
        let err = verify_server_keys(&raw(&object), server, now, DEFAULT_MAX_VALIDITY).expect_err("one bad signature");
        assert!(matches!(err, KeyVerifyError::BadSignature { .. }), "{err:?}");

        // About another server.
        let object = response(server_name!("evil.test"), &[&a], &[], 2 * DAY, &[&a]);
        let err = verify_server_keys(&raw(&object), server, now, DEFAULT_MAX_VALIDITY).expect_err("wrong server");
        assert!(matches!(err, KeyVerifyError::WrongServer { .. }), "{err:?}");

        // No keys at all.
        let object = response(server, &[], &[], 2 * DAY, &[&a]);
        let err = verify_server_keys(&raw(&object), server, now, DEFAULT_MAX_VALIDITY).expect_err("no keys");
        assert!(matches!(err, KeyVerifyError::NoVerifyKeys), "{err:?}");
    }

    #[test]
    fn notary_responses_need_both_signatures() {
        let (origin_key, notary_key, stranger) = (
            SigningKey::generate("o").expect("key"),
            SigningKey::generate("n").expect("key"),
            SigningKey::generate("s").expect("key"),
        );
        let (server, notary) = (server_name!("origin.test"), server_name!("notary.test"));
        let trusted: BTreeMap<String, Base64> =
            [(notary_key.key_id().to_string(), Base64::new(notary_key.public_key().to_vec()))].into();
        let now = ts(DAY);
        let object = response(server, &[&origin_key], &[], 2 * DAY, &[&origin_key]);

        let relayed = sign_as_notary([object.clone()], notary, &notary_key).expect("sign");
        let verified =
            verify_notary_keys(&relayed[0], server, notary, &trusted, now, DEFAULT_MAX_VALIDITY).expect("valid");
        assert_eq!(verified.keys[0].key_id, *origin_key.key_id());

        // Relayed without the notary's signature, or signed by a key not trusted for it.
        let err = verify_notary_keys(&raw(&object), server, notary, &trusted, now, DEFAULT_MAX_VALIDITY)
            .expect_err("no notary signature");
        assert!(matches!(err, KeyVerifyError::NotSigned { ref signer } if signer == notary), "{err:?}");
        let relayed = sign_as_notary([object], notary, &stranger).expect("sign");
        let err = verify_notary_keys(&relayed[0], server, notary, &trusted, now, DEFAULT_MAX_VALIDITY)
            .expect_err("untrusted notary key");
        assert!(matches!(err, KeyVerifyError::NotSigned { .. }), "{err:?}");

        // The notary's signature does not replace the origin's.
        let forged = response(server, &[&stranger], &[], 2 * DAY, &[]);
        let relayed = sign_as_notary([forged], notary, &notary_key).expect("sign");
        let err = verify_notary_keys(&relayed[0], server, notary, &trusted, now, DEFAULT_MAX_VALIDITY)
            .expect_err("origin signature missing");
        assert!(matches!(err, KeyVerifyError::NotSigned { ref signer } if signer == server), "{err:?}");
    }
}
