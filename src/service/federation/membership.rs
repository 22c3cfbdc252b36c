//! Joining rooms across servers (server-server API, "Joining Rooms").
//!
//! - [`join_remote`]: a local user joins a room this server is not in, through a resident
//!   server: make_join, sign, send_join, then the returned state and auth chain are checked
//!   and stored, and the join starts this server's graph of the room.
//! - [`answer_make`] and [`answer_send_join`]: the resident side.

use std::collections::BTreeSet;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::{create_join_event, prepare_join_event},
};
use serde_json::{Map, Value as JsonValue, value::RawValue};

use super::{acl, history};
use crate::{
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, Result},
    service::{
        Services, now_ms,
        rooms::{RoomHead, state::StateMap, timeline::Received},
    },
};

/// A local user joins `room_id` through the first of `servers` that can help.
pub async fn join_remote(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    servers: &[OwnedServerName],
    content: Map<String, JsonValue>,
) -> Result<()> {
    let me = &services.config.server_name;
    let mut tried = BTreeSet::new();
    let mut last_error = None;
    for server in servers.iter().filter(|s| *s != me) {
        if !tried.insert(server.clone()) {
            continue;
        }
        match join_through(services, server, room_id, user_id, content.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(%room_id, %server, error = %e, "could not join through this server");
                last_error = Some(e);
            }
        }
    }
    Err(match last_error {
        // A refusal says more than "nobody could help".
        Some(e) if e.status() == http::StatusCode::FORBIDDEN => e,
        Some(e) => Error::not_found(format!("No server could help join the room: {e}")),
        None => Error::not_found("No server is known to be in the room"),
    })
}

async fn join_through(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    content: Map<String, JsonValue>,
) -> Result<()> {
    let client = &services.federation.as_ref().ok_or_else(|| Error::not_found("This server does not federate"))?.client;
    let remote_error = |what: &str, e: parley_federation::client::ClientError| match e.status() {
        Some(http::StatusCode::FORBIDDEN) => Error::forbidden(format!("{server} refused the {what}: {e}")),
        _ => Error::not_found(format!("{what} through {server}: {e}")),
    };

    // 1. The template.
    let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
    request.ver = SUPPORTED_ROOM_VERSIONS.to_vec();
    let template = client.send(server, request).await.map_err(|e| remote_error("make_join", e))?;
    let version = template.room_version.unwrap_or(RoomVersionId::V1);
    if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
        return Err(Error::unsupported(format!("Room version {version} is not supported")));
    }
    let rules = RoomHead::rules_for(&version)?;
    let mut event: CanonicalJsonObject = serde_json::from_str(template.event.get())
        .map_err(|e| Error::bad_json(format!("{server} sent an invalid join template: {e}")))?;
    check_template(&event, room_id, user_id)?;

    // 2. Our join, signed. The template's content keeps what the resident server put there
    // (a restricted room's authorising user), with our membership and profile over it.
    let mut merged = match event.remove("content") {
        Some(CanonicalJsonValue::Object(content)) => content,
        _ => CanonicalJsonObject::new(),
    };
    for (key, value) in content {
        let value = ruma::canonical_json::to_canonical_value(value).map_err(|e| Error::bad_json(e.to_string()))?;
        merged.insert(key, value);
    }
    merged.insert("membership".into(), CanonicalJsonValue::String("join".into()));
    event.insert("content".into(), CanonicalJsonValue::Object(merged));
    event.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now_ms().try_into().unwrap_or_default()));
    event.remove("signatures");
    event.remove("hashes");
    event.remove("unsigned");
    if event.contains_key("origin") {
        event.insert("origin".into(), CanonicalJsonValue::String(services.config.server_name.to_string()));
    }
    let event_id = services.server_keys.hash_and_sign_event(&mut event, &rules)?;

    // 3. send_join: the room's state before the join, and its auth chain.
    let raw = RawValue::from_string(serde_json::to_string(&event)?)?;
    let request = create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw);
    let answer = client.send(server, request).await.map_err(|e| remote_error("send_join", e))?.room_state;
    // In a restricted room, the resident server signs the join too: use its copy.
    if let Some(signed) = &answer.event
        && let Ok(CanonicalJsonValue::Object(signed)) = serde_json::from_str::<CanonicalJsonValue>(signed.get())
        && parley_federation::pdu::event_id(&signed, &rules).is_ok_and(|id| id == event_id)
    {
        event = signed;
    }

    // 4. The state and auth chain, as outliers, oldest first, then the join on that state.
    let parse = |raw: &RawValue| serde_json::from_str::<CanonicalJsonObject>(raw.get()).ok();
    let state: Vec<CanonicalJsonObject> = answer.state.iter().filter_map(|raw| parse(raw)).collect();
    let mut events: Vec<CanonicalJsonObject> = answer.auth_chain.iter().filter_map(|raw| parse(raw)).collect();
    events.extend(state.iter().cloned());
    let is_create = |object: &CanonicalJsonObject| {
        matches!(object.get("type"), Some(CanonicalJsonValue::String(t)) if t == "m.room.create")
            && matches!(object.get("state_key"), Some(CanonicalJsonValue::String(k)) if k.is_empty())
    };
    let timeline = &services.rooms.timeline;
    if services.rooms.state.head(room_id).await?.is_none() {
        let create = events.iter().find(|o| is_create(o)).cloned();
        let create = create.ok_or_else(|| Error::bad_json(format!("{server} sent no create event")))?;
        // The create event must be this room's: named by its room_id, or (version 12) the
        // room ID is derived from its event ID.
        let names_room = match create.get("room_id") {
            Some(CanonicalJsonValue::String(r)) => r == room_id.as_str(),
            _ => parley_federation::pdu::event_id(&create, &rules)
                .ok()
                .and_then(|id| parley_federation::pdu::room_id_from_create(&id).ok())
                .is_some_and(|r| r == room_id),
        };
        if !names_room {
            return Err(Error::bad_json(format!("{server} sent the create event of another room")));
        }
        timeline.receive_create(server, create).await?;
    }
    events.sort_by_key(depth);
    let mut seen = BTreeSet::new();
    for object in events {
        let Ok(id) = parley_federation::pdu::event_id(&object, &rules) else { continue };
        if is_create(&object) || !seen.insert(id.clone()) {
            continue;
        }
        if let Err(e) = timeline.receive_outlier(server, room_id, object).await {
            tracing::info!(%room_id, event_id = %id, error = %e, "a state or auth event from send_join was refused");
        }
    }
    let state = state_map(services, room_id, &rules, &state, &event_id).await?;
    match timeline.receive_joined(server, &room_id.to_owned(), event, state).await? {
        Received::Accepted(_) => Ok(()),
        other => Err(Error::forbidden(format!("The join was not accepted here: {other:?}"))),
    }
}

