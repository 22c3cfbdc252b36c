//! Test servers on 127.0.0.1: HTTPS with certificates from a throwaway CA, recording what
//! they saw (connections, SNI, Host headers).
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::Request, middleware::Next, response::Response};
use parley_federation::{
    IpFilter,
    discovery::{ResolverConfig, StaticDns},
    tls::TlsOptions,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// A certificate authority for one test.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, for a test server.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Parley test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { chain: vec![cert.der().clone()], key_der: key.serialize_der() }
    }

    /// TLS options that trust this CA.
    pub fn trusting(&self) -> TlsOptions {
        TlsOptions { verify_certificates: true, extra_root_certificates_pem: vec![self.pem.clone()] }
    }
}

/// What a test server saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    pub sni: Mutex<Vec<Option<String>>>,
    /// (path, Host header) of every request.
    pub requests: Mutex<Vec<(String, Option<String>)>>,
}

impl Seen {
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.requests.lock().unwrap().clone()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|(p, _)| p == path).count()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl TestServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(next) => next,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `router` over HTTPS on 127.0.0.1 with `leaf`. Handshakes run in their own tasks, so
/// a client that gives up on the certificate does not hold up the others.
pub async fn spawn_tls(router: Router, leaf: &Leaf) -> TestServer {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let (tx, rx) = mpsc::channel(16);
    let accept_seen = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = tcp.accept().await {
            accept_seen.connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let seen = accept_seen.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    seen.sni.lock().unwrap().push(tls.get_ref().1.server_name().map(str::to_owned));
                    let _ = tx.send((tls, peer)).await;
                }
            });
        }
    });

    let record_seen = seen.clone();
    let router = router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let seen = record_seen.clone();
        async move {
            let host = request.headers().get("host").and_then(|h| h.to_str().ok()).map(str::to_owned);
            seen.requests.lock().unwrap().push((request.uri().path().to_owned(), host));
            let response: Response = next.run(request).await;
            response
        }
    }));
    tokio::spawn(async move {
        axum::serve(TlsListener { incoming: rx, local: addr }, router).await.unwrap();
    });
    TestServer { addr, seen }
}

pub fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// A resolver config for tests: loopback allowed, this CA trusted, `.well-known` on `port`.
pub fn resolver_config(ca: &TestCa, well_known_port: u16) -> ResolverConfig {
    ResolverConfig {
        ip_filter: IpFilter::with_allowed(vec!["127.0.0.0/8".parse().unwrap()]),
        tls: ca.trusting(),
        well_known_port,
        ..ResolverConfig::default()
    }
}

/// DNS where each of `names` is 127.0.0.1.
pub fn loopback_dns(names: &[&str]) -> Arc<StaticDns> {
    let dns = StaticDns::new();
    for name in names {
        dns.set_ip(name, vec![localhost()]);
    }
    Arc::new(dns)
}
