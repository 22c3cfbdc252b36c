//! Room membership: joining, inviting, leaving, kicking, banning, knocking, forgetting, and
//! the member lists.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, RoomOrAliasId, UserId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events,
            invite_user::{self, v3::InvitationRecipient},
            join_room_by_id, join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
        },
    },
    serde::Raw,
};
use serde_json::{Map, Value as JsonValue};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{Services, federation, rooms::read::PageToken, rooms::timeline::membership::MembershipChange},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(join_by_id)
        .ruma(join_by_id_or_alias)
        .ruma(invite)
        .ruma(leave)
        .ruma(kick)
        .ruma(ban)
        .ruma(unban)
        .ruma(knock)
        .ruma(forget)
        .ruma(joined)
        .ruma(members)
        .ruma(joined_members_list)
}

/// Changes `target`'s membership as `sender`, with the target's profile on joins and invites.
async fn change(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
    extra: Map<String, JsonValue>,
) -> Result<()> {
    let profile = match membership {
        "join" | "invite" | "knock" => services.accounts.member_profile(target).await?,
        _ => Vec::new(),
    };
    let change = MembershipChange { room_id, sender, target, membership, reason, extra };
    services.rooms.timeline.change_membership(change, &profile).await?;
    Ok(())
}

/// The room an ID or alias names, with servers that may be in it.
async fn resolve_room(services: &Services, room: &RoomOrAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    match <&RoomId>::try_from(room) {
        Ok(room_id) => Ok((room_id.to_owned(), Vec::new())),
        Err(alias) => federation::query::resolve_alias(services, alias).await,
    }
}

