//! Server discovery: from a server name to where to connect, with which `Host` header and
//! which TLS name, following the spec's "Resolving server names" (server-server API, v1.19).
//!
//! The steps, in order:
//! 1. an IP literal is used as is, with its port or 8448;
//! 2. a hostname with an explicit port is used as is (its A/AAAA records, that port);
//! 3. `https://<hostname>/.well-known/matrix/server` may delegate to `<delegated>[:<port>]`,
//!    which is then resolved by the same rules (IP literal, explicit port, SRV
//!    `_matrix-fed._tcp`, deprecated SRV `_matrix._tcp`, else port 8448), with the delegated
//!    name as `Host` and TLS name;
//! 4. without delegation: SRV `_matrix-fed._tcp.<hostname>`, then `_matrix._tcp.<hostname>`;
//! 5. else the hostname's A/AAAA records and port 8448.
//!
//! A/AAAA lookups are left to connection time (see [`crate::client`]), where the IP filter sees
//! the very addresses connected to. Results are cached, failures included, in a map of bounded
//! size, for at most [`ResolverConfig::max_cache_ttl`] and never past the `.well-known`
//! answer's own cache period.

pub mod dns;
mod well_known;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use ruma::{OwnedServerName, ServerName};

use self::{dns::order_srv, well_known::WellKnown};
pub use self::{
    dns::{Dns, DnsError, HickoryDns, SrvRecord, StaticDns},
    well_known::WellKnownError,
};
use crate::{
    cache::TtlCache,
    ip_filter::IpFilter,
    tls::{TlsError, TlsOptions, client_config},
};

/// The port a server listens on for federation when nothing says otherwise.
pub const DEFAULT_PORT: u16 = 8448;

/// SRV targets kept, best first: each is resolved before connecting, and a remote's DNS must
/// not be able to make one request do unbounded work.
const MAX_SRV_TARGETS: usize = 8;

/// A host to connect to, or to check a certificate against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, without a trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    /// As in a URL: IPv6 addresses in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// One place to connect to: a host (resolved with A/AAAA at connection time) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The step of the algorithm that produced a [`Destination`], for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// From the configured override map.
    Override,
    /// Step 1: the server name is an IP literal.
    IpLiteral,
    /// Step 2: a hostname with an explicit port.
    ExplicitPort,
    /// Step 3.1: `.well-known` delegates to an IP literal.
    DelegatedIpLiteral,
    /// Step 3.2: `.well-known` delegates to a hostname with a port.
    DelegatedExplicitPort,
    /// Step 3.3: SRV `_matrix-fed._tcp.<delegated>`.
    DelegatedSrv,
    /// Step 3.4 (deprecated): SRV `_matrix._tcp.<delegated>`.
    DelegatedLegacySrv,
    /// Step 3.5: the delegated hostname on port 8448.
    DelegatedDefaultPort,
    /// Step 4: SRV `_matrix-fed._tcp.<hostname>`.
    Srv,
    /// Step 5 (deprecated): SRV `_matrix._tcp.<hostname>`.
    LegacySrv,
    /// Step 6: the hostname on port 8448.
    DefaultPort,
}

/// Where and how to reach a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The server name this was resolved from: X-Matrix's `destination`.
    pub server_name: OwnedServerName,
    /// Where to connect, in order of preference (SRV priority and weight).
    pub targets: Vec<Target>,
    /// The `Host` header every request carries.
    pub host_header: String,
    /// The name the server's certificate must be valid for; also the SNI when it is a DNS name
    /// (an IP address is not sent as SNI).
    pub tls_name: Host,
    pub step: Step,
}

