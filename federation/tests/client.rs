//! The federation client against real HTTPS servers on 127.0.0.1: signing, Host and SNI,
//! the IP filter, certificates, limits and errors.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, to_bytes},
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{any, get},
};
use parley_federation::{
    IpFilter, SigningKey,
    client::{ClientConfig, ClientError, FederationClient},
    discovery::{Resolver, ResolverConfig, SrvRecord, StaticDns},
};
use ruma::{
    ServerName,
    api::federation::{authentication::XMatrix, query::get_profile_information},
    owned_user_id,
    serde::Base64,
    server_name,
    signatures::PublicKeyMap,
};
use serde_json::json;
use support::{TestCa, TestServer, localhost, loopback_dns, resolver_config, spawn_tls};

const PROFILE: &str = "/_matrix/federation/v1/query/profile";

struct Origin {
    key: Arc<SigningKey>,
}

impl Origin {
    fn new() -> Self {
        Self { key: Arc::new(SigningKey::generate("test1").unwrap()) }
    }

    fn client(&self, config: ResolverConfig, dns: Arc<StaticDns>) -> FederationClient {
        let resolver = Arc::new(Resolver::new(config, dns).unwrap());
        let mut client_config = ClientConfig::new(server_name!("origin.test").to_owned(), self.key.clone());
        client_config.timeout = Duration::from_secs(5);
        FederationClient::new(client_config, resolver)
    }

    fn public_keys(&self) -> PublicKeyMap {
        let mut keys = PublicKeyMap::new();
        keys.insert(
            "origin.test".to_owned(),
            [(self.key.key_id().to_string(), Base64::new(self.key.public_key().to_vec()))].into(),
        );
        keys
    }
}

/// A server that answers the profile query after checking the X-Matrix signature for
/// `destination`, and echoes what it verified.
fn verifying_router(keys: PublicKeyMap, destination: &str) -> Router {
    let cell = Arc::new(OnceLock::new());
    cell.set(destination.to_owned()).unwrap();
    verifying_router_for(keys, cell)
}

/// The same, for a destination known only once the server listens (an IP:port name).
fn verifying_router_for(keys: PublicKeyMap, destination: Arc<OnceLock<String>>) -> Router {
    let handler = move |request: Request| {
        let keys = keys.clone();
        let destination = destination.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = to_bytes(body, 1 << 20).await.unwrap().to_vec();
            let request = http::Request::from_parts(parts, body);
            let x_matrix = match XMatrix::extract_from_http_headers(request.headers()) {
                Ok(x) => x,
                Err(e) => return (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
            };
            let destination = <&ServerName>::try_from(destination.get().unwrap().as_str()).unwrap();
            if let Err(e) = x_matrix.verify_http_request(&request, destination, &keys) {
                return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            }
            let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap_or_default();
            Json(json!({ "displayname": format!("{} {}", request.uri(), body) })).into_response()
        }
    };
    Router::new().route(PROFILE, any(handler.clone())).route("/_matrix/federation/v1/custom", any(handler))
}

fn profile_request() -> get_profile_information::v1::Request {
    get_profile_information::v1::Request::new(owned_user_id!("@alice:hs.test"))
}

/// `hs.test` reached through SRV at `fed.hs.test:<port>`, as a real deployment would be.
fn srv_dns(server: &TestServer) -> Arc<StaticDns> {
    let dns = loopback_dns(&["fed.hs.test"]);
    dns.set_srv(
        "_matrix-fed._tcp.hs.test",
        vec![SrvRecord { priority: 0, weight: 0, port: server.port(), target: "fed.hs.test".into() }],
    );
    dns
}

#[tokio::test]
async fn signed_request_with_spec_host_and_sni() {
    let ca = TestCa::new();
    let origin = Origin::new();
    let server = spawn_tls(verifying_router(origin.public_keys(), "hs.test"), &ca.leaf(&["hs.test"])).await;
    let client = origin.client(resolver_config(&ca, 1), srv_dns(&server));

    let response = client.send(server_name!("hs.test"), profile_request()).await.unwrap();
    assert_eq!(
        response.data.get("displayname").and_then(|v| v.as_str()),
        Some("/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahs.test null")
    );
    assert_eq!(server.seen.requests(), vec![(PROFILE.to_owned(), Some("hs.test".to_owned()))]);
    assert_eq!(server.seen.sni.lock().unwrap().clone(), vec![Some("hs.test".to_owned())]);

    // The connection is kept for the next request.
    client.send(server_name!("hs.test"), profile_request()).await.unwrap();
    assert_eq!(server.seen.connections(), 1);
}

