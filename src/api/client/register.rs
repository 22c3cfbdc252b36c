//! Account registration.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::{
    client::{
        account::{
            check_registration_token_validity, get_username_availability,
            register::{self, RegistrationKind},
        },
        uiaa::{AuthFlow, AuthType},
    },
    error::ErrorKind,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    config::RegistrationMode,
    error::Error,
    service::{Services, accounts::NewAccount, uiaa::UiaaRequest},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(register).ruma(username_available).ruma(registration_token_validity)
}

/// `POST /_matrix/client/v3/register`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3register>
///
/// User-interactive: `m.login.dummy` when registration is open, `m.login.registration_token`
/// when it is token-gated. Guests are refused.
async fn register(
    State(services): State<Arc<Services>>,
    req: Ruma<register::v3::Request>,
) -> RumaResult<register::v3::Response> {
    let body = &req.body;
    if body.kind == RegistrationKind::Guest {
        return Err(Error::matrix(ErrorKind::GuestAccessForbidden, "Guest access is not allowed"));
    }
    let stage = match services.config.registration.mode {
        RegistrationMode::Disabled => return Err(Error::forbidden("Registration is disabled")),
        RegistrationMode::Open => AuthType::Dummy,
        RegistrationMode::Token => AuthType::RegistrationToken,
    };
    // Report a bad or taken username before the client goes through the auth stages.
    if let Some(username) = &body.username {
        services.accounts.check_available(username).await?;
    }
    let completed = services
        .uiaa
        .authenticate(UiaaRequest {
            scope: "register",
            user_id: None,
            flows: vec![AuthFlow::new(vec![stage])],
            auth: body.auth.as_ref(),
        })
        .await?;
    let password = body.password.as_deref().ok_or_else(|| Error::missing_param("Missing password"))?;
    let user_id = services
        .accounts
        .create(NewAccount {
            localpart: body.username.as_deref(),
            password: Some(password),
            is_admin: false,
            registration_token_hash: completed.registration_token_hash,
        })
        .await?;
    tracing::info!(%user_id, "registered");

    let mut response = register::v3::Response::new(user_id.clone());
    if !body.inhibit_login {
        let session = services
            .auth
            .issue(&user_id, body.device_id.as_deref(), body.initial_device_display_name.as_deref())
            .await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
    }
    Ok(response.into())
}

/// `GET /_matrix/client/v3/register/available`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3registeravailable>
async fn username_available(
    State(services): State<Arc<Services>>,
    req: Ruma<get_username_availability::v3::Request>,
) -> RumaResult<get_username_availability::v3::Response> {
    services.accounts.check_available(&req.username).await?;
    Ok(get_username_availability::v3::Response::new(true).into())
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1registermloginregistration_tokenvalidity>
async fn registration_token_validity(
    State(services): State<Arc<Services>>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> RumaResult<check_registration_token_validity::v1::Response> {
    if services.config.registration.mode == RegistrationMode::Disabled {
        return Err(Error::forbidden("Registration is disabled"));
    }
    let valid = services.accounts.registration_token_is_valid(&req.token).await?;
    Ok(check_registration_token_validity::v1::Response::new(valid).into())
}
