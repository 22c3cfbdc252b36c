//! The logged-in account: whoami, password change, deactivation.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    OwnedUserId,
    api::client::{
        account::{ThirdPartyIdRemovalStatus, change_password, deactivate, whoami},
        uiaa::{AuthData, AuthFlow, AuthType, UserIdentifier},
    },
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::{Services, auth::AuthedUser, uiaa::UiaaRequest},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(whoami).ruma(change_password).ruma(deactivate)
}

/// `GET /_matrix/client/v3/account/whoami`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3accountwhoami>
async fn whoami(_: State<Arc<Services>>, req: Ruma<whoami::v3::Request>) -> RumaResult<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(req.auth.user_id.clone(), false);
    response.device_id = Some(req.auth.device_id);
    Ok(response.into())
}

/// `POST /_matrix/client/v3/account/password`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountpassword>
///
/// Needs the current password (UIA `m.login.password`). Other devices are logged out unless
/// `logout_devices` is false; their devices stay.
async fn change_password(
    State(services): State<Arc<Services>>,
    req: Ruma<change_password::v3::Request>,
) -> RumaResult<change_password::v3::Response> {
    let user_id = acting_user(&services, req.auth.as_ref(), req.body.auth.as_ref())?;
    services
        .uiaa
        .authenticate(UiaaRequest {
            scope: "change_password",
            user_id: Some(&user_id),
            flows: vec![AuthFlow::new(vec![AuthType::Password])],
            auth: req.body.auth.as_ref(),
        })
        .await?;
    services.accounts.set_password(&user_id, &req.body.new_password).await?;
    if req.body.logout_devices {
        let keep = req.auth.as_ref().map(|a| &*a.device_id);
        services.devices.revoke_other_tokens(&user_id, keep).await?;
    }
    Ok(change_password::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/account/deactivate`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountdeactivate>
async fn deactivate(
    State(services): State<Arc<Services>>,
    req: Ruma<deactivate::v3::Request>,
) -> RumaResult<deactivate::v3::Response> {
    let user_id = acting_user(&services, req.auth.as_ref(), req.body.auth.as_ref())?;
    services
        .uiaa
        .authenticate(UiaaRequest {
            scope: "deactivate",
            user_id: Some(&user_id),
            flows: vec![AuthFlow::new(vec![AuthType::Password])],
            auth: req.body.auth.as_ref(),
        })
        .await?;
    services.accounts.deactivate(&user_id).await?;
    tracing::info!(%user_id, "deactivated");
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

/// These endpoints accept a request without an access token, in which case the password
/// stage alone says who is acting.
fn acting_user(services: &Services, auth: Option<&AuthedUser>, uiaa: Option<&AuthData>) -> Result<OwnedUserId> {
    if let Some(user) = auth {
        return Ok(user.user_id.clone());
    }
    match uiaa {
        Some(AuthData::Password(password)) => match &password.identifier {
            UserIdentifier::Matrix(id) => services.accounts.resolve_login_name(&id.user),
            _ => Err(Error::forbidden("Only the m.id.user identifier is supported")),
        },
        _ => Err(Error::missing_token()),
    }
}
