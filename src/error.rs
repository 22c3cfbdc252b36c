//! One error type for the whole server: every failure becomes a Matrix error
//! `{errcode, error}` with the right HTTP status, or a user-interactive auth challenge.
//!
//! Internal errors are logged with their cause and answered with a bare `M_UNKNOWN`,
//! so nothing about the server's internals reaches a client.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use ruma::api::{
    client::uiaa::UiaaInfo,
    error::{ErrorKind, LimitExceededErrorData, RetryAfter, StandardErrorBody, UnknownTokenErrorData},
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Matrix error the client caused or should know about.
    #[error("{status} {}: {message}", kind.errcode())]
    Matrix { status: StatusCode, kind: ErrorKind, message: String },
    /// The request needs (more) user-interactive authentication: 401 with the flows.
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),
    /// Anything else: a bug, or a failing dependency. Logged, answered with M_UNKNOWN.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix { status, kind, message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }

    pub fn unrecognized(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::Unrecognized, message)
    }

    pub fn missing_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token")
    }

    pub fn unknown_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorKind::UnknownToken(UnknownTokenErrorData::new()), message)
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorKind::LimitExceeded(data), "Too many requests")
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(anyhow::anyhow!(message.into()))
    }

    /// The Matrix error code, for tests and logs.
    pub fn errcode(&self) -> String {
        match self {
            Self::Matrix { kind, .. } => kind.errcode().to_string(),
            Self::Uiaa(_) => "M_FORBIDDEN".to_owned(),
            Self::Internal(_) => "M_UNKNOWN".to_owned(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Matrix { status, .. } => *status,
            Self::Uiaa(_) => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database error"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("JSON (de)serialization of stored data"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Self::Matrix { status, kind, message } => matrix_error_response(status, kind, message),
            Self::Uiaa(info) => json_response(StatusCode::UNAUTHORIZED, serde_json::to_value(&*info)),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                matrix_error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Unknown,
                    "Internal server error".to_owned(),
                )
            }
        }
    }
}

fn matrix_error_response(status: StatusCode, kind: ErrorKind, message: String) -> Response {
    let retry_after = match &kind {
        ErrorKind::LimitExceeded(LimitExceededErrorData { retry_after: Some(RetryAfter::Delay(d)), .. }) => {
            Some(d.as_secs().max(1))
        }
        _ => None,
    };
    let is_unknown_token = matches!(kind, ErrorKind::UnknownToken(_));
    let mut body = serde_json::to_value(StandardErrorBody::new(kind, message));
    // ruma omits `soft_logout` when false; clients handle a missing field the same way, but
    // stating it makes the answer unambiguous.
    if let (true, Ok(serde_json::Value::Object(map))) = (is_unknown_token, &mut body) {
        map.entry("soft_logout").or_insert(serde_json::Value::Bool(false));
    }
    let mut response = json_response(status, body);
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn json_response(status: StatusCode, body: serde_json::Result<serde_json::Value>) -> Response {
    let body = match body {
        Ok(body) => body.to_string(),
        Err(_) => r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#.to_owned(),
    };
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}
