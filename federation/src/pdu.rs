//! Turning an event into a complete, signed PDU, and checking one.
//!
//! The order is the spec's: the content hash is computed over the event without
//! `unsigned`, `signatures` and `hashes`; the signature over the redacted event; the event ID
//! (room versions 3+) is the reference hash of the redacted, signed event.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, ServerName,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, Verified, hash_and_sign_event, reference_hash, verify_event},
};

use crate::SigningKey;

/// What went wrong with a PDU. The underlying error stays attached as the source, so a
/// caller that reports the chain (e.g. anyhow's `{:#}`) says why.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("event could not be hashed or signed")]
    Json(#[source] ruma::signatures::JsonError),
    #[error("derived event or room ID is invalid")]
    Id(#[source] ruma::IdParseError),
    #[error("event verification failed")]
    Verification(#[source] ruma::signatures::VerificationError),
}

/// Adds the content hash and this server's signature to `object`, and returns the event ID
/// the room version derives from it.
pub fn hash_and_sign(
    object: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
    server_name: &ServerName,
    key: &SigningKey,
) -> Result<OwnedEventId, PduError> {
    hash_and_sign_event(server_name.as_str(), key.pair(), object, &rules.redaction).map_err(PduError::Json)?;
    event_id(object, rules)
}

/// The event ID of a hashed and signed event: `$` + its reference hash.
pub fn event_id(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId, PduError> {
    let hash = reference_hash(object, rules).map_err(PduError::Json)?;
    OwnedEventId::try_from(format!("${hash}")).map_err(PduError::Id)
}

/// The room ID of a room whose ID is derived from its create event (room version 12):
/// `!` + the create event's reference hash.
pub fn room_id_from_create(create_event_id: &ruma::EventId) -> Result<OwnedRoomId, PduError> {
    let hash = create_event_id.as_str().trim_start_matches('$');
    OwnedRoomId::try_from(format!("!{hash}")).map_err(PduError::Id)
}

/// Checks hashes and signatures of a PDU. `Verified::Signatures` means the signatures are good
/// but the content hash is not: the spec says to redact such an event, not to reject it.
pub fn verify(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
    keys: &PublicKeyMap,
) -> Result<Verified, PduError> {
    verify_event(keys, object, rules).map_err(PduError::Verification)
}

/// Reads a string field of an event object.
pub fn str_field<'a>(object: &'a CanonicalJsonObject, field: &str) -> Option<&'a str> {
    match object.get(field) {
        Some(CanonicalJsonValue::String(s)) => Some(s),
        _ => None,
    }
}
