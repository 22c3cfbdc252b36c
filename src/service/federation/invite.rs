//! Invites from other servers to this server's users (server-server API, "Inviting to a
//! room", invite v2).
//!
//! This server checks the invite, adds its signature, and answers with it. When it does not
//! have the room, it keeps the invite and the stripped state it came with, so that the
//! invitee's `/sync` shows it; accepting is a join through the inviting server, rejecting
//! one is done here (the inviting server is not told yet).

use std::{collections::BTreeSet, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::RawStrippedState,
    signatures::{Verified, verify_event},
};
use serde_json::{Value as JsonValue, value::RawValue};

use crate::{
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, Result},
    service::{Services, rooms::RoomHead},
    storage::federation::RemoteInvite,
};

/// invite v2 as the invitee's server: the event signed by this server too.
pub async fn receive(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &ruma::EventId,
    version: &RoomVersionId,
    event: &RawValue,
    invite_room_state: &[RawStrippedState],
) -> Result<Box<RawValue>> {
    if !SUPPORTED_ROOM_VERSIONS.contains(version) {
        return Err(Error::matrix(
            ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
            ),
            format!("Room version {version} is not supported here"),
        ));
    }
    let rules = RoomHead::rules_for(version)?;
    let mut object: CanonicalJsonObject =
        serde_json::from_str(event.get()).map_err(|e| Error::bad_json(format!("Invalid invite event: {e}")))?;
    let invitee = check_invite(&object, room_id, origin)?;
    if invitee.server_name() != services.config.server_name {
        return Err(Error::bad_json("The invitee is not a user of this server"));
    }
    if services.accounts.get(&invitee).await?.is_none_or(|account| account.deactivated) {
        return Err(Error::not_found("No such user"));
    }
    let computed = parley_federation::pdu::event_id(&object, &rules).map_err(|e| Error::bad_json(e.to_string()))?;
    if computed != event_id {
        return Err(Error::bad_json("The event ID in the path is not the event's"));
    }

    // Signed by us too, then every required signature (the sender's server's, ours) checked
    // against the content hash.
    // Event signatures cover the redacted form; the content hash is recomputed as it was.
    let resigned = services.server_keys.hash_and_sign_event(&mut object, &rules)?;
    if resigned != computed {
        return Err(Error::bad_json("The invite's content hash does not match its content"));
    }
    let mut servers: BTreeSet<OwnedServerName> =
        ruma::signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
            .map_err(|e| Error::forbidden(format!("Cannot verify the invite: {e}")))?;
    servers.insert(origin.to_owned());
    let ts = match object.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => 0,
    };
    let keys = services.server_keys.public_keys(&object, &servers, ts).await?;
    match verify_event(&keys, &object, &rules) {
        Ok(Verified::All) => {}
        Ok(Verified::Signatures) => return Err(Error::forbidden("The invite's content hash does not match")),
        Err(e) => return Err(Error::forbidden(format!("Invalid signature on the invite: {e}"))),
    }
    let signed = serde_json::to_string(&object)?;

    // A room this server has learns of the invite as a PDU, through the room's graph; only
    // for a room it does not have is the invite kept on its own.
    if services.rooms.state.head(room_id).await?.is_none() {
        let state: Vec<JsonValue> = invite_room_state.iter().filter_map(stripped).collect();
        let mut pos = services.stream.allocate();
        let invite = RemoteInvite {
            room_id: room_id.to_owned(),
            user_id: invitee.clone(),
            event_id: computed,
            event_json: signed.clone(),
            invite_state: serde_json::to_string(&state)?,
            membership: "invite".to_owned(),
            stream_pos: pos.get(),
        };
        services.storage.federation.store_remote_invite(&invite).await?;
        let notifier = Arc::clone(&services.notifier);
        pos.on_visible(move || notifier.notify_users([&*invitee]));
    }
    Ok(RawValue::from_string(signed)?)
}

/// The invitee of a well-formed invite event from `origin` in `room_id`.
fn check_invite(object: &CanonicalJsonObject, room_id: &RoomId, origin: &ServerName) -> Result<ruma::OwnedUserId> {
    let field = |name: &str| match object.get(name) {
        Some(CanonicalJsonValue::String(value)) => Some(value.as_str()),
        _ => None,
    };
    let membership = match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
            Some(CanonicalJsonValue::String(m)) => Some(m.as_str()),
            _ => None,
        },
        _ => None,
    };
    if field("type") != Some("m.room.member") || membership != Some("invite") {
        return Err(Error::bad_json("Not an invite"));
    }
    if field("room_id").is_some_and(|r| r != room_id.as_str()) {
        return Err(Error::bad_json("The invite is for another room"));
    }
    let sender = field("sender").and_then(|s| UserId::parse(s).ok());
    if sender.is_none_or(|s| s.server_name() != origin) {
        return Err(Error::forbidden("The invite's sender is not a user of the server that sent it"));
    }
    field("state_key")
        .and_then(|k| UserId::parse(k).ok())
        .ok_or_else(|| Error::bad_json("The invitee is not a user ID"))
}

/// A state event from `invite_room_state` as clients are shown it: type, state key, sender
/// and content.
fn stripped(raw: &RawStrippedState) -> Option<JsonValue> {
    #[allow(deprecated)]
    let json = match raw {
        RawStrippedState::Pdu(pdu) => pdu.get(),
        RawStrippedState::Stripped(event) => event.json().get(),
        _ => return None,
    };
    let value: JsonValue = serde_json::from_str(json).ok()?;
    Some(serde_json::json!({
        "type": value.get("type")?,
        "state_key": value.get("state_key")?,
        "sender": value.get("sender")?,
        "content": value.get("content")?,
    }))
}

/// The server that invited `user_id` to a room this server does not have, if any: where a
/// join to that room goes first.
pub async fn inviting_server(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<OwnedServerName>> {
    let Some(invite) = services.storage.federation.remote_invite(room_id, user_id).await? else { return Ok(None) };
    if invite.membership != "invite" {
        return Ok(None);
    }
    let event: JsonValue = serde_json::from_str(&invite.event_json)?;
    Ok(event["sender"].as_str().and_then(|s| UserId::parse(s).ok()).map(|s| s.server_name().to_owned()))
}

/// Rejects an invite to a room this server does not have, here: the invitee's membership
/// becomes `leave`, and their clients see the room go.
pub async fn reject_locally(services: &Services, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
    if services.rooms.state.head(room_id).await?.is_some() {
        return Ok(false);
    }
    let Some(invite) = services.storage.federation.remote_invite(room_id, user_id).await? else { return Ok(false) };
    if invite.membership != "invite" {
        return Ok(false);
    }
    let mut pos = services.stream.allocate();
    services.storage.federation.reject_remote_invite(room_id, user_id, pos.get()).await?;
    let notifier = Arc::clone(&services.notifier);
    let user = user_id.to_owned();
    pos.on_visible(move || notifier.notify_users([&*user]));
    Ok(true)
}
