//! Server keys: this server's, and other servers' relayed as a notary.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
    },
    serde::Raw,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::{Error, Result},
    service::Services,
};

/// How long other servers may cache our keys before asking again.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Servers one notary query may ask about.
const MAX_NOTARY_SERVERS: usize = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(server_keys).ruma(query_one).ruma(query_batch)
}

/// `GET /_matrix/key/v2/server`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixkeyv2server>
async fn server_keys(
    State(services): State<Arc<Services>>,
    _: Ruma<get_server_keys::v2::Request>,
) -> RumaResult<get_server_keys::v2::Response> {
    Ok(get_server_keys::v2::Response::new(own_keys(&services)?).into())
}

/// `GET /_matrix/key/v2/query/{serverName}`
/// <https://spec.matrix.org/v1.19/server-server-api/#get_matrixkeyv2queryservername>
async fn query_one(
    State(services): State<Arc<Services>>,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> RumaResult<get_remote_server_keys::v2::Response> {
    let keys = notary_keys(&services, &req.body.server_name, Some(req.body.minimum_valid_until_ts)).await?;
    Ok(get_remote_server_keys::v2::Response::new(keys).into())
}

/// `POST /_matrix/key/v2/query`
/// <https://spec.matrix.org/v1.19/server-server-api/#post_matrixkeyv2query>
async fn query_batch(
    State(services): State<Arc<Services>>,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> RumaResult<get_remote_server_keys_batch::v2::Response> {
    if req.body.server_keys.len() > MAX_NOTARY_SERVERS {
        return Err(Error::bad_json(format!("Ask about at most {MAX_NOTARY_SERVERS} servers at once")));
    }
    let mut keys = Vec::new();
    for (server, criteria) in &req.body.server_keys {
        // The criteria per key ID share one bound: the latest asked for.
        let minimum = criteria.values().filter_map(|c| c.minimum_valid_until_ts).max();
        keys.extend(notary_keys(&services, server, minimum).await?);
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(keys).into())
}

/// This server's keys, signed by itself.
fn own_keys(services: &Services) -> Result<Raw<ServerSigningKeys>> {
    services
        .server_keys
        .signing_key()
        .server_keys(&services.config.server_name, MilliSecondsSinceUnixEpoch::now(), KEY_VALIDITY)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("signing the server keys")))
}

/// A server's keys as a notary gives them: as received from it, with this server's signature
/// added. This server's own keys are answered directly; a server whose keys cannot be had
/// gets an empty list, as the spec asks.
async fn notary_keys(
    services: &Services,
    server: &ServerName,
    minimum_valid_until_ts: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<Vec<Raw<ServerSigningKeys>>> {
    if server == services.config.server_name {
        return Ok(vec![own_keys(services)?]);
    }
    let Some(fetcher) = services.server_keys.fetcher() else { return Ok(Vec::new()) };
    let responses = match fetcher.notary_responses(server, minimum_valid_until_ts).await {
        Ok(responses) => responses,
        Err(e) => {
            tracing::info!(%server, error = %e, "no keys to relay");
            return Ok(Vec::new());
        }
    };
    parley_federation::keys::sign_as_notary(responses, &services.config.server_name, services.server_keys.signing_key())
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("signing a notary answer")))
}
