//! Server discovery against real HTTPS `.well-known` servers on 127.0.0.1, with DNS answers
//! fed through `StaticDns`.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use axum::{
    Json, Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect},
    routing::get,
};
use parley_federation::discovery::{Dns, Host, Resolver, SrvRecord, Step, Target};
use ruma::server_name;
use serde_json::json;
use support::{TestCa, TestServer, localhost, loopback_dns, resolver_config, spawn_tls};

const WELL_KNOWN: &str = "/.well-known/matrix/server";

async fn well_known_server(ca: &TestCa, names: &[&str], router: Router) -> TestServer {
    spawn_tls(router, &ca.leaf(names)).await
}

fn delegating(to: &'static str) -> Router {
    Router::new().route(WELL_KNOWN, get(move || async move { Json(json!({ "m.server": to })) }))
}

fn srv(target: &str, port: u16) -> SrvRecord {
    SrvRecord { priority: 10, weight: 5, port, target: target.into() }
}

fn name(host: &str, port: u16) -> Target {
    Target { host: Host::Name(host.into()), port }
}

#[tokio::test]
async fn delegation_to_a_hostname_with_port() {
    let ca = TestCa::new();
    let server = well_known_server(&ca, &["example.test"], delegating("fed.example.test:8449")).await;
    let dns = loopback_dns(&["example.test"]);
    let resolver = Resolver::new(resolver_config(&ca, server.port()), dns).unwrap();

    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DelegatedExplicitPort);
    assert_eq!(d.targets, vec![name("fed.example.test", 8449)]);
    assert_eq!(d.host_header, "fed.example.test:8449");
    assert_eq!(d.tls_name, Host::Name("fed.example.test".into()));
    // Fetched over HTTPS with the hostname as SNI and Host.
    assert_eq!(server.seen.requests(), vec![(WELL_KNOWN.to_owned(), Some("example.test".to_owned()))]);
    assert_eq!(server.seen.sni.lock().unwrap().clone(), vec![Some("example.test".to_owned())]);
}

#[tokio::test]
async fn delegation_to_an_ip_literal() {
    let ca = TestCa::new();
    let server = well_known_server(&ca, &["example.test"], delegating("[2001:db8::1]:1234")).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DelegatedIpLiteral);
    let ip: std::net::IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(d.targets, vec![Target { host: Host::Ip(ip), port: 1234 }]);
    assert_eq!(d.host_header, "[2001:db8::1]:1234");
    assert_eq!(d.tls_name, Host::Ip(ip));

    let server = well_known_server(&ca, &["example.test"], delegating("192.0.2.7")).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.targets, vec![Target { host: Host::Ip("192.0.2.7".parse().unwrap()), port: 8448 }]);
    assert_eq!(d.host_header, "192.0.2.7");
}

#[tokio::test]
async fn delegation_without_port_uses_srv_of_the_delegated_name_then_8448() {
    let ca = TestCa::new();
    let server = well_known_server(&ca, &["example.test"], delegating("fed.example.test")).await;
    let dns = loopback_dns(&["example.test"]);
    dns.set_srv("_matrix-fed._tcp.fed.example.test", vec![srv("box.hosting.test", 443)]);
    // The SRV of the original hostname must not be used once delegation succeeded.
    dns.set_srv("_matrix-fed._tcp.example.test", vec![srv("wrong.test", 1)]);
    let resolver = Resolver::new(resolver_config(&ca, server.port()), dns.clone()).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DelegatedSrv);
    assert_eq!(d.targets, vec![name("box.hosting.test", 443)]);
    assert_eq!(d.host_header, "fed.example.test");
    assert_eq!(d.tls_name, Host::Name("fed.example.test".into()));

    let dns = loopback_dns(&["example.test"]);
    dns.set_srv("_matrix._tcp.fed.example.test", vec![srv("old.hosting.test", 8000)]);
    let resolver = Resolver::new(resolver_config(&ca, server.port()), dns).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DelegatedLegacySrv);
    assert_eq!(d.targets, vec![name("old.hosting.test", 8000)]);

    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DelegatedDefaultPort);
    assert_eq!(d.targets, vec![name("fed.example.test", 8448)]);
    assert_eq!(d.host_header, "fed.example.test");
}