#[tokio::test]
async fn ip_literal_server_names() {
    let ca = TestCa::new();
    let origin = Origin::new();
    let destination = Arc::new(OnceLock::new());
    let router = verifying_router_for(origin.public_keys(), destination.clone());
    let server = spawn_tls(router, &ca.leaf(&["127.0.0.1"])).await;
    let name = format!("127.0.0.1:{}", server.port());
    destination.set(name.clone()).unwrap();

    let client = origin.client(resolver_config(&ca, 1), Arc::new(StaticDns::new()));
    client.send(<&ServerName>::try_from(name.as_str()).unwrap(), profile_request()).await.unwrap();
    assert_eq!(server.seen.requests(), vec![(PROFILE.to_owned(), Some(name))], "Host is the server name with its port");
    assert_eq!(server.seen.sni.lock().unwrap().clone(), vec![None], "no SNI for an IP address");
}

#[tokio::test]
async fn send_raw_signs_body_and_query() {
    let ca = TestCa::new();
    let origin = Origin::new();
    let server = spawn_tls(verifying_router(origin.public_keys(), "hs.test"), &ca.leaf(&["hs.test"])).await;
    let client = origin.client(resolver_config(&ca, 1), srv_dns(&server));
    let response = client
        .send_raw(
            server_name!("hs.test"),
            http::Method::PUT,
            "/_matrix/federation/v1/custom?a=b",
            Some(&json!({"hello": "world"})),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["displayname"], r#"/_matrix/federation/v1/custom?a=b {"hello":"world"}"#);
}

#[tokio::test]
async fn loopback_is_blocked_by_default_and_nothing_connects() {
    let ca = TestCa::new();
    let origin = Origin::new();
    let server =
        spawn_tls(verifying_router(origin.public_keys(), "hs.test"), &ca.leaf(&["hs.test", "127.0.0.1"])).await;
    let mut config = resolver_config(&ca, 1);
    config.ip_filter = IpFilter::default();
    let client = origin.client(config, srv_dns(&server));

    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert!(matches!(&err, ClientError::Blocked { addresses, .. } if addresses == &vec![localhost()]), "{err:?}");
    let ip_name = format!("127.0.0.1:{}", server.port());
    let err = client.send(<&ServerName>::try_from(ip_name.as_str()).unwrap(), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::Blocked { .. }), "{err:?}");
    assert_eq!(server.seen.connections(), 0);
}

#[tokio::test]
async fn certificates_are_verified_unless_turned_off() {
    let ca = TestCa::new();
    let origin = Origin::new();
    // A certificate for the wrong name.
    let server = spawn_tls(verifying_router(origin.public_keys(), "hs.test"), &ca.leaf(&["other.test"])).await;
    let client = origin.client(resolver_config(&ca, 1), srv_dns(&server));
    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::Connection { .. }), "{err:?}");

    // A certificate from a CA nobody trusts.
    let stranger = TestCa::new();
    let server = spawn_tls(verifying_router(origin.public_keys(), "hs.test"), &stranger.leaf(&["hs.test"])).await;
    let client = origin.client(resolver_config(&ca, 1), srv_dns(&server));
    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::Connection { .. }), "{err:?}");
    assert_eq!(server.seen.hits(PROFILE), 0);

    let mut config = resolver_config(&ca, 1);
    config.tls.verify_certificates = false;
    let client = origin.client(config, srv_dns(&server));
    client.send(server_name!("hs.test"), profile_request()).await.unwrap();
    assert_eq!(server.seen.hits(PROFILE), 1);
}

#[tokio::test]
async fn overrides_connect_elsewhere_but_keep_host_and_tls_name() {
    let ca = TestCa::new();
    let origin = Origin::new();
    let server = spawn_tls(verifying_router(origin.public_keys(), "hs.test"), &ca.leaf(&["hs.test"])).await;
    let mut config = resolver_config(&ca, 1);
    config.overrides.insert(server_name!("hs.test").to_owned(), format!("127.0.0.1:{}", server.port()));
    let client = origin.client(config, Arc::new(StaticDns::new()));
    client.send(server_name!("hs.test"), profile_request()).await.unwrap();
    assert_eq!(server.seen.requests(), vec![(PROFILE.to_owned(), Some("hs.test".to_owned()))]);
    assert_eq!(server.seen.sni.lock().unwrap().clone(), vec![Some("hs.test".to_owned())]);
}

async fn serve(router: Router) -> (TestCa, TestServer) {
    let ca = TestCa::new();
    let server = spawn_tls(router, &ca.leaf(&["hs.test"])).await;
    (ca, server)
}

