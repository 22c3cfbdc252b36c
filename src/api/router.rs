//! The HTTP stack: routes built from ruma's endpoint metadata, wrapped in the layers every
//! response passes through (CORS, request IDs and tracing, panic catching, timeouts, the
//! body size limit).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use ruma::api::{IncomingRequest, path_builder::PathBuilder as _};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

use super::{
    client,
    extract::{Authenticate, BodyLimit, Ruma},
    server,
};
use crate::{error::Error, service::Services};

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Registers a handler under every path ruma knows for its endpoint (v3, r0 where the spec
/// had one, and unstable prefixes), for the endpoint's method. The request type fixes both
/// the paths and what the handler receives, so the two cannot disagree.
pub trait RumaRouter {
    fn ruma<Req, F, Fut, Res>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authenticate,
        F: Fn(State<Arc<Services>>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Res> + Send + 'static,
        Res: IntoResponse + 'static;
}

impl RumaRouter for Router<Arc<Services>> {
    fn ruma<Req, F, Fut, Res>(mut self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authenticate,
        F: Fn(State<Arc<Services>>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Res> + Send + 'static,
        Res: IntoResponse + 'static,
    {
        let Ok(filter) = MethodFilter::try_from(Req::METHOD) else {
            unreachable!("ruma endpoints use standard methods");
        };
        for path in Req::PATH_BUILDER.all_paths() {
            // An empty state key leaves the last segment empty, and "the trailing slash on
            // this endpoint is optional" (spec, GET/PUT /rooms/{roomId}/state/{eventType}/
            // {stateKey}): `.../state/{eventType}/` and `.../state/{eventType}` both mean it.
            // ruma parses either form; the router must route them.
            let empty_key = path.strip_suffix("/{state_key}").map(|prefix| [format!("{prefix}/"), prefix.to_owned()]);
            for path in std::iter::once(path.to_owned()).chain(empty_key.into_iter().flatten()) {
                let handler = handler.clone();
                self = self
                    .route(&path, on(filter, move |state: State<Arc<Services>>, req: Ruma<Req>| handler(state, req)));
            }
        }
        self
    }
}

/// The client listener's application: the Client-Server API, plus this server's keys and
/// `.well-known`, with every layer.
pub fn build(services: &Arc<Services>) -> Router {
    let routes = server::public_routes(client::routes(Router::new()));
    finish(routes, services, services.config.http.max_request_body_bytes)
}

/// The federation listener's application: the Server-Server API, with its own body limit
/// (a full transaction is larger than any client request).
pub fn build_federation(services: &Arc<Services>) -> Router {
    let routes = server::federation_routes(server::public_routes(Router::new()));
    finish(routes, services, services.config.federation.max_request_body_bytes)
}

/// Fallbacks, state and the layers every response passes through.
fn finish(routes: Router<Arc<Services>>, services: &Arc<Services>, body_limit: usize) -> Router {
    let config = &services.config;
    let router = routes
        .fallback(unrecognized)
        // Must come after every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::clone(services));

    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RequestIds::default()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            // The path only: the query may hold an access token.
            tracing::info_span!("request", id, method = %request.method(), path = request.uri().path())
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(CatchPanicLayer::custom(|_| Error::internal("handler panicked").into_response()))
        .layer(middleware::from_fn_with_state(config.http.request_timeout(), timeout))
        .layer(middleware::from_fn_with_state(body_limit, reject_large_bodies))
        .layer(axum::Extension(BodyLimit(body_limit)))
        .layer(middleware::from_fn(answer_options));
    // CORS goes outermost, in its own layer, so that every response gets its headers.
    router.layer(layers).layer(cors())
}

/// CORS as browsers need it, on every response: errors, fallbacks and timeouts included,
/// since this is the outermost layer. `Authorization` must be named: a `*` does not cover it.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([HeaderName::from_static("x-requested-with"), header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(86400))
}

/// Request IDs unique within a server's lifetime, with a random prefix so that logs of several
/// servers (or restarts) do not collide.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self {
            prefix: crate::service::secrets::random_string(6, b"abcdefghijklmnopqrstuvwxyz0123456789").into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix)).ok().map(RequestId::new)
    }
}

/// Bounds every request; longer than any /sync long-poll (enforced by config validation).
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::timed_out().into_response(),
    }
}

/// Refuses a declared oversized body before reading it; `Ruma<_>` enforces the same limit
/// while reading bodies that do not declare their length.
async fn reject_large_bodies(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Error::too_large(format!("Request body exceeds {limit} bytes")).into_response();
    }
    next.run(request).await
}

/// A bare OPTIONS request (not a CORS preflight, which the CORS layer answers) still gets a
/// 2xx, as the spec asks of every endpoint.
async fn answer_options(request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return (StatusCode::NO_CONTENT, Body::empty()).into_response();
    }
    next.run(request).await
}

async fn unrecognized() -> Error {
    Error::unrecognized("Unrecognized request")
}

async fn method_not_allowed() -> Error {
    Error::method_not_allowed()
}
