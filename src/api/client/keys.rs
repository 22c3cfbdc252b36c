//! End-to-end encryption keys: device and one-time keys, cross-signing, key changes.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(upload).ruma(query).ruma(claim).ruma(changes).ruma(upload_signing).ruma(upload_signed)
}

/// `POST /_matrix/client/v3/keys/upload`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysupload>
async fn upload(
    State(services): State<Arc<Services>>,
    req: Ruma<upload_keys::v3::Request>,
) -> RumaResult<upload_keys::v3::Response> {
    let counts = services.keys.upload(&req.auth, &req.body).await?;
    Ok(upload_keys::v3::Response::new(counts).into())
}

/// `POST /_matrix/client/v3/keys/query`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysquery>
async fn query(
    State(services): State<Arc<Services>>,
    req: Ruma<get_keys::v3::Request>,
) -> RumaResult<get_keys::v3::Response> {
    Ok(services.keys.query(&req.auth.user_id, &req.body).await?.into())
}

/// `POST /_matrix/client/v3/keys/claim`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysclaim>
async fn claim(
    State(services): State<Arc<Services>>,
    req: Ruma<claim_keys::v3::Request>,
) -> RumaResult<claim_keys::v3::Response> {
    Ok(services.keys.claim(&req.body).await?.into())
}

/// `GET /_matrix/client/v3/keys/changes`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3keyschanges>
async fn changes(
    State(services): State<Arc<Services>>,
    req: Ruma<get_key_changes::v3::Request>,
) -> RumaResult<get_key_changes::v3::Response> {
    let (changed, left) = services.keys.changes(&req.auth.user_id, &req.body).await?;
    Ok(get_key_changes::v3::Response::new(changed, left).into())
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysdevice_signingupload>
async fn upload_signing(
    State(services): State<Arc<Services>>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> RumaResult<upload_signing_keys::v3::Response> {
    services.keys.upload_signing_keys(&services.uiaa, &req.auth, &req.body).await?;
    Ok(upload_signing_keys::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keyssignaturesupload>
async fn upload_signed(
    State(services): State<Arc<Services>>,
    req: Ruma<upload_signatures::v3::Request>,
) -> RumaResult<upload_signatures::v3::Response> {
    let mut response = upload_signatures::v3::Response::new();
    response.failures = services.keys.upload_signatures(&req.auth, &req.body.signed_keys).await?;
    Ok(response.into())
}
