//! Answering `/_matrix/key/v2/query` as a notary: other servers' key responses, as they were
//! received (signed by their origin), with this server's signature added.

use ruma::{CanonicalJsonObject, ServerName, api::federation::discovery::ServerSigningKeys, serde::Raw};

use super::{KeyError, SigningKey};

/// Adds `notary`'s signature to each response, keeping the signatures already there (the
/// origin's, and any other notary's). The results go into the `server_keys` array of
/// `POST /_matrix/key/v2/query` or `GET /_matrix/key/v2/query/{serverName}`.
pub fn sign_as_notary(
    responses: impl IntoIterator<Item = CanonicalJsonObject>,
    notary: &ServerName,
    key: &SigningKey,
) -> Result<Vec<Raw<ServerSigningKeys>>, KeyError> {
    responses
        .into_iter()
        .map(|mut object| {
            key.sign_json(notary, &mut object)?;
            let json = serde_json::to_string(&object).map_err(|e| KeyError::Serialize(Box::new(e)))?;
            Raw::from_json_string(json).map_err(|e| KeyError::Serialize(Box::new(e)))
        })
        .collect()
}
