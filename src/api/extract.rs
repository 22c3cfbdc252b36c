//! `Ruma<Req>`: the one extractor every Matrix endpoint uses.
//!
//! It reads the body (within the size limit), authenticates the request by the endpoint's
//! own auth scheme, applies rate limiting where the endpoint's metadata asks for it, and
//! parses path, query and body into ruma's request type. No path or JSON shape is written by
//! hand. `RumaResponse` turns ruma's response types back into HTTP.

use std::{any::TypeId, net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, RawPathParams, Request},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use http::{Method, request::Parts};
use ruma::api::{
    IncomingRequest, IncomingRequestExt as _, OutgoingResponse, OutgoingResponseExt as _,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, AuthScheme, NoAccessToken,
        NoAuthentication,
    },
    client::session::login,
    error::{DeserializationError, FromHttpRequestError},
    federation::authentication::ServerSignatures,
};

use crate::{
    error::{Error, Result},
    json_depth,
    service::{Services, auth::AuthedUser, secrets},
};

/// A parsed, authenticated Matrix request.
pub struct Ruma<T: IncomingRequest>
where
    T::Authentication: Authenticate,
{
    pub body: T,
    /// Who made the request, as the endpoint's auth scheme defines it.
    pub auth: <T::Authentication as Authenticate>::Identity,
}

impl<T: IncomingRequest> std::ops::Deref for Ruma<T>
where
    T::Authentication: Authenticate,
{
    type Target = T;

    fn deref(&self) -> &T {
        &self.body
    }
}

/// How Parley checks each of ruma's auth schemes. The token schemes read the access token;
/// X-Matrix (server signatures) reads the whole request: method, URI and body are signed.
pub trait Authenticate: AuthScheme {
    type Identity: Send;

    fn authenticate(
        request: &http::Request<&[u8]>,
        services: &Services,
    ) -> impl Future<Output = Result<Self::Identity>> + Send;
}

impl Authenticate for AccessToken {
    type Identity = AuthedUser;

    async fn authenticate(request: &http::Request<&[u8]>, services: &Services) -> Result<AuthedUser> {
        let token = access_token(request)?;
        let user = services.auth.authenticate(token.as_deref().ok_or_else(Error::missing_token)?).await?;
        // Any authenticated request counts as activity for presence.
        services.presence.touch(&user.user_id);
        Ok(user)
    }
}

impl Authenticate for AccessTokenOptional {
    type Identity = Option<AuthedUser>;

    async fn authenticate(request: &http::Request<&[u8]>, services: &Services) -> Result<Option<AuthedUser>> {
        match access_token(request)? {
            Some(token) => services.auth.authenticate(&token).await.map(Some),
            None => Ok(None),
        }
    }
}

impl Authenticate for NoAuthentication {
    type Identity = ();

    async fn authenticate(_: &http::Request<&[u8]>, _: &Services) -> Result<()> {
        Ok(())
    }
}

impl Authenticate for NoAccessToken {
    type Identity = ();

    async fn authenticate(_: &http::Request<&[u8]>, _: &Services) -> Result<()> {
        Ok(())
    }
}

/// Parley runs no application services, so no appservice token is ever valid.
impl Authenticate for AppserviceToken {
    type Identity = ();

    async fn authenticate(request: &http::Request<&[u8]>, _: &Services) -> Result<()> {
        match access_token(request)? {
            Some(_) => Err(Error::unknown_token("Unknown application service token")),
            None => Err(Error::missing_token()),
        }
    }
}

/// Login and registration accept an optional appservice token. With no application services
/// configured, a client's stray user token is ignored rather than rejected, as other servers do.
impl Authenticate for AppserviceTokenOptional {
    type Identity = ();

    async fn authenticate(_: &http::Request<&[u8]>, _: &Services) -> Result<()> {
        Ok(())
    }
}

/// A request signed by another server (X-Matrix): the server it came from, checked.
impl Authenticate for ServerSignatures {
    type Identity = Origin;

    async fn authenticate(request: &http::Request<&[u8]>, services: &Services) -> Result<Origin> {
        crate::service::federation::auth::verify_request(request, services).await.map(Origin)
    }
}

/// The server a federation request came from, its signature verified.
pub struct Origin(pub ruma::OwnedServerName);

