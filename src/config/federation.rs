//! The `[federation]` section: talking to other homeservers over the Server-Server API.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use ruma::OwnedServerName;
use serde::{Deserialize, Serialize};

/// How the federation listener speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FederationTls {
    /// HTTPS with the certificate and key in `tls_certificate` / `tls_private_key`, or a
    /// self-signed pair made at start when those are unset (for private test deployments:
    /// other servers must then be told not to verify certificates).
    #[default]
    Https,
    /// Plain HTTP, for a reverse proxy in front that terminates TLS on port 8448 (or where
    /// `.well-known/matrix/server` points).
    BehindProxy,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Address of the Server-Server API listener; federation is off when unset (nothing is
    /// served to, or sent to, other servers).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub tls: FederationTls,
    /// PEM certificate chain for the listener (with `tls = "https"`).
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key for the listener (with `tls = "https"`).
    #[serde(default)]
    pub tls_private_key: Option<PathBuf>,
    /// Largest request body the federation listener accepts: a full transaction (50 PDUs of
    /// up to 64 KiB, plus 100 EDUs) is larger than any client request.
    #[serde(default = "default_max_body")]
    pub max_request_body_bytes: usize,
    /// Served as `m.server` in `/.well-known/matrix/server` (e.g. `matrix.example.org:443`),
    /// on both listeners; unset, that path answers 404 and other servers look up SRV records
    /// or port 8448 of the server name.
    #[serde(default)]
    pub well_known_server: Option<String>,
    /// Addresses (`host:port` or `ip:port`) to reach given servers at, bypassing discovery:
    /// for private deployments and tests. The `Host` header and TLS name stay the server name.
    #[serde(default)]
    pub destinations: BTreeMap<OwnedServerName, String>,
    /// Check other servers' TLS certificates. Turn off only for private test deployments
    /// with self-signed certificates.
    #[serde(default = "yes")]
    pub verify_certificates: bool,
    /// Extra PEM root certificates to trust for other servers.
    #[serde(default)]
    pub trusted_ca_certificates: Vec<PathBuf>,
    /// Address ranges (CIDR) other servers may not resolve to, so that federation cannot be
    /// aimed at internal services. Defaults to loopback, private, link-local and other
    /// non-public ranges.
    #[serde(default = "super::default_ip_blocklist")]
    pub ip_range_blocklist: Vec<ipnet::IpNet>,
    /// Ranges allowed even though the blocklist covers them (e.g. servers on a LAN, or
    /// 127.0.0.0/8 for several servers on one machine).
    #[serde(default)]
    pub ip_range_allowlist: Vec<ipnet::IpNet>,
    /// Servers asked for other servers' keys when those cannot be reached directly.
    #[serde(default)]
    pub trusted_key_servers: Vec<OwnedServerName>,
    /// Timeout of one request to another server, in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Largest response accepted from another server, in bytes.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls: FederationTls::default(),
            tls_certificate: None,
            tls_private_key: None,
            max_request_body_bytes: default_max_body(),
            well_known_server: None,
            destinations: BTreeMap::new(),
            verify_certificates: true,
            trusted_ca_certificates: Vec::new(),
            ip_range_blocklist: super::default_ip_blocklist(),
            ip_range_allowlist: Vec::new(),
            trusted_key_servers: Vec::new(),
            request_timeout_secs: default_request_timeout(),
            max_response_bytes: default_max_response(),
        }
    }
}

impl FederationConfig {
    /// Whether this server federates at all.
    pub fn enabled(&self) -> bool {
        self.listen.is_some()
    }
}

fn yes() -> bool {
    true
}

fn default_max_body() -> usize {
    16 * 1024 * 1024
}

fn default_request_timeout() -> u64 {
    30
}

fn default_max_response() -> usize {
    64 * 1024 * 1024
}
