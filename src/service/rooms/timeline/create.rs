//! `createRoom`: the sequence of initial events the spec prescribes, all appended under the
//! new room's lock so nothing interleaves.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId, events::TimelineEventType};
use serde_json::{Map, Value as JsonValue, json};

use super::{EventDraft, Timeline};
use crate::{
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, Result},
    service::now_ms,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// A validated createRoom request.
pub struct NewRoomRequest<'a> {
    pub creator: &'a UserId,
    /// The creator's profile, for their member event.
    pub profile: &'a [(String, JsonValue)],
    pub version: RoomVersionId,
    pub creation_content: Map<String, JsonValue>,
    pub preset: Preset,
    /// List the room in the public directory.
    pub publish: bool,
    pub power_level_override: Option<Map<String, JsonValue>>,
    /// `(type, state_key, content)`.
    pub initial_state: Vec<(String, String, JsonValue)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias: Option<OwnedRoomAliasId>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
}

impl Timeline {
    pub async fn create_room(&self, req: NewRoomRequest<'_>) -> Result<OwnedRoomId> {
        if !SUPPORTED_ROOM_VERSIONS.contains(&req.version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {} is not supported", req.version),
            ));
        }
        // Checked here for an early answer; reserving the alias below settles races.
        if let Some(alias) = &req.alias
            && self.storage.rooms.resolve_alias(alias).await?.is_some()
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::RoomInUse,
                "Room alias already taken",
            ));
        }
        // Users of other servers are invited once the room exists: their servers must sign
        // their invites (and, refusing, cannot stop the room being made).
        if req.invite.iter().any(|u| u.server_name() != self.config.server_name) && self.source.get().is_none() {
            return Err(Error::forbidden("This server does not federate: it cannot invite users of other servers"));
        }
        let rules = crate::service::rooms::RoomHead::rules_for(&req.version)?;

        let mut create = req.creation_content.clone();
        create.insert("room_version".into(), req.version.as_str().into());
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".into(), req.creator.as_str().into());
        }
        // The room's alias names the room in its canonical alias event, so it is reserved
        // only once every event is known to be valid, and released if writing them fails.
        let drafts = initial_events(&req, &rules);
        let (guard, planned) = self.plan_room(req.creator, &req.version, JsonValue::Object(create), drafts).await?;
        let room_id = guard.room_id().to_owned();
        if let Some(alias) = &req.alias
            && !self.storage.rooms.create_alias(alias, &room_id, req.creator, now_ms()).await?
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::RoomInUse,
                "Room alias already taken",
            ));
        }
        if let Err(e) = self.persist_planned(&guard, &req.version, req.creator, planned).await {
            if let Some(alias) = &req.alias {
                self.storage.rooms.delete_alias(alias).await?;
            }
            return Err(e);
        }
        drop(guard);
        if req.publish {
            self.storage.rooms.set_public(&room_id, true).await?;
        }
        for invitee in req.invite.iter().filter(|u| u.server_name() != self.config.server_name) {
            let mut content = Map::new();
            if req.is_direct {
                content.insert("is_direct".into(), true.into());
            }
            let change = super::membership::MembershipChange {
                room_id: &room_id,
                sender: req.creator,
                target: invitee,
                membership: "invite",
                reason: None,
                extra: content,
            };
            self.change_membership(change, &[]).await?;
        }
        Ok(room_id)
    }
}

/// The events after the create event, in the order the spec gives: the creator's join, power
/// levels, the canonical alias, the preset's join rules, history visibility and guest
/// access (unless `initial_state` sets them), `initial_state`, name, topic, invites.
fn initial_events(req: &NewRoomRequest<'_>, rules: &ruma::room_version_rules::RoomVersionRules) -> Vec<EventDraft> {
    let mut drafts = Vec::new();
    let mut member = Map::new();
    member.insert("membership".into(), "join".into());
    for (field, value) in req.profile {
        if field == "displayname" || field == "avatar_url" {
            member.insert(field.clone(), value.clone());
        }
    }
    drafts.push(EventDraft::state(TimelineEventType::RoomMember, req.creator.as_str(), JsonValue::Object(member)));

    let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
    let mut power = default_power_levels(req.creator, req.preset, privileged_creators);
    if req.preset == Preset::TrustedPrivateChat
        && let Some(users) = power.get_mut("users").and_then(JsonValue::as_object_mut)
    {
        for invitee in &req.invite {
            users.insert(invitee.to_string(), 100.into());
        }
    }
    if let Some(overrides) = &req.power_level_override {
        power.extend(overrides.clone());
    }
    drafts.push(EventDraft::state(TimelineEventType::RoomPowerLevels, "", JsonValue::Object(power)));

    if let Some(alias) = &req.alias {
        drafts.push(EventDraft::state(TimelineEventType::RoomCanonicalAlias, "", json!({ "alias": alias })));
    }
    let overridden = |event_type: &str| req.initial_state.iter().any(|(t, k, _)| t == event_type && k.is_empty());
    let (join_rule, guest_access) = match req.preset {
        Preset::PublicChat => ("public", "forbidden"),
        Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
    };
    for (event_type, content) in [
        (TimelineEventType::RoomJoinRules, json!({ "join_rule": join_rule })),
        (TimelineEventType::RoomHistoryVisibility, json!({ "history_visibility": "shared" })),
        (TimelineEventType::RoomGuestAccess, json!({ "guest_access": guest_access })),
    ] {
        if !overridden(&event_type.to_string()) {
            drafts.push(EventDraft::state(event_type, "", content));
        }
    }
    for (event_type, state_key, content) in &req.initial_state {
        drafts.push(EventDraft::state(event_type.as_str().into(), state_key.clone(), content.clone()));
    }
    if let Some(name) = &req.name {
        drafts.push(EventDraft::state(TimelineEventType::RoomName, "", json!({ "name": name })));
    }
    if let Some(topic) = &req.topic {
        drafts.push(EventDraft::state(TimelineEventType::RoomTopic, "", json!({ "topic": topic })));
    }
    // Users of this server only: the others' servers sign their invites (`create_room`).
    for invitee in req.invite.iter().filter(|u| u.server_name() == req.creator.server_name()) {
        let mut content = Map::new();
        content.insert("membership".into(), "invite".into());
        if req.is_direct {
            content.insert("is_direct".into(), true.into());
        }
        drafts.push(EventDraft::state(TimelineEventType::RoomMember, invitee.as_str(), JsonValue::Object(content)));
    }
    drafts
}

/// The spec's default power levels, with the creator at 100. From room version 12 creators
/// hold unlimited power by virtue of the create event and must not be listed.
fn default_power_levels(creator: &UserId, preset: Preset, privileged_creators: bool) -> Map<String, JsonValue> {
    let mut users = Map::new();
    if !privileged_creators {
        users.insert(creator.to_string(), 100.into());
    }
    let invite = if preset == Preset::PublicChat { 50 } else { 0 };
    let content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": invite,
        "notifications": { "room": 50 },
    });
    match content {
        JsonValue::Object(map) => map,
        _ => Map::new(),
    }
}