impl<T> FromRequest<Arc<Services>> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
{
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self> {
        let (mut parts, body) = request.into_parts();
        let path_args = path_args(&mut parts, services).await?;
        // The listener sets its own limit (a federation transaction is larger than any client
        // request); the client API's applies otherwise.
        let limit =
            parts.extensions.get::<BodyLimit>().map_or(services.config.http.max_request_body_bytes, |limit| limit.0);
        let body = read_body(body, limit, &parts.method).await?;
        // Every body is JSON (Parley has no endpoint taking other bodies yet; one that does,
        // like a media upload, needs its own extractor anyway).
        json_depth::check(&body)?;
        reject_before_parsing::<T>(&body)?;
        let request = http::Request::from_parts(parts, &body[..]);

        let auth = T::Authentication::authenticate(&request, services).await?;

        if T::RATE_LIMITED {
            // Rate-limited endpoints are the client API's: a malformed token was refused above.
            let key = match access_token(&request).ok().flatten() {
                Some(token) => format!("t:{}", secrets::fingerprint(&token)),
                None => {
                    let ip = client_ip(&request, services.config.http.trust_forwarded_for);
                    format!("ip:{}", ip.map_or_else(String::new, |ip| ip.to_string()))
                }
            };
            services.rate_limiter.check(&key).map_err(Error::limit_exceeded)?;
        }

        let path_refs: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // The known panics of ruma's deserializers are refused above; should another one
        // panic, no input may take a handler down, so it is still a bad request.
        let parsed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(request, &path_refs)));
        let body = match parsed {
            Ok(result) => result.map_err(parse_error)?,
            Err(_) => return Err(Error::bad_json("Request body has the wrong shape")),
        };
        Ok(Self { body, auth })
    }
}

/// Refuses bodies that ruma's parser for `T` would panic on, with the error the parser
/// reports for the same mistake elsewhere. The panic is caught, but it would log a backtrace
/// that anyone could trigger at will.
fn reject_before_parsing<T: 'static>(body: &[u8]) -> Result<()> {
    // ruma's `LoginInfo` indexes the object with `data["type"]`, which panics when the key is
    // missing (ruma-client-api 0.25, session/login.rs).
    if TypeId::of::<T>() == TypeId::of::<login::v3::Request>()
        && let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(body)
        && !object.contains_key("type")
    {
        return Err(Error::bad_json("missing field `type`"));
    }
    Ok(())
}

/// The largest body a listener accepts, as a request extension.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

async fn path_args(parts: &mut Parts, services: &Arc<Services>) -> Result<Vec<String>> {
    use axum::extract::FromRequestParts as _;
    let params = RawPathParams::from_request_parts(parts, services)
        .await
        .map_err(|e| Error::invalid_param(format!("Invalid path parameter: {e}")))?;
    Ok(params.iter().map(|(_, value)| value.to_owned()).collect())
}

async fn read_body(body: Body, limit: usize, method: &Method) -> Result<Bytes> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::too_large(format!("Request body exceeds {limit} bytes")))?;
    // Clients send POST/PUT with no body where every field is optional; ruma expects an object.
    if bytes.is_empty() && (method == Method::POST || method == Method::PUT) {
        return Ok(Bytes::from_static(b"{}"));
    }
    Ok(bytes)
}

/// The access token from the `Authorization` header or the deprecated `access_token` query
/// parameter, extracted by ruma.
fn access_token(request: &http::Request<&[u8]>) -> Result<Option<String>> {
    AccessTokenOptional::extract_authentication(request).map_err(|_| Error::unknown_token("Malformed access token"))
}

/// The client's address: the connection's peer, or the first `X-Forwarded-For` entry when
/// the config says a reverse proxy sets it.
fn client_ip<B>(request: &http::Request<B>, trust_forwarded_for: bool) -> Option<std::net::IpAddr> {
    let forwarded = || {
        let header = request.headers().get("x-forwarded-for")?.to_str().ok()?;
        header.split(',').next()?.trim().parse().ok()
    };
    let peer = || request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    if trust_forwarded_for { forwarded().or_else(peer) } else { peer() }
}

/// Maps ruma's parse failures onto the spec's error codes: unparseable JSON is M_NOT_JSON,
/// JSON of the wrong shape M_BAD_JSON, a bad path or query parameter M_INVALID_PARAM.
fn parse_error(error: FromHttpRequestError) -> Error {
    match error {
        FromHttpRequestError::MethodMismatch { .. } => Error::method_not_allowed(),
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                Error::not_json(format!("Request body is not valid JSON: {e}"))
            }
            _ => Error::bad_json(format!("Request body has the wrong shape: {e}")),
        },
        FromHttpRequestError::Deserialization(DeserializationError::Utf8(e)) => {
            Error::not_json(format!("Request body is not UTF-8: {e}"))
        }
        FromHttpRequestError::Deserialization(other) => Error::invalid_param(format!("Invalid request: {other}")),
        other => Error::invalid_param(format!("Invalid request: {other}")),
    }
}

/// A ruma response, as an HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())).into_response(),
            Err(e) => Error::internal(format!("serializing response: {e}")).into_response(),
        }
    }
}

impl<T> From<T> for RumaResponse<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

/// Shorthand for what every handler returns.
pub type RumaResult<T> = Result<RumaResponse<T>>;
