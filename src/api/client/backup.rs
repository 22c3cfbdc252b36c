//! Server-side key backups: versions, and keys at the three levels (all, room, session).

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::client::backup::{
    add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version, delete_backup_keys,
    delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version, get_backup_info,
    get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
    update_backup_version,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    service::Services,
    storage::backup::KeyScope,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(create_version)
        .ruma(latest_version)
        .ruma(get_version)
        .ruma(update_version)
        .ruma(delete_version)
        .ruma(put_all)
        .ruma(put_room)
        .ruma(put_session)
        .ruma(get_all)
        .ruma(get_room)
        .ruma(get_session)
        .ruma(delete_all)
        .ruma(delete_room)
        .ruma(delete_session)
}

/// `POST /_matrix/client/v3/room_keys/version`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3room_keysversion>
async fn create_version(
    State(services): State<Arc<Services>>,
    req: Ruma<create_backup_version::v3::Request>,
) -> RumaResult<create_backup_version::v3::Response> {
    let version = services.backup.create_version(&req.auth.user_id, &req.body.algorithm).await?;
    Ok(create_backup_version::v3::Response::new(version).into())
}

/// `GET /_matrix/client/v3/room_keys/version`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversion>
async fn latest_version(
    State(services): State<Arc<Services>>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> RumaResult<get_latest_backup_info::v3::Response> {
    let info = services.backup.version(&req.auth.user_id, None).await?;
    Ok(get_latest_backup_info::v3::Response::new(info.algorithm, info.count, info.etag, info.version).into())
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversionversion>
async fn get_version(
    State(services): State<Arc<Services>>,
    req: Ruma<get_backup_info::v3::Request>,
) -> RumaResult<get_backup_info::v3::Response> {
    let info = services.backup.version(&req.auth.user_id, Some(&req.body.version)).await?;
    Ok(get_backup_info::v3::Response::new(info.algorithm, info.count, info.etag, info.version).into())
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keysversionversion>
async fn update_version(
    State(services): State<Arc<Services>>,
    req: Ruma<update_backup_version::v3::Request>,
) -> RumaResult<update_backup_version::v3::Response> {
    services.backup.update_version(&req.auth.user_id, &req.body.version, &req.body.algorithm).await?;
    Ok(update_backup_version::v3::Response::new().into())
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keysversionversion>
async fn delete_version(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> RumaResult<delete_backup_version::v3::Response> {
    services.backup.delete_version(&req.auth.user_id, &req.body.version).await?;
    Ok(delete_backup_version::v3::Response::new().into())
}

/// `PUT /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeys>
async fn put_all(
    State(services): State<Arc<Services>>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> RumaResult<add_backup_keys::v3::Response> {
    let mut keys = Vec::new();
    for (room_id, room) in &req.body.rooms {
        keys.extend(room.sessions.iter().map(|(session_id, data)| (room_id.clone(), session_id.clone(), data)));
    }
    let (etag, count) = services.backup.put_keys(&req.auth.user_id, &req.body.version, keys).await?;
    Ok(add_backup_keys::v3::Response::new(etag, count).into())
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeysroomid>
async fn put_room(
    State(services): State<Arc<Services>>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> RumaResult<add_backup_keys_for_room::v3::Response> {
    let body = &req.body;
    let keys =
        body.sessions.iter().map(|(session_id, data)| (body.room_id.clone(), session_id.clone(), data)).collect();
    let (etag, count) = services.backup.put_keys(&req.auth.user_id, &body.version, keys).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count).into())
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeysroomidsessionid>
async fn put_session(
    State(services): State<Arc<Services>>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> RumaResult<add_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let keys = vec![(body.room_id.clone(), body.session_id.clone(), &body.session_data)];
    let (etag, count) = services.backup.put_keys(&req.auth.user_id, &body.version, keys).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count).into())
}

/// `GET /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeys>
async fn get_all(
    State(services): State<Arc<Services>>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> RumaResult<get_backup_keys::v3::Response> {
    let rooms = services.backup.all_keys(&req.auth.user_id, &req.body.version).await?;
    Ok(get_backup_keys::v3::Response::new(rooms).into())
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeysroomid>
async fn get_room(
    State(services): State<Arc<Services>>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> RumaResult<get_backup_keys_for_room::v3::Response> {
    let sessions = services.backup.room_keys(&req.auth.user_id, &req.body.version, &req.body.room_id).await?;
    Ok(get_backup_keys_for_room::v3::Response::new(sessions).into())
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeysroomidsessionid>
async fn get_session(
    State(services): State<Arc<Services>>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> RumaResult<get_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let key = services.backup.session_key(&req.auth.user_id, &body.version, &body.room_id, &body.session_id).await?;
    Ok(get_backup_keys_for_session::v3::Response::new(key).into())
}

/// `DELETE /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeys>
async fn delete_all(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> RumaResult<delete_backup_keys::v3::Response> {
    let (etag, count) = services.backup.delete_keys(&req.auth.user_id, &req.body.version, KeyScope::All).await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count).into())
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeysroomid>
async fn delete_room(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> RumaResult<delete_backup_keys_for_room::v3::Response> {
    let body = &req.body;
    let scope = KeyScope::Room(&body.room_id);
    let (etag, count) = services.backup.delete_keys(&req.auth.user_id, &body.version, scope).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count).into())
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeysroomidsessionid>
async fn delete_session(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> RumaResult<delete_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let scope = KeyScope::Session(&body.room_id, &body.session_id);
    let (etag, count) = services.backup.delete_keys(&req.auth.user_id, &body.version, scope).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, count).into())
}
