use std::sync::Arc;

use ruma::{OwnedServerName, server_name};

use super::*;

fn resolver(dns: Arc<StaticDns>, overrides: &[(&str, &str)]) -> Resolver {
    let config = ResolverConfig {
        overrides: overrides
            .iter()
            .map(|(name, to)| (OwnedServerName::try_from(*name).expect("name"), (*to).to_owned()))
            .collect(),
        ..ResolverConfig::default()
    };
    Resolver::new(config, dns).expect("resolver")
}

fn srv(priority: u16, target: &str, port: u16) -> SrvRecord {
    SrvRecord { priority, weight: 0, port, target: target.into() }
}

#[tokio::test]
async fn ip_literals_use_their_port_or_8448() {
    let dns = Arc::new(StaticDns::new());
    let r = resolver(dns.clone(), &[]);
    let d = r.resolve(server_name!("1.2.3.4")).await.expect("v4");
    assert_eq!(d.step, Step::IpLiteral);
    assert_eq!(d.targets, vec![Target { host: Host::Ip([1, 2, 3, 4].into()), port: 8448 }]);
    assert_eq!(d.host_header, "1.2.3.4");
    assert_eq!(d.tls_name, Host::Ip([1, 2, 3, 4].into()));

    let d = r.resolve(server_name!("[2001:db8::5]:9000")).await.expect("v6");
    let ip: IpAddr = "2001:db8::5".parse().expect("ip");
    assert_eq!(d.targets, vec![Target { host: Host::Ip(ip), port: 9000 }]);
    assert_eq!(d.host_header, "[2001:db8::5]:9000");
    assert_eq!(d.tls_name.to_string(), "[2001:db8::5]");
    assert_eq!(dns.queries(), 0, "no lookup for IP literals");
}

#[tokio::test]
async fn explicit_port_skips_well_known_and_srv() {
    let dns = Arc::new(StaticDns::new());
    dns.set_srv("_matrix-fed._tcp.example.org", vec![srv(1, "wrong.example.org", 1)]);
    let r = resolver(dns.clone(), &[]);
    let d = r.resolve(server_name!("example.org:8000")).await.expect("resolve");
    assert_eq!(d.step, Step::ExplicitPort);
    assert_eq!(d.targets, vec![Target { host: Host::Name("example.org".into()), port: 8000 }]);
    assert_eq!(d.host_header, "example.org:8000");
    assert_eq!(d.tls_name, Host::Name("example.org".into()));
    assert_eq!(dns.queries(), 0);
}

#[tokio::test]
async fn srv_targets_keep_the_hostname_as_host_and_tls_name() {
    // No A record for example.org: the .well-known fetch fails at once, on to SRV.
    let dns = Arc::new(StaticDns::new());
    dns.set_srv("_matrix-fed._tcp.example.org", vec![srv(20, "b.example.net", 8448), srv(10, "a.example.net", 443)]);
    let r = resolver(dns, &[]);
    let d = r.resolve(server_name!("example.org")).await.expect("resolve");
    assert_eq!(d.step, Step::Srv);
    assert_eq!(
        d.targets,
        vec![
            Target { host: Host::Name("a.example.net".into()), port: 443 },
            Target { host: Host::Name("b.example.net".into()), port: 8448 },
        ]
    );
    assert_eq!(d.host_header, "example.org");
    assert_eq!(d.tls_name, Host::Name("example.org".into()));
}

#[tokio::test]
async fn srv_targets_are_capped() {
    let dns = Arc::new(StaticDns::new());
    let records = (0..100).map(|i| srv(i, &format!("t{i}.example.net"), 8448)).collect();
    dns.set_srv("_matrix-fed._tcp.example.org", records);
    let d = resolver(dns, &[]).resolve(server_name!("example.org")).await.expect("resolve");
    assert_eq!(d.targets.len(), MAX_SRV_TARGETS);
    assert_eq!(d.targets[0].host, Host::Name("t0.example.net".into()), "the best ones are kept");
}