/// The template must be the join of the user asked for, in the room asked for.
fn check_template(event: &CanonicalJsonObject, room_id: &RoomId, user_id: &UserId) -> Result<()> {
    let field = |name: &str| match event.get(name) {
        Some(CanonicalJsonValue::String(value)) => Some(value.as_str()),
        _ => None,
    };
    let right = field("type") == Some("m.room.member")
        && field("state_key") == Some(user_id.as_str())
        && field("sender") == Some(user_id.as_str())
        && field("room_id").is_none_or(|r| r == room_id.as_str());
    if right { Ok(()) } else { Err(Error::bad_json("The join template is not this user's join to this room")) }
}

fn depth(object: &CanonicalJsonObject) -> i64 {
    match object.get("depth") {
        Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
        _ => 0,
    }
}

/// The state the resident server answered, as a map, keeping only events stored here and not
/// rejected, and leaving out the join itself (some servers answer with the state after it).
async fn state_map(
    services: &Services,
    room_id: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    state: &[CanonicalJsonObject],
    join_id: &OwnedEventId,
) -> Result<StateMap> {
    let ids: Vec<OwnedEventId> = state
        .iter()
        .filter_map(|o| parley_federation::pdu::event_id(o, rules).ok())
        .filter(|id| id != join_id)
        .collect();
    let stored = services.rooms.events.pdus(&ids).await?;
    Ok(stored
        .into_iter()
        // This room's accepted events only: the answer cannot lend another room's state.
        .filter(|pdu| pdu.room_id == room_id && !matches!(pdu.placement, crate::storage::Placement::Rejected(_)))
        .filter_map(|pdu| Some(((pdu.event_type.to_string(), pdu.state_key.clone()?), pdu.event_id.clone())))
        .collect())
}

