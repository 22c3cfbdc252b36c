//! Logging in and out.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::client::{
    session::{
        get_login_types::{
            self,
            v3::{LoginType, PasswordLoginType},
        },
        login::{self, v3::LoginInfo},
        logout, logout_all,
    },
    uiaa::UserIdentifier,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(login_types).ruma(login).ruma(logout).ruma(logout_all)
}

/// `GET /_matrix/client/v3/login`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3login>
async fn login_types(
    _: State<Arc<Services>>,
    _: Ruma<get_login_types::v3::Request>,
) -> RumaResult<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![LoginType::Password(PasswordLoginType::new())]).into())
}

/// `POST /_matrix/client/v3/login`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3login>
///
/// Accepts `m.login.password` with the `m.id.user` identifier, or the deprecated top-level
/// `user` field. Each login makes a new device, unless `device_id` names one: then that
/// device's earlier token is replaced.
#[allow(deprecated)] // `user` is deprecated in the spec, but clients still send it.
async fn login(
    State(services): State<Arc<Services>>,
    req: Ruma<login::v3::Request>,
) -> RumaResult<login::v3::Response> {
    let LoginInfo::Password(password) = &req.body.login_info else {
        return Err(Error::bad_request("Only m.login.password is supported"));
    };
    let name = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => &id.user,
        (None, Some(user)) => user,
        (Some(_), _) => return Err(Error::forbidden("Only the m.id.user identifier is supported")),
        (None, None) => return Err(Error::bad_json("Missing identifier")),
    };
    let user_id = services.accounts.resolve_login_name(name)?;
    services.accounts.check_password(&user_id, &password.password).await?;
    let session = services
        .auth
        .issue(&user_id, req.body.device_id.as_deref(), req.body.initial_device_display_name.as_deref())
        .await?;
    Ok(login::v3::Response::new(user_id, session.access_token, session.device_id).into())
}

/// `POST /_matrix/client/v3/logout`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3logout>
async fn logout(
    State(services): State<Arc<Services>>,
    req: Ruma<logout::v3::Request>,
) -> RumaResult<logout::v3::Response> {
    services.auth.logout(&req.auth).await?;
    Ok(logout::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/logout/all`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3logoutall>
async fn logout_all(
    State(services): State<Arc<Services>>,
    req: Ruma<logout_all::v3::Request>,
) -> RumaResult<logout_all::v3::Response> {
    services.auth.logout_all(&req.auth.user_id).await?;
    Ok(logout_all::v3::Response::new().into())
}
