//! User profiles: the whole profile, and single fields (`displayname`, `avatar_url` and the
//! extended profile fields of Matrix 1.16).

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    UserId,
    api::client::profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
    profile::{ProfileFieldValue, UserProfile},
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{Services, auth::AuthedUser, federation},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_profile).ruma(get_field).ruma(set_field).ruma(delete_field)
}

/// `GET /_matrix/client/v3/profile/{userId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuserid>
async fn get_profile(
    State(services): State<Arc<Services>>,
    req: Ruma<get_profile::v3::Request>,
) -> RumaResult<get_profile::v3::Response> {
    let profile = federation::query::profile(&services, &req.body.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    response.data = profile.into_iter().collect::<UserProfile>();
    Ok(response.into())
}

/// `GET /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuseridkeyname>
async fn get_field(
    State(services): State<Arc<Services>>,
    req: Ruma<get_profile_field::v3::Request>,
) -> RumaResult<get_profile_field::v3::Response> {
    let profile = federation::query::profile(&services, &req.body.user_id).await?;
    let field = req.body.field.as_str();
    let value = profile
        .into_iter()
        .find(|(name, _)| name == field)
        .ok_or_else(|| Error::not_found(format!("Profile field {field} is not set")))?
        .1;
    let value = ProfileFieldValue::new(field, value)?;
    Ok(get_profile_field::v3::Response::new(value).into())
}

/// `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3profileuseridkeyname>
async fn set_field(
    State(services): State<Arc<Services>>,
    req: Ruma<set_profile_field::v3::Request>,
) -> RumaResult<set_profile_field::v3::Response> {
    own_profile(&req.auth, &req.body.user_id)?;
    let value = &req.body.value;
    services
        .accounts
        .set_profile_field(&req.body.user_id, value.field_name().as_str(), Some(value.value().into_owned()))
        .await?;
    Ok(set_profile_field::v3::Response::new().into())
}

/// `DELETE /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3profileuseridkeyname>
async fn delete_field(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_profile_field::v3::Request>,
) -> RumaResult<delete_profile_field::v3::Response> {
    own_profile(&req.auth, &req.body.user_id)?;
    services.accounts.set_profile_field(&req.body.user_id, req.body.field.as_str(), None).await?;
    Ok(delete_profile_field::v3::Response::new().into())
}

fn own_profile(user: &AuthedUser, target: &UserId) -> Result<()> {
    if user.user_id != target {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    Ok(())
}