#[tokio::test]
async fn well_known_errors_fall_through_to_srv_of_the_hostname() {
    let ca = TestCa::new();
    let bad_answers: Vec<(&str, Router)> = vec![
        ("404", Router::new()),
        ("500", Router::new().route(WELL_KNOWN, get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))),
        ("not json", Router::new().route(WELL_KNOWN, get(|| async { "<html>hello</html>" }))),
        ("no m.server", Router::new().route(WELL_KNOWN, get(|| async { Json(json!({"m.client": "x"})) }))),
        ("bad name", Router::new().route(WELL_KNOWN, get(|| async { Json(json!({"m.server": "no spaces allowed"})) }))),
        ("too large", Router::new().route(WELL_KNOWN, get(|| async { " ".repeat(100_000) }))),
    ];
    for (case, router) in bad_answers {
        let server = well_known_server(&ca, &["example.test"], router).await;
        let dns = loopback_dns(&["example.test"]);
        dns.set_srv("_matrix-fed._tcp.example.test", vec![srv("fed.example.test", 8443)]);
        let resolver = Resolver::new(resolver_config(&ca, server.port()), dns).unwrap();
        let d = resolver.resolve(server_name!("example.test")).await.unwrap();
        assert_eq!(server.seen.hits(WELL_KNOWN), 1, "{case}: fetched once");
        assert_eq!(d.step, Step::Srv, "{case}");
        assert_eq!(d.targets, vec![name("fed.example.test", 8443)], "{case}");
        assert_eq!(d.host_header, "example.test", "{case}");
        assert_eq!(d.tls_name, Host::Name("example.test".into()), "{case}");
    }
}

#[tokio::test]
async fn body_type_is_ignored() {
    let ca = TestCa::new();
    let router = Router::new().route(
        WELL_KNOWN,
        get(|| async { ([(header::CONTENT_TYPE, "text/plain")], r#"{"m.server": "fed.example.test:443"}"#) }),
    );
    let server = well_known_server(&ca, &["example.test"], router).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.targets, vec![name("fed.example.test", 443)]);
}

#[tokio::test]
async fn redirects_are_followed_and_loops_refused() {
    let ca = TestCa::new();
    let router = Router::new()
        .route(WELL_KNOWN, get(|| async { Redirect::temporary("/moved") }))
        .route("/moved", get(|| async { Json(json!({"m.server": "fed.example.test:8449"})) }));
    let server = well_known_server(&ca, &["example.test"], router).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.targets, vec![name("fed.example.test", 8449)]);
    assert_eq!(server.seen.hits("/moved"), 1);

    let router = Router::new()
        .route(WELL_KNOWN, get(|| async { Redirect::temporary("/a") }))
        .route("/a", get(|| async { Redirect::temporary("/.well-known/matrix/server") }));
    let server = well_known_server(&ca, &["example.test"], router).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DefaultPort, "a loop is an error: no delegation");
    assert_eq!(server.seen.hits(WELL_KNOWN), 1, "the loop was stopped when it came back");
}

#[tokio::test]
async fn no_well_known_and_no_srv_means_port_8448() {
    let ca = TestCa::new();
    let server = well_known_server(&ca, &["example.test"], Router::new()).await;
    let dns = loopback_dns(&["example.test"]);
    let resolver = Resolver::new(resolver_config(&ca, server.port()), dns.clone()).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DefaultPort);
    assert_eq!(d.targets, vec![name("example.test", 8448)]);

    dns.set_srv("_matrix._tcp.other.test", vec![srv("legacy.test", 8000)]);
    dns.set_ip("other.test", vec![localhost()]);
    let d = resolver.resolve(server_name!("other.test")).await.unwrap();
    assert_eq!(d.step, Step::LegacySrv);
    assert_eq!(d.targets, vec![name("legacy.test", 8000)]);
}