/// Joins `user` to the room: through another server when this one is not in the room,
/// else here.
async fn join(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    reason: Option<&str>,
) -> Result<()> {
    let mut content = Map::new();
    for (field, value) in services.accounts.member_profile(user).await? {
        content.insert(field, value);
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), reason.into());
    }
    if federation::membership::join(services, room_id, user, via, content).await? {
        return Ok(());
    }
    change(services, room_id, user, user, "join", reason, Map::new()).await
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidjoin>
async fn join_by_id(
    State(services): State<Arc<Services>>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> RumaResult<join_room_by_id::v3::Response> {
    join(&services, &req.body.room_id, &req.auth.user_id, &[], req.body.reason.as_deref()).await?;
    Ok(join_room_by_id::v3::Response::new(req.body.room_id.clone()).into())
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3joinroomidoralias>
async fn join_by_id_or_alias(
    State(services): State<Arc<Services>>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> RumaResult<join_room_by_id_or_alias::v3::Response> {
    let (room_id, mut servers) = resolve_room(&services, &req.body.room_id_or_alias).await?;
    servers.splice(0..0, req.body.via.iter().cloned());
    join(&services, &room_id, &req.auth.user_id, &servers, req.body.reason.as_deref()).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id).into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidinvite>
async fn invite(
    State(services): State<Arc<Services>>,
    req: Ruma<invite_user::v3::Request>,
) -> RumaResult<invite_user::v3::Response> {
    let InvitationRecipient::UserId(recipient) = &req.body.recipient else {
        return Err(Error::unsupported("Third-party invites are not supported"));
    };
    let target = &recipient.user_id;
    if services.accounts.get(target).await?.is_none_or(|u| u.deactivated) {
        return Err(Error::not_found("No such user"));
    }
    let reason = recipient.reason.as_deref();
    change(&services, &req.body.room_id, &req.auth.user_id, target, "invite", reason, Map::new()).await?;
    Ok(invite_user::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidleave>
async fn leave(
    State(services): State<Arc<Services>>,
    req: Ruma<leave_room::v3::Request>,
) -> RumaResult<leave_room::v3::Response> {
    let user = &req.auth.user_id;
    // An invite from another server to a room this server does not have is rejected here.
    if federation::invite::reject_locally(&services, &req.body.room_id, user).await? {
        return Ok(leave_room::v3::Response::new().into());
    }
    if services.rooms.members.membership(&req.body.room_id, user).await?.is_none_or(|m| m.membership == "leave") {
        return Err(Error::forbidden("You are not in this room"));
    }
    change(&services, &req.body.room_id, user, user, "leave", req.body.reason.as_deref(), Map::new()).await?;
    Ok(leave_room::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidkick>
async fn kick(
    State(services): State<Arc<Services>>,
    req: Ruma<kick_user::v3::Request>,
) -> RumaResult<kick_user::v3::Response> {
    let target = &req.body.user_id;
    if !services
        .rooms
        .members
        .membership(&req.body.room_id, target)
        .await?
        .is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
    {
        return Err(Error::forbidden("The user is not in the room"));
    }
    change(&services, &req.body.room_id, &req.auth.user_id, target, "leave", req.body.reason.as_deref(), Map::new())
        .await?;
    Ok(kick_user::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidban>
async fn ban(
    State(services): State<Arc<Services>>,
    req: Ruma<ban_user::v3::Request>,
) -> RumaResult<ban_user::v3::Response> {
    change(
        &services,
        &req.body.room_id,
        &req.auth.user_id,
        &req.body.user_id,
        "ban",
        req.body.reason.as_deref(),
        Map::new(),
    )
    .await?;
    Ok(ban_user::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidunban>
async fn unban(
    State(services): State<Arc<Services>>,
    req: Ruma<unban_user::v3::Request>,
) -> RumaResult<unban_user::v3::Response> {
    let target = &req.body.user_id;
    if services.rooms.members.membership(&req.body.room_id, target).await?.is_none_or(|m| m.membership != "ban") {
        return Err(Error::forbidden("The user is not banned"));
    }
    change(&services, &req.body.room_id, &req.auth.user_id, target, "leave", req.body.reason.as_deref(), Map::new())
        .await?;
    Ok(unban_user::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3knockroomidoralias>
async fn knock(
    State(services): State<Arc<Services>>,
    req: Ruma<knock_room::v3::Request>,
) -> RumaResult<knock_room::v3::Response> {
    let (room_id, _) = resolve_room(&services, &req.body.room_id_or_alias).await?;
    let user = &req.auth.user_id;
    change(&services, &room_id, user, user, "knock", req.body.reason.as_deref(), Map::new()).await?;
    Ok(knock_room::v3::Response::new(room_id).into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidforget>
async fn forget(
    State(services): State<Arc<Services>>,
    req: Ruma<forget_room::v3::Request>,
) -> RumaResult<forget_room::v3::Response> {
    services.rooms.members.forget(&req.body.room_id, &req.auth.user_id).await?;
    Ok(forget_room::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/joined_rooms`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3joined_rooms>
async fn joined(
    State(services): State<Arc<Services>>,
    req: Ruma<joined_rooms::v3::Request>,
) -> RumaResult<joined_rooms::v3::Response> {
    let rooms = services.rooms.members.user_rooms(&req.auth.user_id, &["join"]).await?;
    Ok(joined_rooms::v3::Response::new(rooms.into_iter().map(|m| m.room_id).collect()).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmembers>
///
/// Current members for joined users; for users who left, the members when they left. `at`
/// gives the members at a point of the timeline.
async fn members(
    State(services): State<Arc<Services>>,
    req: Ruma<get_member_events::v3::Request>,
) -> RumaResult<get_member_events::v3::Response> {
    let room_id = &req.body.room_id;
    let at = req.body.at.as_deref().map(str::parse::<PageToken>).transpose()?;
    let state = services.rooms.read.readable_state(room_id, &req.auth.user_id, at).await?;
    // Either filter alone includes or excludes one membership; given together, "the two
    // parameters create an 'or' condition: either the membership *is* the same as
    // `membership` **or** *is not* the same as `not_membership`" (spec).
    let wanted = |membership: &str| match (&req.body.membership, &req.body.not_membership) {
        (Some(is), Some(is_not)) => is.as_str() == membership || is_not.as_str() != membership,
        (Some(is), None) => is.as_str() == membership,
        (None, Some(is_not)) => is_not.as_str() != membership,
        (None, None) => true,
    };
    let members: Vec<_> = state
        .into_iter()
        .filter(|pdu| pdu.event_type == ruma::events::TimelineEventType::RoomMember)
        .filter(|pdu| pdu.membership().is_some_and(|m| wanted(&m)))
        .collect();
    let chunk =
        services.rooms.read.client_events(req.auth.viewer(), &members).await?.into_iter().map(Raw::from_json).collect();
    Ok(get_member_events::v3::Response::new(chunk).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidjoined_members>
async fn joined_members_list(
    State(services): State<Arc<Services>>,
    req: Ruma<joined_members::v3::Request>,
) -> RumaResult<joined_members::v3::Response> {
    let room_id = &req.body.room_id;
    if !services.rooms.members.is_joined(room_id, &req.auth.user_id).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    #[derive(serde::Deserialize)]
    struct Member {
        displayname: Option<String>,
        avatar_url: Option<ruma::OwnedMxcUri>,
    }
    let mut joined = std::collections::BTreeMap::new();
    for pdu in services.rooms.state.current_state(room_id).await? {
        if pdu.membership().as_deref() != Some("join") {
            continue;
        }
        let Some(user_id) = pdu.state_key.as_deref().and_then(|k| ruma::OwnedUserId::try_from(k).ok()) else {
            continue;
        };
        let content = pdu.content_as::<Member>();
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = content.as_ref().and_then(|c| c.displayname.clone());
        member.avatar_url = content.and_then(|c| c.avatar_url);
        joined.insert(user_id, member);
    }
    Ok(joined_members::v3::Response::new(joined).into())
}
