//! Membership changes of local users: join, invite, leave, kick, ban, unban, knock, forget.
//!
//! Each is one member event through the append path; whether it is allowed is decided by the
//! room version's auth rules, so the rules live in one place (ruma's state_res).

use ruma::{OwnedUserId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Map, Value as JsonValue};

use super::{EventDraft, Timeline};
use crate::error::{Error, Result};
use crate::service::rooms::PduRef;

/// A membership change one user makes to another's (or their own) membership.
pub struct MembershipChange<'a> {
    pub room_id: &'a RoomId,
    pub sender: &'a UserId,
    pub target: &'a UserId,
    pub membership: &'a str,
    pub reason: Option<&'a str>,
    /// Extra content fields (e.g. `is_direct` on invites).
    pub extra: Map<String, JsonValue>,
}

impl Timeline {
    /// Appends a member event. Joins and invites carry the target's profile, as clients
    /// expect to render names from member events.
    pub async fn change_membership(
        &self,
        change: MembershipChange<'_>,
        profile: &[(String, JsonValue)],
    ) -> Result<PduRef> {
        if self.state.head(change.room_id).await?.is_none() {
            return Err(Error::not_found("Room not found"));
        }
        let mut content = change.extra;
        content.insert("membership".into(), change.membership.into());
        if let Some(reason) = change.reason {
            content.insert("reason".into(), reason.into());
        }
        if matches!(change.membership, "join" | "invite" | "knock") {
            for (field, value) in profile {
                if field == "displayname" || field == "avatar_url" {
                    content.insert(field.clone(), value.clone());
                }
            }
        }
        if change.membership == "join" {
            self.add_join_authorisation(change.room_id, change.target, &mut content).await?;
        }
        let draft =
            EventDraft::state(TimelineEventType::RoomMember, change.target.as_str(), JsonValue::Object(content));
        // Inviting a user of another server means asking that server to sign the invite;
        // kicking or banning one is an event of this room alone.
        if change.target.server_name() != self.config.server_name && change.membership == "invite" {
            let guard = self.lock(change.room_id).await;
            return self.invite_remote(&guard, change.sender, draft).await;
        }
        self.append_locked(change.room_id, change.sender, draft, None).await
    }

    /// For rooms with a `restricted` join rule, names a local member who may invite as the
    /// authoriser of the join, when the joining user is in one of the allowed rooms. The auth
    /// rules then decide.
    async fn add_join_authorisation(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        content: &mut Map<String, JsonValue>,
    ) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct JoinRules {
            join_rule: String,
            #[serde(default)]
            allow: Vec<AllowRule>,
        }
        #[derive(serde::Deserialize)]
        struct AllowRule {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            room_id: Option<ruma::OwnedRoomId>,
        }
        let Some(rules) = self.state.state_content::<JoinRules>(room_id, "m.room.join_rules", "").await? else {
            return Ok(());
        };
        if !matches!(rules.join_rule.as_str(), "restricted" | "knock_restricted") {
            return Ok(());
        }
        if self
            .members
            .membership(room_id, user_id)
            .await?
            .is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite"))
        {
            return Ok(());
        }
        let mut qualifies = false;
        for rule in rules.allow.iter().filter(|r| r.kind == "m.room_membership") {
            if let Some(allowed) = &rule.room_id
                && self.members.is_joined(allowed, user_id).await?
            {
                qualifies = true;
                break;
            }
        }
        if !qualifies {
            return Ok(());
        }
        if let Some(authoriser) = self.local_member_who_can_invite(room_id).await? {
            content.insert("join_authorised_via_users_server".into(), authoriser.as_str().into());
        }
        Ok(())
    }

    async fn local_member_who_can_invite(&self, room_id: &RoomId) -> Result<Option<OwnedUserId>> {
        let levels = self.state.power_levels(room_id).await?;
        let members = self.members.room_members(room_id, &["join"]).await?;
        Ok(members
            .into_iter()
            .map(|m| m.user_id)
            .filter(|user| user.server_name() == self.config.server_name)
            .find(|user| levels.user_can_invite(user)))
    }

    /// The user's current displayname and avatar in every room they are joined to, after
    /// a profile change.
    pub async fn propagate_profile(&self, user_id: &UserId, profile: &[(String, JsonValue)]) -> Result<()> {
        for room in self.members.user_rooms(user_id, &["join"]).await? {
            let change = MembershipChange {
                room_id: &room.room_id,
                sender: user_id,
                target: user_id,
                membership: "join",
                reason: None,
                extra: Map::new(),
            };
            if let Err(e) = self.change_membership(change, profile).await {
                tracing::warn!(%user_id, room_id = %room.room_id, error = %e, "could not update member event");
            }
        }
        Ok(())
    }

    /// Leaves every room and rejects every invite; used when an account is deactivated.
    pub async fn leave_all(&self, user_id: &UserId) -> Result<()> {
        for room in self.members.user_rooms(user_id, &["join", "invite", "knock"]).await? {
            let change = MembershipChange {
                room_id: &room.room_id,
                sender: user_id,
                target: user_id,
                membership: "leave",
                reason: None,
                extra: Map::new(),
            };
            if let Err(e) = self.change_membership(change, &[]).await {
                tracing::warn!(%user_id, room_id = %room.room_id, error = %e, "could not leave room");
            }
        }
        Ok(())
    }
}
