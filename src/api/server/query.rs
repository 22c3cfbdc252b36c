//! Profiles and room aliases, for other servers.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    api::federation::query::{get_profile_information, get_room_information},
    profile::{ProfileFieldName, UserProfile},
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::{Services, federation},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(profile).ruma(directory)
}

/// `GET /_matrix/federation/v1/query/profile`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1queryprofile>
async fn profile(
    State(services): State<Arc<Services>>,
    req: Ruma<get_profile_information::v1::Request>,
) -> RumaResult<get_profile_information::v1::Response> {
    let user_id = &req.body.user_id;
    if user_id.server_name() != services.config.server_name {
        return Err(Error::not_found("Not a user of this server"));
    }
    let fields = services.accounts.profile(user_id).await?;
    let wanted = |name: &str| req.body.field.as_ref().is_none_or(|f: &ProfileFieldName| f.as_str() == name);
    let mut response = get_profile_information::v1::Response::new();
    response.data = fields.into_iter().filter(|(name, _)| wanted(name)).collect::<UserProfile>();
    Ok(response.into())
}

/// `GET /_matrix/federation/v1/query/directory`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1querydirectory>
async fn directory(
    State(services): State<Arc<Services>>,
    req: Ruma<get_room_information::v1::Request>,
) -> RumaResult<get_room_information::v1::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != services.config.server_name {
        return Err(Error::not_found("Not an alias of this server"));
    }
    let (room_id, servers) = federation::query::resolve_alias(&services, alias).await?;
    Ok(get_room_information::v1::Response::new(room_id, servers).into())
}
