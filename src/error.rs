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
    /// A Matrix error with the status its kind has everywhere ([`status_for`]). Services
    /// name what went wrong; only this module decides what HTTP says about it.
    pub fn matrix(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix { status: status_for(&kind), kind, message: message.into() }
    }

    /// A Matrix error with a status chosen by the caller. Only `service/rooms/` still calls
    /// it (until its rewrite moves to [`Error::matrix`] and the constructors below); every
    /// other status decision is made in this module.
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix { status, kind, message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::BadJson, message)
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::NotJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::MissingParam, message)
    }

    /// `404 M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::Unrecognized, message)
    }

    /// `405 M_UNRECOGNIZED`: a known endpoint, another method.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, ErrorKind::Unrecognized, "Method not allowed")
    }

    /// `400 M_UNRECOGNIZED`: a feature of a known endpoint that this server does not have
    /// (third-party invites, federation).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::Unrecognized, message)
    }

    /// `400 M_UNKNOWN`: a bad request the spec has no code for.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
    }

    /// `409 M_UNKNOWN`: a concurrent change got there first; retrying may succeed.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorKind::Unknown, message)
    }

    /// `504 M_UNKNOWN`: the request took longer than the server allows.
    pub fn timed_out() -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, ErrorKind::Unknown, "Request timed out")
    }

    /// `405 M_BAD_JSON`: account data of a type the server manages (the spec's answer).
    pub fn server_managed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, ErrorKind::BadJson, message)
    }

    /// `401`: a user-interactive auth stage failed (`M_FORBIDDEN` for a bad registration
    /// token, `M_UNAUTHORIZED` for one that stopped being valid), as the spec answers a
    /// failed stage.
    pub fn auth_stage_failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, kind, message)
    }

    /// A federation request whose signature, origin or destination does not check out.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::Unauthorized, message)
    }

    pub fn missing_token() -> Self {
        Self::matrix(ErrorKind::MissingToken, "Missing access token")
    }

    pub fn unknown_token(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::UnknownToken(UnknownTokenErrorData::new()), message)
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::matrix(ErrorKind::LimitExceeded(data), "Too many requests")
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::matrix(ErrorKind::TooLarge, message)
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

/// The status of every error kind, wherever it comes from. The few kinds whose status depends
/// on the situation have named constructors on [`Error`] instead.
pub fn status_for(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Forbidden
        | ErrorKind::GuestAccessForbidden
        | ErrorKind::UserDeactivated
        | ErrorKind::UserLocked
        | ErrorKind::UserSuspended
        | ErrorKind::ThreepidDenied
        | ErrorKind::WrongRoomKeysVersion(_)
        | ErrorKind::CannotLeaveServerNoticeRoom => StatusCode::FORBIDDEN,
        ErrorKind::MissingToken | ErrorKind::UnknownToken(_) | ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound | ErrorKind::Unrecognized => StatusCode::NOT_FOUND,
        ErrorKind::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        // Everything else is something about the request: the kinds of bad input
        // (M_BAD_JSON, M_INVALID_PARAM, M_USER_IN_USE, M_PROFILE_TOO_LARGE, ...) and M_UNKNOWN
        // for what the spec has no code for. Internal failures are `Error::Internal`.
        _ => StatusCode::BAD_REQUEST,
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

#[cfg(test)]
mod tests {
    use ruma::api::error::{ErrorKind, WrongRoomKeysVersionErrorData};

    use super::*;

    #[test]
    fn statuses_come_from_the_kind() {
        let cases = [
            (Error::forbidden("x"), StatusCode::FORBIDDEN),
            (Error::not_found("x"), StatusCode::NOT_FOUND),
            (Error::unrecognized("x"), StatusCode::NOT_FOUND),
            (Error::method_not_allowed(), StatusCode::METHOD_NOT_ALLOWED),
            (Error::bad_json("x"), StatusCode::BAD_REQUEST),
            (Error::matrix(ErrorKind::UserInUse, "x"), StatusCode::BAD_REQUEST),
            (Error::matrix(ErrorKind::UserDeactivated, "x"), StatusCode::FORBIDDEN),
            (
                Error::matrix(ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new("1".into())), "x"),
                StatusCode::FORBIDDEN,
            ),
            (Error::missing_token(), StatusCode::UNAUTHORIZED),
            (Error::limit_exceeded(Duration::from_secs(1)), StatusCode::TOO_MANY_REQUESTS),
            (Error::too_large("x"), StatusCode::PAYLOAD_TOO_LARGE),
            (Error::conflict("x"), StatusCode::CONFLICT),
            (Error::internal("x"), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error}");
        }
    }
}
