//! X-Matrix: checking that a request really comes from the server it names, and is meant for
//! this one (server-server API, "Request Authentication").

use ruma::{OwnedServerName, api::federation::authentication::XMatrix, signatures::PublicKeyMap};

use crate::{
    error::{Error, Result},
    service::{Services, now_ms},
};

/// The origin of a signed request, once its signature checks out with the origin's key (fetched
/// if this server lacks it) and its destination is this server. Anything else is
/// `401 M_UNAUTHORIZED`.
pub async fn verify_request(request: &http::Request<&[u8]>, services: &Services) -> Result<OwnedServerName> {
    let me = &services.config.server_name;
    let header = XMatrix::extract_from_http_headers(request.headers())
        .map_err(|e| Error::unauthorized(format!("Missing or malformed X-Matrix authorization: {e}")))?;
    if header.destination.as_ref().is_some_and(|destination| destination != me) {
        return Err(Error::unauthorized("The request is meant for another server"));
    }
    if header.origin == *me {
        return Err(Error::unauthorized("The request claims to come from this server"));
    }
    let keys = services.server_keys.keys_of(&header.origin, std::slice::from_ref(&header.key), now_ms()).await?;
    if keys.is_empty() {
        return Err(Error::unauthorized(format!("No valid key {} is known for {}", header.key, header.origin)));
    }
    let map = PublicKeyMap::from([(header.origin.to_string(), keys)]);
    header
        .verify_http_request(request, me, &map)
        .map_err(|e| Error::unauthorized(format!("The request's signature does not verify: {e}")))?;
    if let Some(federation) = &services.federation {
        federation.sender.server_up(&header.origin);
    }
    Ok(header.origin)
}
