//! Room aliases and the public room directory.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::Visibility,
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit, RoomTypeFilter},
    room::{JoinRuleKind, RoomType},
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{Services, federation, rooms::directory::PublicRoom},
};

/// Rooms per page when the client does not say.
const DEFAULT_LIMIT: usize = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(put_alias)
        .ruma(get_alias_handler)
        .ruma(delete_alias_handler)
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
        .ruma(get_visibility)
        .ruma(set_visibility)
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3directoryroomroomalias>
async fn put_alias(
    State(services): State<Arc<Services>>,
    req: Ruma<create_alias::v3::Request>,
) -> RumaResult<create_alias::v3::Response> {
    services.rooms.directory.create_alias(&req.body.room_alias, &req.body.room_id, &req.auth.user_id).await?;
    Ok(create_alias::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3directoryroomroomalias>
async fn get_alias_handler(
    State(services): State<Arc<Services>>,
    req: Ruma<get_alias::v3::Request>,
) -> RumaResult<get_alias::v3::Response> {
    let (room_id, servers) = federation::query::resolve_alias(&services, &req.body.room_alias).await?;
    Ok(get_alias::v3::Response::new(room_id, servers).into())
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3directoryroomroomalias>
async fn delete_alias_handler(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_alias::v3::Request>,
) -> RumaResult<delete_alias::v3::Response> {
    services.rooms.directory.delete_alias(&req.body.room_alias, &req.auth.user_id).await?;
    Ok(delete_alias::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/publicRooms`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3publicrooms>
async fn public_rooms(
    State(services): State<Arc<Services>>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> RumaResult<get_public_rooms::v3::Response> {
    check_local(&services, req.body.server.as_deref())?;
    let rooms = services.rooms.directory.public_rooms(None).await?;
    let (chunk, next_batch, prev_batch, total) = paginate(rooms, req.body.limit, req.body.since.as_deref())?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    (response.next_batch, response.prev_batch, response.total_room_count_estimate) = (next_batch, prev_batch, total);
    Ok(response.into())
}

/// `POST /_matrix/client/v3/publicRooms`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3publicrooms>
async fn public_rooms_filtered(
    State(services): State<Arc<Services>>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> RumaResult<get_public_rooms_filtered::v3::Response> {
    check_local(&services, req.body.server.as_deref())?;
    let filter = &req.body.filter;
    let mut rooms = services.rooms.directory.public_rooms(filter.generic_search_term.as_deref()).await?;
    if !filter.room_types.is_empty() {
        rooms.retain(|room| {
            filter.room_types.iter().any(|wanted| match wanted {
                RoomTypeFilter::Default => room.room_type.is_none(),
                other => room.room_type.as_deref() == other.as_str(),
            })
        });
    }
    let (chunk, next_batch, prev_batch, total) = paginate(rooms, req.body.limit, req.body.since.as_deref())?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    (response.chunk, response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        (chunk, next_batch, prev_batch, total);
    Ok(response.into())
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3directorylistroomroomid>
async fn get_visibility(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> RumaResult<get_room_visibility::v3::Response> {
    let public = services.rooms.directory.is_published(&req.body.room_id).await?;
    let visibility = if public { Visibility::Public } else { Visibility::Private };
    Ok(get_room_visibility::v3::Response::new(visibility).into())
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3directorylistroomroomid>
async fn set_visibility(
    State(services): State<Arc<Services>>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> RumaResult<set_room_visibility::v3::Response> {
    let public = match req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be public or private")),
    };
    services.rooms.directory.set_published(&req.body.room_id, &req.auth.user_id, public).await?;
    Ok(set_room_visibility::v3::Response::new().into())
}

/// The directory of another server needs federation.
fn check_local(services: &Services, server: Option<&ruma::ServerName>) -> Result<()> {
    match server {
        Some(server) if server != services.config.server_name => {
            Err(Error::not_found("This server does not federate yet, so other servers' directories are unavailable"))
        }
        _ => Ok(()),
    }
}

type Page = (Vec<PublicRoomsChunk>, Option<String>, Option<String>, Option<UInt>);

/// Offset pagination: `since` tokens are `o<offset>`.
fn paginate(rooms: Vec<PublicRoom>, limit: Option<UInt>, since: Option<&str>) -> Result<Page> {
    let total = rooms.len();
    let offset = match since {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(DEFAULT_LIMIT)).max(1);
    let chunk: Vec<PublicRoomsChunk> = rooms.into_iter().skip(offset).take(limit).map(to_chunk).collect();
    let next = (offset + chunk.len() < total).then(|| format!("o{}", offset + chunk.len()));
    let prev = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
    Ok((chunk, next, prev, UInt::try_from(total).ok()))
}

fn to_chunk(room: PublicRoom) -> PublicRoomsChunk {
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(room.joined_members.max(0)).unwrap_or_default(),
        room_id: room.room_id,
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    }
    .into();
    chunk.name = room.name;
    chunk.topic = room.topic;
    chunk.canonical_alias = room.canonical_alias.and_then(|a| a.try_into().ok());
    chunk.avatar_url = room.avatar_url.map(Into::into);
    chunk.join_rule = room.join_rule.map_or(JoinRuleKind::Public, |r| JoinRuleKind::from(r.as_str()));
    chunk.room_type = room.room_type.map(|t| RoomType::from(t.as_str()));
    chunk
}