impl Destination {
    /// Whether `other` reaches the same place the same way, whatever the order of the
    /// targets (SRV weights reshuffle them at each discovery).
    pub fn same_route(&self, other: &Destination) -> bool {
        let sorted = |d: &Destination| {
            let mut targets: Vec<String> = d.targets.iter().map(Target::to_string).collect();
            targets.sort();
            targets
        };
        self.server_name == other.server_name
            && self.host_header == other.host_header
            && self.tls_name == other.tls_name
            && sorted(self) == sorted(other)
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("{name} publishes an SRV record saying the service is not offered there")]
    ServiceUnavailable { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ResolverBuildError {
    #[error("override for {server}: {value:?} is not host:port or ip:port")]
    InvalidOverride { server: OwnedServerName, value: String },
    #[error(
        "override for {server}: an IP-literal server name must map to the same IP (the TLS name is the IP, \
         and it is the address connected to)"
    )]
    OverrideIpMismatch { server: OwnedServerName },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the HTTP client for .well-known could not be built")]
    Http(#[source] reqwest::Error),
}

/// Settings of a [`Resolver`], shared by the federation client built on it.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Server name → `host:port` or `ip:port`, bypassing discovery (tests, private
    /// deployments). The `Host` header and TLS name stay the server name.
    pub overrides: BTreeMap<OwnedServerName, String>,
    /// Addresses outbound requests (federation and `.well-known`) may not reach.
    pub ip_filter: IpFilter,
    pub tls: TlsOptions,
    /// Entries in each cache (destinations, `.well-known` answers).
    pub cache_capacity: usize,
    /// Longest time a discovered destination is reused before it is looked up again, so that
    /// changed SRV records are seen (the DNS resolver caches records by their own TTL
    /// underneath, and `.well-known` answers have their own cache).
    pub max_cache_ttl: Duration,
    /// How long a failed discovery is remembered.
    pub failure_ttl: Duration,
    pub well_known_timeout: Duration,
    pub well_known_max_body: usize,
    /// Floor on a `.well-known` answer's cache period, so that `no-store` or `max-age=0`
    /// cannot make every request fetch it again.
    pub well_known_min_ttl: Duration,
    /// Port of `.well-known` fetches. Always 443 in production; tests point it at a local
    /// HTTPS server.
    pub well_known_port: u16,
    pub user_agent: String,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            overrides: BTreeMap::new(),
            ip_filter: IpFilter::default(),
            tls: TlsOptions::default(),
            cache_capacity: 10_000,
            max_cache_ttl: Duration::from_secs(600),
            failure_ttl: Duration::from_secs(60),
            well_known_timeout: Duration::from_secs(10),
            well_known_max_body: 64 * 1024,
            well_known_min_ttl: Duration::from_secs(300),
            well_known_port: 443,
            user_agent: concat!("Parley/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Resolves server names to [`Destination`]s. One per homeserver; nothing global.
pub struct Resolver {
    dns: Arc<dyn Dns>,
    filter: Arc<IpFilter>,
    tls: rustls::ClientConfig,
    overrides: BTreeMap<OwnedServerName, Destination>,
    well_known: WellKnown,
    cache: Mutex<TtlCache<OwnedServerName, Result<Destination, DiscoveryError>>>,
    /// One lock per server being discovered, so concurrent requests to a cold destination
    /// make one `.well-known` fetch and one set of SRV queries.
    in_flight: Mutex<TtlCache<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    config: ResolverConfig,
}

impl Resolver {
    pub fn new(config: ResolverConfig, dns: Arc<dyn Dns>) -> Result<Self, ResolverBuildError> {
        let overrides = config
            .overrides
            .iter()
            .map(|(server, value)| Ok((server.clone(), override_destination(server, value)?)))
            .collect::<Result<_, ResolverBuildError>>()?;
        let filter = Arc::new(config.ip_filter.clone());
        let tls = client_config(&config.tls)?;
        let well_known =
            WellKnown::new(&config, tls.clone(), dns.clone(), filter.clone()).map_err(ResolverBuildError::Http)?;
        Ok(Self {
            dns,
            filter,
            tls,
            overrides,
            well_known,
            cache: Mutex::new(TtlCache::new(config.cache_capacity)),
            in_flight: Mutex::new(TtlCache::new(config.cache_capacity)),
            config,
        })
    }

    /// Where to reach `server`: from the override map, the cache, or the spec's algorithm.
    pub async fn resolve(&self, server: &ServerName) -> Result<Destination, DiscoveryError> {
        if let Some(destination) = self.overrides.get(server) {
            return Ok(destination.clone());
        }
        if let Some(destination) = literal_destination(server) {
            return Ok(destination);
        }
        if let Some(cached) = self.cached(server) {
            return cached;
        }
        let lock = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            match in_flight.get(&server.to_owned(), now) {
                Some(lock) => lock.clone(),
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    // Long enough to outlive any discovery; it is only a lock.
                    in_flight.insert(server.to_owned(), lock.clone(), now + Duration::from_secs(600));
                    lock
                }
            }
        };
        let _discovering = lock.lock().await;
        // Whoever held the lock has probably just cached the answer.
        if let Some(cached) = self.cached(server) {
            return cached;
        }

        let result = self.discover(server).await;
        let now = Instant::now();
        let expires = match &result {
            Ok((_, Some(well_known_until))) => (*well_known_until).min(now + self.config.max_cache_ttl),
            Ok((_, None)) => now + self.config.max_cache_ttl,
            Err(_) => now + self.config.failure_ttl,
        };
        let result = result.map(|(destination, _)| destination);
        match &result {
            Ok(d) => tracing::debug!(%server, step = ?d.step, targets = ?d.targets, "discovered"),
            Err(e) => tracing::info!(%server, error = %e, "discovery failed"),
        }
        self.lock_cache().insert(server.to_owned(), result.clone(), expires);
        result
    }

    fn cached(&self, server: &ServerName) -> Option<Result<Destination, DiscoveryError>> {
        self.lock_cache().get(&server.to_owned(), Instant::now()).cloned()
    }

    /// Forgets the cached destination of `server` (for example after its addresses all
    /// refused connections), so that the next request looks it up again.
    pub fn invalidate(&self, server: &ServerName) {
        self.lock_cache().remove(&server.to_owned());
    }

    pub fn dns(&self) -> &Arc<dyn Dns> {
        &self.dns
    }

    pub fn ip_filter(&self) -> &Arc<IpFilter> {
        &self.filter
    }

