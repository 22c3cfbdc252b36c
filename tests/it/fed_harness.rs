//! Several Parleys federating in one test process: each a named server (`hs1.test`,
//! `hs2.test`, …) with a federation listener on 127.0.0.1 (HTTPS, self-signed), and the
//! others' addresses in its `[federation] destinations` override map. Loopback is allowed
//! only here: the default config refuses it.

#![allow(dead_code)]

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use parley::Config;
use parley_federation::{
    IpFilter,
    client::{ClientConfig, FederationClient},
    discovery::{Resolver, ResolverConfig, StaticDns},
    keys::SigningKey,
    tls::TlsOptions,
};
use ruma::OwnedServerName;
use tokio::net::TcpListener;

use crate::harness::{Backend, TestDb, TestServer};

/// Federating servers; `servers[i]` is named `names[i]`.
pub struct Peers {
    pub servers: Vec<Option<TestServer>>,
    pub names: Vec<OwnedServerName>,
    pub addrs: Vec<SocketAddr>,
}

impl Peers {
    /// Starts `n` servers that know each other's federation addresses.
    pub async fn spawn(backend: Backend, n: usize) -> Option<Self> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind federation"));
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
        let names: Vec<OwnedServerName> =
            (1..=n).map(|i| OwnedServerName::try_from(format!("hs{i}.test")).expect("server name")).collect();
        let mut peers = Self { servers: Vec::new(), names, addrs };
        for (i, listener) in listeners.into_iter().enumerate() {
            let db = TestDb::create(backend).await?;
            let server = peers.start_server(i, db, listener).await;
            peers.servers.push(Some(server));
        }
        Some(peers)
    }

    async fn start_server(&self, i: usize, db: TestDb, listener: TcpListener) -> TestServer {
        let name = self.names[i].clone();
        let destinations = self.destinations();
        TestServer::start_federated_on(db, Some(listener), move |config| {
            configure(config, name, destinations);
        })
        .await
    }

    fn destinations(&self) -> BTreeMap<OwnedServerName, String> {
        self.names.iter().cloned().zip(self.addrs.iter().map(ToString::to_string)).collect()
    }

    pub fn get(&self, i: usize) -> &TestServer {
        self.servers[i].as_ref().expect("server running")
    }

    /// Stops server `i`, keeping its database and address.
    pub async fn stop(&mut self, i: usize) -> TestDb {
        self.servers[i].take().expect("server running").stop().await
    }

    /// Starts server `i` again on `db`, at the same address.
    pub async fn start(&mut self, i: usize, db: TestDb) {
        let listener = bind_again(self.addrs[i]).await;
        let server = self.start_server(i, db, listener).await;
        self.servers[i] = Some(server);
    }

    pub async fn restart(&mut self, i: usize) {
        let db = self.stop(i).await;
        self.start(i, db).await;
    }

    /// A federation client posing as `origin` with `key` (a forger, unless it is `origin`'s
    /// real key), that reaches every server at its real address, and reaches `misdirect`'s
    /// name at `to`'s address.
    pub fn client_as(&self, origin: &str, key: Arc<SigningKey>, misdirect: Option<(&str, usize)>) -> FederationClient {
        let mut overrides = self.destinations();
        if let Some((name, to)) = misdirect {
            overrides.insert(OwnedServerName::try_from(name).expect("name"), self.addrs[to].to_string());
        }
        let resolver = Resolver::new(
            ResolverConfig {
                overrides,
                ip_filter: IpFilter::new(Vec::new(), Vec::new()),
                tls: TlsOptions { verify_certificates: false, extra_root_certificates_pem: Vec::new() },
                ..ResolverConfig::default()
            },
            Arc::new(StaticDns::default()),
        )
        .expect("resolver");
        let mut config = ClientConfig::new(OwnedServerName::try_from(origin).expect("origin"), key);
        config.timeout = Duration::from_secs(20);
        FederationClient::new(config, Arc::new(resolver))
    }

    pub async fn finish(mut self) {
        for server in self.servers.drain(..).flatten() {
            server.finish().await;
        }
    }
}

/// The federation part of a test server's config.
fn configure(config: &mut Config, name: OwnedServerName, destinations: BTreeMap<OwnedServerName, String>) {
    config.server_name = name;
    let federation = &mut config.federation;
    federation.destinations = destinations;
    federation.ip_range_allowlist = vec!["127.0.0.0/8".parse().expect("net")];
    federation.verify_certificates = false;
    federation.request_timeout_secs = 20;
}

/// Binds `addr` again after its server stopped (the port may take a moment to free).
async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not bind {addr} again");
}

/// Polls `check` until it returns `Some`, for up to `secs` seconds: for what crosses servers
/// asynchronously (the outbound queue).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
