//! What can go wrong sending a federation request.

use std::net::IpAddr;

use http::StatusCode;
use ruma::OwnedServerName;

use crate::discovery::DiscoveryError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The destination's address could not be found (server discovery, or the A/AAAA lookup of
    /// the host it gave).
    #[error("could not find {server}")]
    Discovery {
        server: OwnedServerName,
        #[source]
        source: DiscoveryError,
    },
    /// Every address of the destination is refused by the IP filter; nothing was sent.
    #[error("{server} resolves only to blocked addresses {addresses:?}")]
    Blocked { server: OwnedServerName, addresses: Vec<IpAddr> },
    /// Connecting, the TLS handshake, or the exchange itself failed.
    #[error("request to {server} failed")]
    Connection {
        server: OwnedServerName,
        #[source]
        source: reqwest::Error,
    },
    /// The whole request (discovery included) took longer than the configured timeout.
    #[error("request to {server} timed out")]
    Timeout { server: OwnedServerName },
    /// The response body is larger than the configured limit; it was not read to the end.
    #[error("response from {server} is larger than {limit} bytes")]
    TooLarge { server: OwnedServerName, limit: usize },
    /// The destination answered with an error status. `errcode` and `error` come from a Matrix
    /// error body when there is one.
    #[error("{server} answered {status}{}", errcode.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Http { server: OwnedServerName, status: StatusCode, errcode: Option<String>, error: Option<String> },
    /// The destination answered with success, but not with what the endpoint returns.
    #[error("{server} sent a response that does not parse")]
    BadResponse {
        server: OwnedServerName,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request could not be built or signed (a bug on this side, not the remote's).
    #[error("request to {server} could not be built")]
    Request {
        server: OwnedServerName,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClientError {
    /// The Matrix `errcode` of an [`ClientError::Http`] answer.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            ClientError::Http { errcode, .. } => errcode.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, when the destination answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the request may succeed later unchanged (network trouble, 5xx, 429), as opposed
    /// to a definite answer or a refusal on this side. For the sending queue's backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Discovery { .. } | ClientError::Connection { .. } | ClientError::Timeout { .. } => true,
            ClientError::Http { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            ClientError::Blocked { .. }
            | ClientError::TooLarge { .. }
            | ClientError::BadResponse { .. }
            | ClientError::Request { .. } => false,
        }
    }
}