#[tokio::test]
async fn reordered_targets_are_the_same_route() {
    let dns = Arc::new(StaticDns::new());
    dns.set_srv(
        "_matrix-fed._tcp.example.org",
        vec![
            SrvRecord { priority: 1, weight: 50, port: 1, target: "a.test".into() },
            SrvRecord { priority: 1, weight: 50, port: 2, target: "b.test".into() },
        ],
    );
    let r = resolver(dns, &[]);
    let first = r.resolve(server_name!("example.org")).await.expect("resolve");
    let mut reordered = first.clone();
    reordered.targets.reverse();
    assert!(first.same_route(&reordered));
    let mut elsewhere = first.clone();
    elsewhere.targets[0].port = 3;
    assert!(!first.same_route(&elsewhere));
}

#[tokio::test]
async fn srv_dot_target_means_unavailable() {
    let dns = Arc::new(StaticDns::new());
    dns.set_srv("_matrix-fed._tcp.example.org", vec![srv(0, ".", 0)]);
    let r = resolver(dns, &[]);
    let err = r.resolve(server_name!("example.org")).await.expect_err("unavailable");
    assert!(matches!(err, DiscoveryError::ServiceUnavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn dns_failures_fail_discovery_and_are_cached() {
    let dns = Arc::new(StaticDns::new());
    dns.fail_srv("_matrix-fed._tcp.example.org", "SERVFAIL");
    let r = resolver(dns.clone(), &[]);
    let err = r.resolve(server_name!("example.org")).await.expect_err("dns failure");
    assert!(matches!(err, DiscoveryError::Dns(DnsError::Failed { .. })), "{err:?}");
    let queries = dns.queries();
    let again = r.resolve(server_name!("example.org")).await.expect_err("cached failure");
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(dns.queries(), queries, "the failure came from the cache");

    r.invalidate(server_name!("example.org"));
    r.resolve(server_name!("example.org")).await.expect_err("looked up again");
    assert!(dns.queries() > queries);
}

#[tokio::test]
async fn overrides_bypass_discovery_and_keep_the_server_name() {
    let dns = Arc::new(StaticDns::new());
    let r = resolver(
        dns.clone(),
        &[("hs1.test", "127.0.0.1:34567"), ("hs2.test", "localhost:8008"), ("127.0.0.1:8448", "127.0.0.1:9000")],
    );
    let d = r.resolve(server_name!("hs1.test")).await.expect("override");
    assert_eq!(d.step, Step::Override);
    assert_eq!(d.targets, vec![Target { host: Host::Ip([127, 0, 0, 1].into()), port: 34567 }]);
    assert_eq!(d.host_header, "hs1.test");
    assert_eq!(d.tls_name, Host::Name("hs1.test".into()));

    let d = r.resolve(server_name!("hs2.test")).await.expect("override");
    assert_eq!(d.targets, vec![Target { host: Host::Name("localhost".into()), port: 8008 }]);

    let d = r.resolve(server_name!("127.0.0.1:8448")).await.expect("override");
    assert_eq!(d.targets, vec![Target { host: Host::Ip([127, 0, 0, 1].into()), port: 9000 }]);
    assert_eq!(d.host_header, "127.0.0.1:8448");
    assert_eq!(dns.queries(), 0);
}

#[test]
fn bad_overrides_are_refused() {
    let build = |name: &str, to: &str| {
        let config = ResolverConfig {
            overrides: [(OwnedServerName::try_from(name).expect("name"), to.to_owned())].into(),
            ..ResolverConfig::default()
        };
        Resolver::new(config, Arc::new(StaticDns::new())).err()
    };
    assert!(matches!(build("hs.test", "no-port"), Some(ResolverBuildError::InvalidOverride { .. })));
    assert!(matches!(build("hs.test", "host:notaport"), Some(ResolverBuildError::InvalidOverride { .. })));
    assert!(matches!(build("hs.test", "http://x:1"), Some(ResolverBuildError::InvalidOverride { .. })));
    assert!(matches!(build("10.0.0.1", "127.0.0.1:1"), Some(ResolverBuildError::OverrideIpMismatch { .. })));
    assert!(build("hs.test", "[::1]:8448").is_none());
}
