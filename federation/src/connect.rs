//! Address resolution inside reqwest, where the SSRF filter is applied, and reading bodies
//! with a size limit.
//!
//! reqwest asks its resolver for the addresses of the URL's host right before it connects,
//! so a filter applied here sees exactly the addresses that will be connected to. (A URL
//! whose host is an IP literal skips the resolver; callers check those themselves.)

use std::{
    error::Error as StdError,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{
    discovery::{Dns, DnsError, Host, Target},
    ip_filter::IpFilter,
};

/// Why the resolver handed reqwest no address. Found again in reqwest's error chain by
/// [`find_cause`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("every address of {host} is blocked by the IP filter: {addresses:?}")]
    Blocked { host: String, addresses: Vec<IpAddr> },
    #[error(transparent)]
    Dns(#[from] DnsError),
}

/// Resolves any host name through [`Dns`] and keeps only allowed addresses, with a fixed port
/// (the `.well-known` fetch: port 443 unless a test says otherwise).
pub(crate) struct GuardedResolve {
    pub(crate) dns: Arc<dyn Dns>,
    pub(crate) filter: Arc<IpFilter>,
    pub(crate) port: u16,
}

impl Resolve for GuardedResolve {
    fn resolve(&self, name: Name) -> Resolving {
        let dns = self.dns.clone();
        let filter = self.filter.clone();
        let port = self.port;
        Box::pin(async move {
            let target = Target { host: Host::Name(name.as_str().to_owned()), port };
            let addrs = resolve_targets(&*dns, &filter, std::slice::from_ref(&target)).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves to one destination's targets whatever name reqwest asks for: each federation
/// client built on it talks to one destination only.
pub(crate) struct DestinationResolve {
    pub(crate) dns: Arc<dyn Dns>,
    pub(crate) filter: Arc<IpFilter>,
    pub(crate) targets: Vec<Target>,
}

impl Resolve for DestinationResolve {
    fn resolve(&self, _name: Name) -> Resolving {
        let dns = self.dns.clone();
        let filter = self.filter.clone();
        let targets = self.targets.clone();
        Box::pin(async move {
            let addrs = resolve_targets(&*dns, &filter, &targets).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The allowed socket addresses of `targets`, in order. Fails when nothing is left: with the
/// DNS error if no target resolved, else with the blocked addresses.
pub(crate) async fn resolve_targets(
    dns: &dyn Dns,
    filter: &IpFilter,
    targets: &[Target],
) -> Result<Vec<SocketAddr>, ResolveError> {
    let mut allowed = Vec::new();
    let mut blocked = Vec::new();
    let mut dns_error = None;
    for target in targets {
        let ips = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => match dns.ip(name).await {
                Ok(ips) => ips,
                Err(e) => {
                    dns_error.get_or_insert(e);
                    continue;
                }
            },
        };
        for ip in ips {
            if filter.is_allowed(ip) {
                allowed.push(SocketAddr::new(ip, target.port));
            } else {
                blocked.push(ip);
            }
        }
    }
    if !allowed.is_empty() {
        return Ok(allowed);
    }
    match (blocked.is_empty(), dns_error) {
        (false, _) | (true, None) => {
            let host = targets.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
            Err(ResolveError::Blocked { host, addresses: blocked })
        }
        (true, Some(e)) => Err(ResolveError::Dns(e)),
    }
}

/// The first error of type `E` in `error`'s chain of sources.
pub(crate) fn find_cause<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge,
    Io(reqwest::Error),
}

/// Reads the whole body, refusing one larger than `limit` bytes without reading the rest:
/// first by its declared length, then by counting.
pub(crate) async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Io)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::discovery::SrvRecord;

    struct OneHost;

    #[async_trait]
    impl Dns for OneHost {
        async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
            Err(DnsError::NotFound { name: name.into(), kind: "SRV" })
        }
        async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
            match host {
                "mixed.test" => Ok(vec!["10.0.0.1".parse().expect("ip"), "93.184.216.34".parse().expect("ip")]),
                "private.test" => Ok(vec!["192.168.0.1".parse().expect("ip")]),
                _ => Err(DnsError::NotFound { name: host.into(), kind: "A/AAAA" }),
            }
        }
    }

    fn target(host: &str, port: u16) -> Target {
        Target { host: Host::Name(host.into()), port }
    }

    #[tokio::test]
    async fn keeps_allowed_addresses_only() {
        let filter = IpFilter::default();
        let addrs = resolve_targets(&OneHost, &filter, &[target("mixed.test", 8448)]).await.expect("one allowed");
        assert_eq!(addrs, vec!["93.184.216.34:8448".parse::<SocketAddr>().expect("addr")]);
    }

    #[tokio::test]
    async fn all_blocked_is_a_blocked_error_and_dns_failure_a_dns_error() {
        let filter = IpFilter::default();
        let err = resolve_targets(&OneHost, &filter, &[target("private.test", 8448), target("gone.test", 1)])
            .await
            .expect_err("blocked");
        assert!(matches!(err, ResolveError::Blocked { ref addresses, .. } if addresses.len() == 1), "{err:?}");
        let err = resolve_targets(&OneHost, &filter, &[target("gone.test", 1)]).await.expect_err("dns");
        assert!(matches!(err, ResolveError::Dns(DnsError::NotFound { .. })), "{err:?}");
        let ip = Target { host: Host::Ip("127.0.0.1".parse().expect("ip")), port: 1 };
        assert!(matches!(resolve_targets(&OneHost, &filter, &[ip]).await, Err(ResolveError::Blocked { .. })));
    }
}
