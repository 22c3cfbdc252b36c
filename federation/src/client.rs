//! The federation client: ruma requests signed with X-Matrix, sent to the address discovery
//! found, with the spec's `Host` header and TLS name.
//!
//! reqwest takes the TLS name (and SNI) from the URL's host, and asks its resolver for that
//! host's addresses. So each destination gets its own small reqwest client whose URL host is
//! the destination's TLS name and whose resolver returns the destination's targets, filtered
//! by the [`IpFilter`](crate::IpFilter). All these clients share one rustls configuration.
//! They are kept in a bounded cache, which also gives each destination its own connection
//! pool.

mod error;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponseExt as _, OutgoingRequest, OutgoingRequestExt as _,
        auth_scheme::{AuthScheme, NoAuthentication},
        error::FromHttpResponseError,
        federation::authentication::{ServerSignatures, XMatrixSigningInput},
        path_builder::{PathBuilder, SinglePath},
    },
    signatures::Ed25519KeyPair,
};
use serde::Deserialize;

pub use self::error::ClientError;
use crate::{
    SigningKey,
    cache::TtlCache,
    connect::{DestinationResolve, ReadError, ResolveError, find_cause, read_limited},
    discovery::{Destination, DiscoveryError, Host, Resolver},
};

/// Settings of a [`FederationClient`]. Network policy (IP filter, TLS) comes from the
/// [`Resolver`]'s config, so `.well-known` fetches and requests follow the same rules.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// This server's name: X-Matrix's `origin`.
    pub origin: OwnedServerName,
    pub signing_key: Arc<SigningKey>,
    /// Limit on a whole request: discovery, connecting, sending and reading the body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Largest response body accepted.
    pub max_body_size: usize,
    /// Destinations whose HTTP client (and its idle connections) are kept.
    pub client_cache_capacity: usize,
    /// How long a destination's HTTP client is kept without being rebuilt.
    pub client_ttl: Duration,
    pub pool_idle_timeout: Duration,
}

impl ClientConfig {
    /// Defaults: 60 s per request, 10 s to connect, 64 MiB bodies (a room's `/state` can be
    /// large), 1,000 destinations with open pools.
    pub fn new(origin: OwnedServerName, signing_key: Arc<SigningKey>) -> Self {
        Self {
            origin,
            signing_key,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_body_size: 64 * 1024 * 1024,
            client_cache_capacity: 1000,
            client_ttl: Duration::from_secs(3600),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// A response as received, for [`FederationClient::send_raw`].
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Supplies the authentication input of a federation endpoint's scheme: X-Matrix for
/// `ServerSignatures`, nothing for the key endpoints' `NoAuthentication`.
pub trait FederationAuth: AuthScheme {
    fn input<'a>(origin: &ServerName, destination: &ServerName, key: &'a Ed25519KeyPair) -> Self::Input<'a>;
}

impl FederationAuth for ServerSignatures {
    fn input<'a>(origin: &ServerName, destination: &ServerName, key: &'a Ed25519KeyPair) -> Self::Input<'a> {
        XMatrixSigningInput::new(origin.to_owned(), destination.to_owned(), key)
    }
}

impl FederationAuth for NoAuthentication {
    fn input<'a>(_origin: &ServerName, _destination: &ServerName, _key: &'a Ed25519KeyPair) -> Self::Input<'a> {}
}

/// Supplies the path input of an endpoint's path builder. Federation endpoints have a single
/// path each.
pub trait FederationPath: PathBuilder {
    fn input<'a>() -> Self::Input<'a>;
}

impl FederationPath for SinglePath {
    fn input<'a>() -> Self::Input<'a> {}
}

/// Sends signed federation requests. Cheap to clone; one per homeserver.
#[derive(Clone)]
pub struct FederationClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    resolver: Arc<Resolver>,
    clients: Mutex<TtlCache<OwnedServerName, (Destination, reqwest::Client)>>,
}

impl FederationClient {
    pub fn new(config: ClientConfig, resolver: Arc<Resolver>) -> Self {
        let clients = Mutex::new(TtlCache::new(config.client_cache_capacity));
        Self { inner: Arc::new(Inner { config, resolver, clients }) }
    }

