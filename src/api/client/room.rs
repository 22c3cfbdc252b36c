//! Creating rooms, and the room's alias list.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    OwnedRoomAliasId,
    api::client::room::{
        Visibility, aliases,
        create_room::{self, v3::RoomPreset},
    },
};
use serde_json::{Map, Value as JsonValue};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{
        Services,
        rooms::timeline::create::{NewRoomRequest, Preset},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(create).ruma(room_aliases)
}

fn object(raw: &serde_json::value::RawValue, what: &str) -> Result<Map<String, JsonValue>> {
    match serde_json::from_str(raw.get()) {
        Ok(JsonValue::Object(map)) => Ok(map),
        _ => Err(Error::bad_json(format!("{what} must be a JSON object"))),
    }
}

/// `POST /_matrix/client/v3/createRoom`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom>
async fn create(
    State(services): State<Arc<Services>>,
    req: Ruma<create_room::v3::Request>,
) -> RumaResult<create_room::v3::Response> {
    let body = &req.body;
    let creator = &req.auth.user_id;
    let preset = match &body.preset {
        Some(RoomPreset::PrivateChat) => Preset::PrivateChat,
        Some(RoomPreset::TrustedPrivateChat) => Preset::TrustedPrivateChat,
        Some(RoomPreset::PublicChat) => Preset::PublicChat,
        Some(other) => return Err(Error::bad_json(format!("Unknown preset {}", other.as_str()))),
        None if body.visibility == Visibility::Public => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let creation_content = match &body.creation_content {
        Some(raw) => object(raw.json(), "creation_content")?,
        None => Map::new(),
    };
    let power_level_override = body
        .power_level_content_override
        .as_ref()
        .map(|raw| object(raw.json(), "power_level_content_override"))
        .transpose()?;
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event = object(raw.json(), "initial_state event")?;
        let event_type = event
            .get("type")
            .and_then(JsonValue::as_str)
            .ok_or_else(|| Error::bad_json("initial_state event needs a type"))?;
        let state_key = event.get("state_key").and_then(JsonValue::as_str).unwrap_or_default();
        let content = event
            .get("content")
            .filter(|c| c.is_object())
            .ok_or_else(|| Error::bad_json("initial_state event needs content"))?;
        initial_state.push((event_type.to_owned(), state_key.to_owned(), content.clone()));
    }
    let alias = match &body.room_alias_name {
        Some(name) => Some(
            OwnedRoomAliasId::try_from(format!("#{name}:{}", services.config.server_name))
                .map_err(|_| Error::invalid_param("Invalid room_alias_name"))?,
        ),
        None => None,
    };
    if !body.invite_3pid.is_empty() {
        return Err(Error::invalid_param("Third-party invites are not supported"));
    }
    let profile = services.accounts.member_profile(creator).await?;
    let room_id = services
        .rooms
        .timeline
        .create_room(NewRoomRequest {
            creator,
            profile: &profile,
            version: body.room_version.clone().unwrap_or_else(|| services.config.rooms.default_version.clone()),
            creation_content,
            preset,
            publish: body.visibility == Visibility::Public,
            power_level_override,
            initial_state,
            name: body.name.clone(),
            topic: body.topic.clone(),
            alias,
            invite: body.invite.clone(),
            is_direct: body.is_direct,
        })
        .await?;
    Ok(create_room::v3::Response::new(room_id).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidaliases>
async fn room_aliases(
    State(services): State<Arc<Services>>,
    req: Ruma<aliases::v3::Request>,
) -> RumaResult<aliases::v3::Response> {
    let room_id = &req.body.room_id;
    if !services.rooms.members.is_joined(room_id, &req.auth.user_id).await?
        && !services.rooms.read.is_world_readable(room_id).await?
    {
        return Err(Error::forbidden("You are not in this room"));
    }
    let aliases = services
        .rooms
        .directory
        .room_aliases(room_id)
        .await?
        .into_iter()
        .filter_map(|a| OwnedRoomAliasId::try_from(a).ok())
        .collect();
    Ok(aliases::v3::Response::new(aliases).into())
}
