//! The DNS queries discovery needs, behind a trait so that tests can answer them.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use hickory_resolver::{
    TokioResolver,
    net::NetError,
    proto::rr::{RData, RecordType},
};
use rand::RngExt as _;

/// One SRV record: the target host and port, and the RFC 2782 ordering fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The host name, without a trailing dot. `.` alone means "no such service here".
    pub target: String,
}

/// A DNS query that gave no usable answer. Cheap to clone, because failed discoveries are
/// cached and handed out again.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DnsError {
    /// The name, or the record type at that name, does not exist.
    #[error("no {kind} records for {name}")]
    NotFound { name: String, kind: &'static str },
    /// The query itself failed (timeout, SERVFAIL, unreachable resolver, bad name).
    #[error("{kind} lookup of {name} failed")]
    Failed {
        name: String,
        kind: &'static str,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// The lookups server discovery and connecting need.
#[async_trait]
pub trait Dns: Send + Sync {
    /// SRV records at `name` (for example `_matrix-fed._tcp.example.org`), in any order.
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError>;

    /// The IPv6 and IPv4 addresses of `host` (AAAA and A records, following CNAMEs).
    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

/// [`Dns`] through hickory-resolver, which caches answers for their TTL.
pub struct HickoryDns {
    resolver: TokioResolver,
}

impl HickoryDns {
    /// A resolver configured from the system (`/etc/resolv.conf`).
    pub fn from_system_conf() -> Result<Self, DnsError> {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|builder| builder.build())
            .map_err(|e| DnsError::Failed { name: "system resolver".into(), kind: "config", source: Arc::new(e) })?;
        Ok(Self { resolver })
    }

    pub fn new(resolver: TokioResolver) -> Self {
        Self { resolver }
    }
}

fn lookup_error(name: &str, kind: &'static str, error: NetError) -> DnsError {
    if error.is_no_records_found() {
        DnsError::NotFound { name: name.to_owned(), kind }
    } else {
        DnsError::Failed { name: name.to_owned(), kind, source: Arc::new(error) }
    }
}

#[async_trait]
impl Dns for HickoryDns {
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        // A trailing dot makes the name absolute, so the search domains are not tried.
        let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
        let lookup =
            self.resolver.lookup(fqdn.as_str(), RecordType::SRV).await.map_err(|e| lookup_error(name, "SRV", e))?;
        let records: Vec<SrvRecord> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => {
                    let target = srv.target.to_utf8();
                    let target = if target == "." { target } else { target.trim_end_matches('.').to_owned() };
                    Some(SrvRecord { priority: srv.priority, weight: srv.weight, port: srv.port, target })
                }
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(DnsError::NotFound { name: name.to_owned(), kind: "SRV" });
        }
        Ok(records)
    }

    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let lookup = self.resolver.lookup_ip(host).await.map_err(|e| lookup_error(host, "A/AAAA", e))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(DnsError::NotFound { name: host.to_owned(), kind: "A/AAAA" });
        }
        Ok(ips)
    }
}

/// [`Dns`] answered from tables the caller fills: for tests and test harnesses that need SRV
/// or A records without a DNS server. Names absent from the tables do not exist. The tables
/// hold only what the caller puts in.
#[derive(Default)]
pub struct StaticDns {
    ips: Mutex<HashMap<String, Vec<IpAddr>>>,
    srv: Mutex<HashMap<String, Result<Vec<SrvRecord>, String>>>,
    queries: AtomicUsize,
}

impl StaticDns {
    pub fn new() -> Self {
        Self::default()
    }

    /// A and AAAA records of `host`.
    pub fn set_ip(&self, host: &str, ips: Vec<IpAddr>) {
        lock(&self.ips).insert(host.to_ascii_lowercase(), ips);
    }

    /// SRV records at `name`, e.g. `_matrix-fed._tcp.example.org`.
    pub fn set_srv(&self, name: &str, records: Vec<SrvRecord>) {
        lock(&self.srv).insert(name.to_ascii_lowercase(), Ok(records));
    }

    /// Makes SRV queries at `name` fail as a broken DNS server would (not "no records").
    pub fn fail_srv(&self, name: &str, message: &str) {
        lock(&self.srv).insert(name.to_ascii_lowercase(), Err(message.to_owned()));
    }

    /// How many queries were answered, to check what was cached.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Dns for StaticDns {
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        match lock(&self.srv).get(&name.to_ascii_lowercase()) {
            Some(Ok(records)) if !records.is_empty() => Ok(records.clone()),
            Some(Err(message)) => Err(DnsError::Failed {
                name: name.to_owned(),
                kind: "SRV",
                source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(message.clone())),
            }),
            _ => Err(DnsError::NotFound { name: name.to_owned(), kind: "SRV" }),
        }
    }

    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        match lock(&self.ips).get(&host.to_ascii_lowercase()) {
            Some(ips) if !ips.is_empty() => Ok(ips.clone()),
            _ => Err(DnsError::NotFound { name: host.to_owned(), kind: "A/AAAA" }),
        }
    }
}

/// Orders SRV records as RFC 2782 says clients must try them: by priority, lowest first, and
/// within one priority in a random order weighted by `weight`. Records whose target is `.` are
/// dropped.
pub(crate) fn order_srv(records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    let mut records: Vec<SrvRecord> = records.into_iter().filter(|r| r.target != ".").collect();
    // Zero-weight records first within a priority: RFC 2782 puts them at the start so that
    // they keep a small chance of being picked.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    let mut rng = rand::rng();
    while !records.is_empty() {
        let priority = records[0].priority;
        let group_len = records.iter().take_while(|r| r.priority == priority).count();
        let mut group: Vec<SrvRecord> = records.drain(..group_len).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let index = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord { priority, weight, port: 8448, target: target.into() }
    }

    #[test]
    fn orders_by_priority_and_drops_dot_targets() {
        let ordered = order_srv(vec![srv(20, 0, "c"), srv(10, 5, "a"), srv(10, 5, "b"), srv(5, 0, ".")]);
        let targets: Vec<&str> = ordered.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets.len(), 3);
        assert_eq!(targets[2], "c");
        assert!(targets[..2].contains(&"a") && targets[..2].contains(&"b"));
    }

    #[tokio::test]
    async fn hickory_reads_the_hosts_file() {
        // No network needed: `localhost` comes from /etc/hosts, which hickory reads.
        let dns = HickoryDns::from_system_conf().expect("system resolver config");
        let ips = dns.ip("localhost").await.expect("localhost resolves");
        assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
    }

    #[test]
    fn weights_bias_the_order() {
        let mut heavy_first = 0;
        for _ in 0..400 {
            let ordered = order_srv(vec![srv(1, 1, "light"), srv(1, 99, "heavy")]);
            if ordered[0].target == "heavy" {
                heavy_first += 1;
            }
        }
        assert!(heavy_first > 300, "heavy first {heavy_first} times out of 400");
    }
}
