//! The server's public signing keys.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State};
use ruma::{MilliSecondsSinceUnixEpoch, api::federation::discovery::get_server_keys};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Error,
    service::Services,
};

/// How long other servers may cache our keys before asking again.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(server_keys)
}

/// `GET /_matrix/key/v2/server`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixkeyv2server>
async fn server_keys(
    State(services): State<Arc<Services>>,
    _: Ruma<get_server_keys::v2::Request>,
) -> RumaResult<get_server_keys::v2::Response> {
    let keys = services
        .server_keys
        .signing_key()
        .server_keys(&services.config.server_name, MilliSecondsSinceUnixEpoch::now(), KEY_VALIDITY)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("signing the server keys")))?;
    Ok(get_server_keys::v2::Response::new(keys).into())
}