#[tokio::test]
async fn answers_are_cached_by_their_headers() {
    let ca = TestCa::new();
    let router = Router::new().route(
        WELL_KNOWN,
        get(|| async { ([(header::CACHE_CONTROL, "max-age=3600")], Json(json!({"m.server": "a.test:1"}))) }),
    );
    let server = well_known_server(&ca, &["example.test"], router).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    for _ in 0..3 {
        resolver.resolve(server_name!("example.test")).await.unwrap();
    }
    assert_eq!(server.seen.hits(WELL_KNOWN), 1);
    // Dropping the destination does not drop the .well-known answer, which has its own period.
    resolver.invalidate(server_name!("example.test"));
    resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(server.seen.hits(WELL_KNOWN), 1);

    // no-store, with the floor at zero: every discovery fetches again.
    let router = Router::new().route(
        WELL_KNOWN,
        get(|| async { ([(header::CACHE_CONTROL, "no-store")], Json(json!({"m.server": "a.test:1"}))) }),
    );
    let server = well_known_server(&ca, &["example.test"], router).await;
    let mut config = resolver_config(&ca, server.port());
    config.well_known_min_ttl = std::time::Duration::ZERO;
    let resolver = Resolver::new(config, loopback_dns(&["example.test"])).unwrap();
    for _ in 0..2 {
        resolver.resolve(server_name!("example.test")).await.unwrap();
    }
    assert_eq!(server.seen.hits(WELL_KNOWN), 2);
}

#[tokio::test]
async fn concurrent_discoveries_of_one_server_fetch_once() {
    let ca = TestCa::new();
    let server = well_known_server(&ca, &["example.test"], delegating("fed.example.test:8449")).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let lookups = (0..8).map(|_| resolver.resolve(server_name!("example.test")));
    for result in futures::future::join_all(lookups).await {
        assert_eq!(result.unwrap().targets, vec![name("fed.example.test", 8449)]);
    }
    assert_eq!(server.seen.hits(WELL_KNOWN), 1);
}

#[tokio::test]
async fn errors_are_cached_too() {
    let ca = TestCa::new();
    let router = Router::new().route(WELL_KNOWN, get(|| async { StatusCode::BAD_GATEWAY }));
    let server = well_known_server(&ca, &["example.test"], router).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    resolver.resolve(server_name!("example.test")).await.unwrap();
    resolver.invalidate(server_name!("example.test"));
    resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(server.seen.hits(WELL_KNOWN), 1, "the error is cached");
}

#[tokio::test]
async fn well_known_uses_certificate_verification_and_the_ip_filter() {
    let ca = TestCa::new();
    // A certificate for another name: refused, so no delegation.
    let server = well_known_server(&ca, &["other.test"], delegating("fed.example.test:1")).await;
    let resolver = Resolver::new(resolver_config(&ca, server.port()), loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DefaultPort);
    assert_eq!(server.seen.hits(WELL_KNOWN), 0);

    // The same with verification off: accepted.
    let mut config = resolver_config(&ca, server.port());
    config.tls.verify_certificates = false;
    let resolver = Resolver::new(config, loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DelegatedExplicitPort);

    // Loopback not allowed: the fetch never connects.
    let server = well_known_server(&ca, &["example.test"], delegating("fed.example.test:1")).await;
    let mut config = resolver_config(&ca, server.port());
    config.ip_filter = parley_federation::IpFilter::default();
    let resolver = Resolver::new(config, loopback_dns(&["example.test"])).unwrap();
    let d = resolver.resolve(server_name!("example.test")).await.unwrap();
    assert_eq!(d.step, Step::DefaultPort);
    assert_eq!(server.seen.connections(), 0);
}

#[tokio::test]
async fn many_server_names_share_one_bounded_cache() {
    let ca = TestCa::new();
    let router = Router::new().route(
        WELL_KNOWN,
        get(|headers: HeaderMap| async move {
            let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
            Json(json!({"m.server": format!("fed.{host}:443")})).into_response()
        }),
    );
    let server = well_known_server(&ca, &["a.test", "b.test", "c.test"], router).await;
    let mut config = resolver_config(&ca, server.port());
    config.cache_capacity = 2;
    let dns: Arc<dyn Dns> = loopback_dns(&["a.test", "b.test", "c.test"]);
    let resolver = Resolver::new(config, dns).unwrap();
    for host in ["a.test", "b.test", "c.test", "a.test"] {
        let server = ruma::OwnedServerName::try_from(host).unwrap();
        let d = resolver.resolve(&server).await.unwrap();
        assert_eq!(d.targets, vec![name(&format!("fed.{host}"), 443)]);
    }
    // a.test was evicted by c.test (capacity 2), so it was fetched twice.
    assert_eq!(server.seen.hits(WELL_KNOWN), 4);
}
