//! Account data (the global part; per-room account data comes with rooms).

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    UserId,
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
    },
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{Services, auth::AuthedUser},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_global).ruma(set_global).ruma(get_room).ruma(set_room)
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridaccount_datatype>
async fn get_global(
    State(services): State<Arc<Services>>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> RumaResult<get_global_account_data::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    let content = services.account_data.get(&req.auth.user_id, None, &req.body.event_type.to_string()).await?;
    Ok(get_global_account_data::v3::Response::new(ruma::serde::Raw::from_json(content)).into())
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridaccount_datatype>
async fn set_global(
    State(services): State<Arc<Services>>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> RumaResult<set_global_account_data::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    services.account_data.set(&req.auth.user_id, None, &req.body.event_type.to_string(), req.body.data.json()).await?;
    Ok(set_global_account_data::v3::Response::new().into())
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridroomsroomidaccount_datatype>
async fn get_room(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> RumaResult<get_room_account_data::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    let room_id = Some(&*req.body.room_id);
    let content = services.account_data.get(&req.auth.user_id, room_id, &req.body.event_type.to_string()).await?;
    Ok(get_room_account_data::v3::Response::new(ruma::serde::Raw::from_json(content)).into())
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridroomsroomidaccount_datatype>
async fn set_room(
    State(services): State<Arc<Services>>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> RumaResult<set_room_account_data::v3::Response> {
    own_data(&req.auth, &req.body.user_id)?;
    // Per-room data belongs to rooms the user knows: a member, or one who was.
    if services.rooms.members.membership(&req.body.room_id, &req.auth.user_id).await?.is_none() {
        return Err(Error::forbidden("You have never been in this room"));
    }
    let room_id = Some(&*req.body.room_id);
    services
        .account_data
        .set(&req.auth.user_id, room_id, &req.body.event_type.to_string(), req.body.data.json())
        .await?;
    Ok(set_room_account_data::v3::Response::new().into())
}

/// Account data is private to its owner.
pub(super) fn own_data(user: &AuthedUser, target: &UserId) -> Result<()> {
    if user.user_id != target {
        return Err(Error::forbidden("You may only access your own account data"));
    }
    Ok(())
}
