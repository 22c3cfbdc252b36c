//! How other servers find and identify this one.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::federation::discovery::{discover_homeserver, get_server_version};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(version).ruma(well_known)
}

/// `GET /_matrix/federation/v1/version`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1version>
async fn version(
    _: State<Arc<Services>>,
    _: Ruma<get_server_version::v1::Request>,
) -> RumaResult<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Parley".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response.into())
}

/// `GET /.well-known/matrix/server`: where other servers should connect, when configured.
/// <https://spec.matrix.org/v1.19/server-server-api/#getwell-knownmatrixserver>
async fn well_known(
    State(services): State<Arc<Services>>,
    _: Ruma<discover_homeserver::Request>,
) -> RumaResult<discover_homeserver::Response> {
    let delegated =
        services.config.federation.well_known_server.as_deref().ok_or_else(|| Error::not_found("No delegation"))?;
    let server = delegated.try_into().map_err(|e| Error::internal(format!("federation.well_known_server: {e}")))?;
    Ok(discover_homeserver::Response::new(server).into())
}