    pub(crate) fn tls_config(&self) -> &rustls::ClientConfig {
        &self.tls
    }

    pub(crate) fn user_agent(&self) -> &str {
        &self.config.user_agent
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, TtlCache<OwnedServerName, Result<Destination, DiscoveryError>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Steps 3 to 6 (1 and 2 need no lookup). Also returns until when the `.well-known` answer
    /// it relied on holds.
    async fn discover(&self, server: &ServerName) -> Result<(Destination, Option<Instant>), DiscoveryError> {
        let hostname = server.host();
        let answer = self.well_known.lookup(hostname).await;
        let destination = match answer.result {
            Ok(delegated) => {
                let host = delegated.host();
                let (targets, tls_name, step) = if let Some(ip) = ip_literal(host) {
                    let port = delegated.port().unwrap_or(DEFAULT_PORT);
                    (vec![Target { host: Host::Ip(ip), port }], Host::Ip(ip), Step::DelegatedIpLiteral)
                } else if let Some(port) = delegated.port() {
                    let name = Host::Name(host.to_owned());
                    (vec![Target { host: name.clone(), port }], name, Step::DelegatedExplicitPort)
                } else {
                    let (targets, step) = self.srv_or_default(host, true).await?;
                    (targets, Host::Name(host.to_owned()), step)
                };
                // With a port only when the delegation carried one, as the spec says.
                Destination {
                    server_name: server.to_owned(),
                    targets,
                    host_header: delegated.to_string(),
                    tls_name,
                    step,
                }
            }
            Err(_) => {
                let (targets, step) = self.srv_or_default(hostname, false).await?;
                Destination {
                    server_name: server.to_owned(),
                    targets,
                    host_header: hostname.to_owned(),
                    tls_name: Host::Name(hostname.to_owned()),
                    step,
                }
            }
        };
        Ok((destination, Some(answer.fresh_until)))
    }

    /// SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then port 8448.
    async fn srv_or_default(&self, host: &str, delegated: bool) -> Result<(Vec<Target>, Step), DiscoveryError> {
        let services = [
            ("_matrix-fed._tcp", if delegated { Step::DelegatedSrv } else { Step::Srv }),
            ("_matrix._tcp", if delegated { Step::DelegatedLegacySrv } else { Step::LegacySrv }),
        ];
        for (service, step) in services {
            let name = format!("{service}.{host}");
            match self.dns.srv(&name).await {
                Ok(records) => {
                    let ordered = order_srv(records);
                    // Only `.` targets: RFC 2782's "decidedly not available at this domain".
                    if ordered.is_empty() {
                        return Err(DiscoveryError::ServiceUnavailable { name });
                    }
                    let targets = ordered
                        .into_iter()
                        .take(MAX_SRV_TARGETS)
                        .map(|r| Target { host: Host::Name(r.target), port: r.port })
                        .collect();
                    return Ok((targets, step));
                }
                Err(DnsError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let step = if delegated { Step::DelegatedDefaultPort } else { Step::DefaultPort };
        Ok((vec![Target { host: Host::Name(host.to_owned()), port: DEFAULT_PORT }], step))
    }
}

/// Steps 1 and 2, which need no lookup.
fn literal_destination(server: &ServerName) -> Option<Destination> {
    let host = server.host();
    let (targets, tls_name, step) = if let Some(ip) = ip_literal(host) {
        let port = server.port().unwrap_or(DEFAULT_PORT);
        (vec![Target { host: Host::Ip(ip), port }], Host::Ip(ip), Step::IpLiteral)
    } else {
        let port = server.port()?;
        let name = Host::Name(host.to_owned());
        (vec![Target { host: name.clone(), port }], name, Step::ExplicitPort)
    };
    Some(Destination { server_name: server.to_owned(), targets, host_header: server.to_string(), tls_name, step })
}

fn override_destination(server: &ServerName, value: &str) -> Result<Destination, ResolverBuildError> {
    let invalid = || ResolverBuildError::InvalidOverride { server: server.to_owned(), value: value.to_owned() };
    let target = if let Ok(addr) = value.parse::<SocketAddr>() {
        Target { host: Host::Ip(addr.ip()), port: addr.port() }
    } else {
        let (host, port) = value.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse().map_err(|_| invalid())?;
        if host.is_empty() || host.contains([':', '/', '[', ']']) {
            return Err(invalid());
        }
        Target { host: Host::Name(host.to_owned()), port }
    };
    let tls_name = match ip_literal(server.host()) {
        Some(ip) if target.host != Host::Ip(ip) => {
            return Err(ResolverBuildError::OverrideIpMismatch { server: server.to_owned() });
        }
        Some(ip) => Host::Ip(ip),
        None => Host::Name(server.host().to_owned()),
    };
    Ok(Destination {
        server_name: server.to_owned(),
        targets: vec![target],
        host_header: server.to_string(),
        tls_name,
        step: Step::Override,
    })
}

/// The address of an IP-literal host (`1.2.3.4` or `[::1]`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse().ok(),
        None => host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

#[cfg(test)]
mod tests;
