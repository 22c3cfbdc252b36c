//! Users' devices and keys, for other servers' users.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::federation::{
    device::get_devices,
    keys::{claim_keys, get_keys},
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(devices).ruma(query_keys).ruma(claim)
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1userdevicesuserid>
async fn devices(
    State(services): State<Arc<Services>>,
    req: Ruma<get_devices::v1::Request>,
) -> RumaResult<get_devices::v1::Response> {
    Ok(services.keys.devices_for_server(&req.body.user_id).await?.into())
}

/// `POST /_matrix/federation/v1/user/keys/query`
/// <https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1userkeysquery>
async fn query_keys(
    State(services): State<Arc<Services>>,
    req: Ruma<get_keys::v1::Request>,
) -> RumaResult<get_keys::v1::Response> {
    Ok(services.keys.query_for_server(&req.body.device_keys).await?.into())
}

/// `POST /_matrix/federation/v1/user/keys/claim`
/// <https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1userkeysclaim>
async fn claim(
    State(services): State<Arc<Services>>,
    req: Ruma<claim_keys::v1::Request>,
) -> RumaResult<claim_keys::v1::Response> {
    Ok(services.keys.claim_for_server(req.body.one_time_keys.clone()).await?.into())
}
