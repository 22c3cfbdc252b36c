//! The HTTP client for push gateways, which refuses to reach internal addresses.
//!
//! Every address a gateway's host resolves to is checked against the configured blocklist
//! (and allowlist) by the client's own resolver, so the check and the connection use the
//! same addresses: DNS cannot be made to point the request elsewhere after the check.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{
    config::PushConfig,
    error::{Error, Result},
};

/// The path every gateway URL must end in.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

#[derive(Clone, Debug)]
pub struct IpPolicy {
    blocked: Arc<Vec<IpNet>>,
    allowed: Arc<Vec<IpNet>>,
}

impl IpPolicy {
    pub fn new(config: &PushConfig) -> Self {
        Self {
            blocked: Arc::new(config.ip_range_blocklist.clone()),
            allowed: Arc::new(config.ip_range_allowlist.clone()),
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip)) || !self.blocked.iter().any(|net| net.contains(&ip))
    }
}

/// Resolves with the system resolver, then drops every address the policy refuses.
struct FilteringResolver(IpPolicy);

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host(host).await?.filter(|a| policy.permits(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("{} resolves only to addresses push gateways may not use", name.as_str()).into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// A client for gateways, and the policy it enforces.
#[derive(Clone)]
pub struct GatewayClient {
    pub http: reqwest::Client,
    pub policy: IpPolicy,
}

impl GatewayClient {
    pub fn new(config: &PushConfig) -> anyhow::Result<Self> {
        let policy = IpPolicy::new(config);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(FilteringResolver(policy.clone())))
            .timeout(Duration::from_secs(config.gateway_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, policy })
    }

    /// Checks a gateway URL: http(s), ending in the notify path, and not an IP literal the
    /// policy refuses (host names are checked at connection time by the resolver).
    pub fn check_url(&self, url: &str) -> Result<url::Url> {
        let parsed = url::Url::parse(url).map_err(|_| Error::invalid_param("The pusher URL is not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_param("The pusher URL must be http or https"));
        }
        if parsed.path() != NOTIFY_PATH {
            return Err(Error::invalid_param(format!("The pusher URL must end in {NOTIFY_PATH}")));
        }
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(Error::invalid_param("The pusher URL has no host")),
        };
        if literal.is_some_and(|ip| !self.policy.permits(ip)) {
            return Err(Error::invalid_param("The pusher URL points to an address this server may not reach"));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_internal_addresses_by_default() {
        let client = GatewayClient::new(&PushConfig::default()).expect("client");
        for bad in [
            "http://127.0.0.1:8000/_matrix/push/v1/notify",
            "http://10.1.2.3/_matrix/push/v1/notify",
            "http://[::1]/_matrix/push/v1/notify",
            "http://169.254.169.254/_matrix/push/v1/notify",
            "https://push.example.org/other/path",
            "ftp://push.example.org/_matrix/push/v1/notify",
        ] {
            assert!(client.check_url(bad).is_err(), "{bad}");
        }
        assert!(client.check_url("https://push.example.org/_matrix/push/v1/notify").is_ok());
        assert!(client.check_url("http://8.8.8.8/_matrix/push/v1/notify").is_ok());
    }

    #[test]
    fn allowlist_overrides() {
        let config =
            PushConfig { ip_range_allowlist: vec!["127.0.0.1/32".parse().expect("net")], ..PushConfig::default() };
        let client = GatewayClient::new(&config).expect("client");
        assert!(client.check_url("http://127.0.0.1:9/_matrix/push/v1/notify").is_ok());
        assert!(client.check_url("http://127.0.0.2:9/_matrix/push/v1/notify").is_err());
    }
}