    pub fn origin(&self) -> &ServerName {
        &self.inner.config.origin
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.inner.resolver
    }

    /// Sends a ruma federation request to `destination` and parses the answer. Requests of
    /// endpoints that need it are signed with X-Matrix.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse, ClientError>
    where
        R: OutgoingRequest,
        R::Authentication: FederationAuth,
        R::PathBuilder: FederationPath,
    {
        let response = self.send_request_raw(destination, request).await?;
        let server = destination.to_owned();
        if response.status.as_u16() >= 400 {
            return Err(http_error(server, &response));
        }
        let mut builder = http::Response::builder().status(response.status);
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers.clone();
        }
        let http_response = builder
            .body(response.body.as_slice())
            .map_err(|e| ClientError::BadResponse { server: server.clone(), source: e.into() })?;
        R::IncomingResponse::try_from_http_response(http_response).map_err(|e| match e {
            FromHttpResponseError::Deserialization(e) => ClientError::BadResponse { server, source: e.into() },
            _ => http_error(server, &response),
        })
    }

    /// Sends a ruma request and returns the answer as received, whatever its status.
    pub async fn send_request_raw<R>(&self, destination: &ServerName, request: R) -> Result<RawResponse, ClientError>
    where
        R: OutgoingRequest,
        R::Authentication: FederationAuth,
        R::PathBuilder: FederationPath,
    {
        let origin = self.inner.config.origin.clone();
        let key = self.inner.config.signing_key.clone();
        let dest = destination.to_owned();
        self.with_timeout(destination, async move {
            let (route, client) = self.client_for(&dest).await?;
            let http_request = request
                .try_into_http_request::<Vec<u8>>(
                    &base_url(&route),
                    R::Authentication::input(&origin, &dest, key.pair()),
                    R::PathBuilder::input(),
                )
                .map_err(|e| ClientError::Request { server: dest.clone(), source: e.into() })?;
            self.execute(&route, &client, http_request).await
        })
        .await
    }

    /// Sends a request ruma has no type for: `path_and_query` (starting with `/`) and an
    /// optional JSON body, signed with X-Matrix. Returns the answer whatever its status.
    pub async fn send_raw(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<RawResponse, ClientError> {
        let dest = destination.to_owned();
        let request_error =
            |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Request { server: dest.clone(), source: e };
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| request_error(e.into()))?;
        self.with_timeout(destination, async {
            let (route, client) = self.client_for(&dest).await?;
            let mut builder =
                http::Request::builder().method(method).uri(format!("{}{path_and_query}", base_url(&route)));
            if body.is_some() {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
            }
            let mut http_request = builder.body(body.unwrap_or_default()).map_err(|e| request_error(e.into()))?;
            let input = XMatrixSigningInput::new(
                self.inner.config.origin.clone(),
                dest.clone(),
                self.inner.config.signing_key.pair(),
            );
            ServerSignatures::add_authentication(&mut http_request, input).map_err(|e| request_error(e.into()))?;
            self.execute(&route, &client, http_request).await
        })
        .await
    }

    async fn with_timeout<T>(
        &self,
        destination: &ServerName,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(self.inner.config.timeout, work)
            .await
            .unwrap_or_else(|_| Err(ClientError::Timeout { server: destination.to_owned() }))
    }

    /// The destination and its HTTP client, built on first use and again when discovery's
    /// answer changes.
    async fn client_for(&self, server: &ServerName) -> Result<(Destination, reqwest::Client), ClientError> {
        let destination = self
            .inner
            .resolver
            .resolve(server)
            .await
            .map_err(|source| ClientError::Discovery { server: server.to_owned(), source })?;
        let now = Instant::now();
        let key = server.to_owned();
        {
            let mut clients = self.lock_clients();
            // The same route keeps its client and connections, even if SRV weights reordered
            // the targets; the client keeps the order it was built with.
            if let Some((cached, client)) = clients.get(&key, now)
                && cached.same_route(&destination)
            {
                return Ok((cached.clone(), client.clone()));
            }
        }
        let client = self.build_client(&destination)?;
        self.lock_clients().insert(key, (destination.clone(), client.clone()), now + self.inner.config.client_ttl);
        Ok((destination, client))
    }

    fn build_client(&self, destination: &Destination) -> Result<reqwest::Client, ClientError> {
        let resolver = &self.inner.resolver;
        let config = &self.inner.config;
        reqwest::Client::builder()
            .tls_backend_preconfigured(resolver.tls_config().clone())
            .dns_resolver(Arc::new(DestinationResolve {
                dns: resolver.dns().clone(),
                filter: resolver.ip_filter().clone(),
                targets: destination.targets.clone(),
            }))
            // Federation answers are never redirects to follow.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .user_agent(resolver.user_agent())
            .build()
            .map_err(|e| ClientError::Request { server: destination.server_name.clone(), source: e.into() })
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, TtlCache<OwnedServerName, (Destination, reqwest::Client)>> {
        self.inner.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn execute(
        &self,
        destination: &Destination,
        client: &reqwest::Client,
        request: http::Request<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let server = destination.server_name.clone();
        // An IP-literal URL never reaches the resolver, so its address is checked here.
        if let Host::Ip(ip) = destination.tls_name
            && !self.inner.resolver.ip_filter().is_allowed(ip)
        {
            return Err(ClientError::Blocked { server, addresses: vec![ip] });
        }
        let mut request = reqwest::Request::try_from(request)
            .map_err(|e| ClientError::Request { server: server.clone(), source: e.into() })?;
        let host = HeaderValue::from_str(&destination.host_header)
            .map_err(|e| ClientError::Request { server: server.clone(), source: e.into() })?;
        request.headers_mut().insert(header::HOST, host);

        let method = request.method().clone();
        let path = request.url().path().to_owned();
        let response = match client.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                let error = self.send_error(destination, e);
                tracing::debug!(%server, %method, path, error = %error, "federation request failed");
                return Err(error);
            }
        };
        let status = response.status();
        tracing::debug!(%server, %method, path, %status, "federation request");
        let headers = response.headers().clone();
        let limit = self.inner.config.max_body_size;
        let body = read_limited(response, limit).await.map_err(|e| match e {
            ReadError::TooLarge => ClientError::TooLarge { server: server.clone(), limit },
            ReadError::Io(source) => ClientError::Connection { server: server.clone(), source },
        })?;
        Ok(RawResponse { status, headers, body })
    }

    /// Turns reqwest's error into ours, finding what our resolver said in its chain. A failed
    /// connection also drops the cached destination, so the next attempt looks it up again.
    fn send_error(&self, destination: &Destination, error: reqwest::Error) -> ClientError {
        let server = destination.server_name.clone();
        match find_cause::<ResolveError>(&error) {
            Some(ResolveError::Blocked { addresses, .. }) => {
                return ClientError::Blocked { server, addresses: addresses.clone() };
            }
            Some(ResolveError::Dns(e)) => {
                self.forget(&server);
                return ClientError::Discovery { server, source: DiscoveryError::Dns(e.clone()) };
            }
            None => {}
        }
        if error.is_connect() {
            self.forget(&server);
        }
        if error.is_timeout() {
            return ClientError::Timeout { server };
        }
        ClientError::Connection { server, source: error }
    }

    fn forget(&self, server: &ServerName) {
        self.inner.resolver.invalidate(server);
        self.lock_clients().remove(&server.to_owned());
    }
}

/// `https://<TLS name>`: reqwest takes SNI and the certificate name from it. A DNS name goes
/// without a port, so the ports our resolver returns are used; an IP address has one target,
/// whose port goes in the URL.
fn base_url(destination: &Destination) -> String {
    match (&destination.tls_name, destination.targets.first()) {
        (Host::Ip(_), Some(target)) => format!("https://{}:{}", destination.tls_name, target.port),
        _ => format!("https://{}", destination.tls_name),
    }
}

#[derive(Deserialize)]
struct MatrixErrorBody {
    errcode: Option<String>,
    error: Option<String>,
}

fn http_error(server: OwnedServerName, response: &RawResponse) -> ClientError {
    let body: Option<MatrixErrorBody> = serde_json::from_slice(&response.body).ok();
    let (errcode, error) = body.map(|b| (b.errcode, b.error)).unwrap_or_default();
    ClientError::Http { server, status: response.status, errcode, error }
}