/// make_join (and make_leave, make_knock) as the resident server: `origin` asks for its own
/// user, in a room whose ACL lets it in, in a room version it supports.
pub async fn answer_make(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
    versions: Option<&[RoomVersionId]>,
) -> Result<(RoomVersionId, Box<RawValue>)> {
    if user_id.server_name() != origin {
        return Err(Error::forbidden("A server may only ask for its own users"));
    }
    if !acl::allows(&services.rooms, room_id, origin).await? {
        return Err(Error::forbidden("The room's server ACL does not allow your server"));
    }
    let (version, template) = services.rooms.timeline.membership_template(room_id, user_id, membership).await?;
    if let Some(versions) = versions
        && !versions.contains(&version)
    {
        return Err(Error::matrix(
            ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
            ),
            format!("The room is version {version}, which your server does not support"),
        ));
    }
    Ok((version, RawValue::from_string(serde_json::to_string(&template)?)?))
}

/// send_join as the resident server: the join received, then the state before it and its
/// auth chain (in full), and the servers in the room.
pub async fn answer_send_join(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    pdu: &RawValue,
) -> Result<create_join_event::v2::RoomState> {
    if !acl::allows(&services.rooms, room_id, origin).await? {
        return Err(Error::forbidden("The room's server ACL does not allow your server"));
    }
    let object: CanonicalJsonObject =
        serde_json::from_str(pdu.get()).map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
    let head = services.rooms.state.head(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    // As for make_join: only a server with a user in the room knows its current state.
    if !services.rooms.members.servers_of(room_id).await?.contains(&services.config.server_name) {
        return Err(Error::not_found("This server has no user in the room"));
    }
    let servers_in_room: Vec<String> =
        services.rooms.members.servers_of(room_id).await?.into_iter().map(|s| s.to_string()).collect();
    let computed =
        parley_federation::pdu::event_id(&object, &head.rules).map_err(|e| Error::bad_json(e.to_string()))?;
    if computed != *event_id {
        return Err(Error::bad_json("The event ID in the path is not the event's"));
    }
    let pdu = services.rooms.timeline.receive_membership(origin, room_id, object, "join").await?;
    let state: Vec<OwnedEventId> = history::state_before(services, &pdu).await?.into_values().collect();
    let mut chain_of = state.clone();
    chain_of.push(pdu.event_id.clone());
    let chain = services.storage.events.auth_chain(&chain_of).await?;
    let json = |events: Vec<crate::service::rooms::PduRef>| events.into_iter().map(|p| p.json.clone()).collect();
    let mut answer = create_join_event::v2::RoomState::new();
    answer.state = json(services.rooms.events.pdus(&state).await?);
    answer.auth_chain = json(services.rooms.events.pdus(&chain).await?);
    // The servers in the room before the join, as the spec asks.
    answer.servers_in_room = Some(servers_in_room);
    Ok(answer)
}

/// A local user's join, through this server when it is in the room (or the room has no
/// other server), else through a resident server: those in `via`, then the room ID's
/// server, then the servers of the room's members as last seen here.
pub async fn join(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    via: &[OwnedServerName],
    content: Map<String, JsonValue>,
) -> Result<bool> {
    let me = &services.config.server_name;
    let head = services.rooms.state.head(room_id).await?;
    let servers = match &head {
        Some(_) => services.rooms.members.servers_of(room_id).await?,
        None => Default::default(),
    };
    // A room nobody is in any more is joined here only if it was made here; one whose create
    // event came from elsewhere (a join that failed half-way, say) is joined through others.
    let made_here = match head.as_ref().and_then(|h| h.state_event("m.room.create", "").cloned()) {
        Some(create) => services.rooms.events.pdu(&create).await?.is_some_and(|c| c.sender.server_name() == me),
        None => false,
    };
    if services.federation.is_none() || servers.contains(me) || (servers.is_empty() && made_here) {
        return Ok(false);
    }
    // The server that invited the user is in the room: ask it first.
    let mut candidates: Vec<OwnedServerName> =
        super::invite::inviting_server(services, room_id, user_id).await?.into_iter().collect();
    candidates.extend(via.iter().cloned());
    candidates.extend(room_id.server_name().map(ToOwned::to_owned));
    candidates.extend(servers);
    join_remote(services, room_id, user_id, &candidates, content).await?;
    Ok(true)
}
