//! Room aliases and the public room directory.
//!
//! Owns no cache: aliases and listings are read from storage, room details from the state.

use std::sync::Arc;

use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde_json::Value as JsonValue;

use super::{members::Members, state::RoomState};
use crate::{
    config::Config,
    error::{Error, Result},
    service::now_ms,
    storage::Storage,
};

pub struct Directory {
    config: Arc<Config>,
    storage: Storage,
    state: Arc<RoomState>,
    members: Arc<Members>,
}

/// What the public room directory shows of a room.
#[derive(Clone, Debug)]
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    pub joined_members: i64,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub join_rule: Option<String>,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub room_type: Option<String>,
}

fn field(content: Option<JsonValue>, name: &str) -> Option<String> {
    content?.get(name)?.as_str().map(str::to_owned)
}

impl Directory {
    pub fn new(config: Arc<Config>, storage: Storage, state: Arc<RoomState>, members: Arc<Members>) -> Self {
        Self { config, storage, state, members }
    }

    /// Points a local alias at a room. Only members of the room may do so.
    pub async fn create_alias(&self, alias: &RoomAliasId, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        self.check_local_alias(alias)?;
        if !self.members.is_joined(room_id, user_id).await? {
            return Err(Error::forbidden("You must be in the room to give it an alias"));
        }
        if !self.storage.rooms.create_alias(alias, room_id, user_id, now_ms()).await? {
            return Err(Error::new(
                http::StatusCode::CONFLICT,
                ruma::api::error::ErrorKind::Unknown,
                "Room alias already exists",
            ));
        }
        Ok(())
    }

    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId> {
        if alias.server_name() != self.config.server_name {
            return Err(Error::not_found("Room alias not found: it is another server's"));
        }
        let (room_id, _) =
            self.storage.rooms.resolve_alias(alias).await?.ok_or_else(|| Error::not_found("Room alias not found"))?;
        Ok(room_id)
    }

    /// Removes an alias. Its creator may, and so may anyone with the power to change the
    /// room's canonical alias.
    pub async fn delete_alias(&self, alias: &RoomAliasId, user_id: &UserId) -> Result<()> {
        self.check_local_alias(alias)?;
        let (room_id, creator) =
            self.storage.rooms.resolve_alias(alias).await?.ok_or_else(|| Error::not_found("Room alias not found"))?;
        let allowed = creator == user_id || {
            let levels = self.state.power_levels(&room_id).await?;
            levels.user_can_send_state(user_id, ruma::events::StateEventType::RoomCanonicalAlias)
        };
        if !allowed {
            return Err(Error::forbidden("You may not remove this alias"));
        }
        self.storage.rooms.delete_alias(alias).await?;
        Ok(())
    }

    pub async fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<String>> {
        Ok(self.storage.rooms.room_aliases(room_id).await?)
    }

    fn check_local_alias(&self, alias: &RoomAliasId) -> Result<()> {
        if alias.server_name() != self.config.server_name {
            return Err(Error::invalid_param("Aliases must be on this server"));
        }
        Ok(())
    }

    /// Whether the room is listed in the public directory.
    pub async fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.storage.rooms.get(room_id).await?.ok_or_else(|| Error::not_found("Room not found"))?.is_public)
    }

    /// Lists or unlists a room. Needs the power to change the room's canonical alias, as
    /// other servers do.
    pub async fn set_published(&self, room_id: &RoomId, user_id: &UserId, public: bool) -> Result<()> {
        let levels = self.state.power_levels(room_id).await?;
        if !self.members.is_joined(room_id, user_id).await?
            || !levels.user_can_send_state(user_id, ruma::events::StateEventType::RoomCanonicalAlias)
        {
            return Err(Error::forbidden("You may not change the directory listing of this room"));
        }
        self.storage.rooms.set_public(room_id, public).await?;
        Ok(())
    }

    /// The public rooms, largest first, optionally matching `term` in name, topic or alias.
    pub async fn public_rooms(&self, term: Option<&str>) -> Result<Vec<PublicRoom>> {
        let term = term.map(str::to_lowercase).filter(|t| !t.is_empty());
        let mut rooms = Vec::new();
        for (room_id, joined_members) in self.storage.rooms.public_rooms().await? {
            let content = |event_type: &'static str| self.state.state_content::<JsonValue>(&room_id, event_type, "");
            let room = PublicRoom {
                name: field(content("m.room.name").await?, "name"),
                topic: field(content("m.room.topic").await?, "topic"),
                canonical_alias: field(content("m.room.canonical_alias").await?, "alias"),
                avatar_url: field(content("m.room.avatar").await?, "url"),
                join_rule: field(content("m.room.join_rules").await?, "join_rule"),
                world_readable: field(content("m.room.history_visibility").await?, "history_visibility").as_deref()
                    == Some("world_readable"),
                guest_can_join: field(content("m.room.guest_access").await?, "guest_access").as_deref()
                    == Some("can_join"),
                room_type: field(content("m.room.create").await?, "type"),
                room_id,
                joined_members,
            };
            if let Some(term) = &term {
                let haystack = [&room.name, &room.topic, &room.canonical_alias]
                    .iter()
                    .filter_map(|f| f.as_deref())
                    .any(|f| f.to_lowercase().contains(term.as_str()));
                if !haystack {
                    continue;
                }
            }
            rooms.push(room);
        }
        Ok(rooms)
    }
}
