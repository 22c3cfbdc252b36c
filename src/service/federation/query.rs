//! Lookups that cross servers: a user's profile and a room alias, answered here for local
//! ones and asked of the owning server for others.

use ruma::{
    OwnedRoomId, OwnedServerName, RoomAliasId, UserId,
    api::federation::query::{get_profile_information, get_room_information},
};
use serde_json::Value as JsonValue;

use crate::{
    error::{Error, Result},
    service::Services,
};

/// A user's profile fields: from the accounts of this server, or from the user's server.
pub async fn profile(services: &Services, user_id: &UserId) -> Result<Vec<(String, JsonValue)>> {
    if user_id.server_name() == services.config.server_name {
        return services.accounts.profile(user_id).await;
    }
    let Some(federation) = &services.federation else {
        return Err(Error::not_found("Profile not found (this server does not federate)"));
    };
    let answer = federation
        .client
        .send(user_id.server_name(), get_profile_information::v1::Request::new(user_id.to_owned()))
        .await
        .map_err(|e| match e.status().map(|s| s.as_u16()) {
            Some(404) => Error::not_found("Profile not found"),
            _ => Error::not_found(format!("The user's server could not be asked: {e}")),
        })?;
    Ok(answer.data.into_iter().collect())
}

/// The room an alias points to, and servers that can be asked to join it: from this server's
/// aliases, or from the alias's server.
pub async fn resolve_alias(services: &Services, alias: &RoomAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    if alias.server_name() == services.config.server_name {
        let room_id = services.rooms.directory.resolve_alias(alias).await?;
        let mut servers: Vec<OwnedServerName> =
            services.rooms.members.servers_of(&room_id).await?.into_iter().collect();
        servers.retain(|s| *s != services.config.server_name);
        servers.sort();
        servers.insert(0, services.config.server_name.clone());
        return Ok((room_id, servers));
    }
    let Some(federation) = &services.federation else {
        return Err(Error::not_found("Room alias not found (this server does not federate)"));
    };
    let answer = federation
        .client
        .send(alias.server_name(), get_room_information::v1::Request::new(alias.to_owned()))
        .await
        .map_err(|e| match e.status().map(|s| s.as_u16()) {
            Some(404) => Error::not_found("Room alias not found"),
            _ => Error::not_found(format!("The alias's server could not be asked: {e}")),
        })?;
    Ok((answer.room_id, answer.servers))
}