#[tokio::test]
async fn error_answers_keep_status_and_errcode() {
    let (ca, server) = serve(Router::new().route(
        PROFILE,
        get(|| async { (StatusCode::FORBIDDEN, Json(json!({"errcode": "M_FORBIDDEN", "error": "go away"}))) }),
    ))
    .await;
    let client = Origin::new().client(resolver_config(&ca, 1), srv_dns(&server));
    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(err.errcode(), Some("M_FORBIDDEN"));
    assert!(!err.is_transient());
    assert!(matches!(&err, ClientError::Http { error: Some(e), .. } if e == "go away"));

    // A non-Matrix error body still gives the status.
    let (ca, server) = serve(Router::new().route(PROFILE, get(|| async { (StatusCode::BAD_GATEWAY, "<html>") }))).await;
    let client = Origin::new().client(resolver_config(&ca, 1), srv_dns(&server));
    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::Http { status: StatusCode::BAD_GATEWAY, errcode: None, .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn garbage_success_is_a_bad_response() {
    let (ca, server) = serve(Router::new().route(PROFILE, get(|| async { "not json" }))).await;
    let client = Origin::new().client(resolver_config(&ca, 1), srv_dns(&server));
    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::BadResponse { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "the parse error is kept");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let big = || async { Json(json!({ "displayname": "x".repeat(200_000) })) };
    // Streamed without a length: counted while read.
    let streamed = || async {
        let chunks = (0..50).map(|_| Ok::<_, std::io::Error>(vec![b' '; 10_000]));
        Response::new(Body::from_stream(futures::stream::iter(chunks)))
    };
    for router in [Router::new().route(PROFILE, get(big)), Router::new().route(PROFILE, get(streamed))] {
        let (ca, server) = serve(router).await;
        let origin = Origin::new();
        let resolver = Arc::new(Resolver::new(resolver_config(&ca, 1), srv_dns(&server)).unwrap());
        let mut config = ClientConfig::new(server_name!("origin.test").to_owned(), origin.key.clone());
        config.max_body_size = 100_000;
        let client = FederationClient::new(config, resolver);
        let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
        assert!(matches!(err, ClientError::TooLarge { limit: 100_000, .. }), "{err:?}");
    }
}

#[tokio::test]
async fn slow_servers_time_out() {
    let (ca, server) = serve(Router::new().route(
        PROFILE,
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    ))
    .await;
    let origin = Origin::new();
    let resolver = Arc::new(Resolver::new(resolver_config(&ca, 1), srv_dns(&server)).unwrap());
    let mut config = ClientConfig::new(server_name!("origin.test").to_owned(), origin.key.clone());
    config.timeout = Duration::from_millis(300);
    let client = FederationClient::new(config, resolver);
    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn unreachable_and_unknown_servers() {
    let ca = TestCa::new();
    let origin = Origin::new();
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dns = loopback_dns(&["fed.hs.test"]);
    dns.set_srv(
        "_matrix-fed._tcp.hs.test",
        vec![SrvRecord { priority: 0, weight: 0, port: closed, target: "fed.hs.test".into() }],
    );
    let client = origin.client(resolver_config(&ca, 1), dns);
    let err = client.send(server_name!("hs.test"), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::Connection { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());

    // No SRV and no address: the A/AAAA lookup at connection time fails.
    let client = origin.client(resolver_config(&ca, 1), Arc::new(StaticDns::new()));
    let err = client.send(server_name!("nowhere.test"), profile_request()).await.unwrap_err();
    assert!(matches!(err, ClientError::Discovery { .. }), "{err:?}");
}

#[tokio::test]
async fn well_known_delegation_end_to_end() {
    let ca = TestCa::new();
    let origin = Origin::new();
    // One HTTPS server answers .well-known for example.test and federation for
    // fed.example.test, on a port known once it listens.
    let port = Arc::new(OnceLock::<u16>::new());
    let well_known_port = port.clone();
    let router = verifying_router(origin.public_keys(), "example.test").route(
        "/.well-known/matrix/server",
        get(move || async move {
            Json(json!({"m.server": format!("fed.example.test:{}", well_known_port.get().unwrap())}))
        }),
    );
    let server = spawn_tls(router, &ca.leaf(&["example.test", "fed.example.test"])).await;
    port.set(server.port()).unwrap();
    let client =
        origin.client(resolver_config(&ca, server.port()), loopback_dns(&["example.test", "fed.example.test"]));

    client.send(server_name!("example.test"), profile_request()).await.unwrap();
    let delegated = format!("fed.example.test:{}", server.port());
    assert_eq!(
        server.seen.requests(),
        vec![
            ("/.well-known/matrix/server".to_owned(), Some("example.test".to_owned())),
            (PROFILE.to_owned(), Some(delegated)),
        ]
    );
    assert_eq!(
        server.seen.sni.lock().unwrap().clone(),
        vec![Some("example.test".to_owned()), Some("fed.example.test".to_owned())]
    );
}
