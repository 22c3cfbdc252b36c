//! Typed configuration.
//!
//! Loaded from a TOML file, then overridden by `PARLEY_*` environment variables
//! (nested keys joined with `__`, e.g. `PARLEY_DATABASE__URL`), then validated.
//! Every key is documented in `docs/configuration.md`; keep the two in step.

mod federation;
mod validate;

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use ruma::{OwnedServerName, RoomVersionId};
use serde::{Deserialize, Serialize};

pub use self::{
    federation::{FederationConfig, FederationTls},
    validate::{ConfigError, SUPPORTED_ROOM_VERSIONS},
};

/// The whole configuration of one homeserver.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name in every user ID (`@alice:server_name`) and room alias. Never change it.
    pub server_name: OwnedServerName,
    /// The URL clients use to reach this server; served in `/.well-known/matrix/client`.
    /// Derived from the client listener when unset.
    #[serde(default)]
    pub public_baseurl: Option<String>,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub rate_limits: RateLimitConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub rooms: RoomsConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    #[serde(default)]
    pub push: PushConfig,
    #[serde(default)]
    pub federation: FederationConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address of the Client-Server API listener.
    #[serde(default = "default_client_addr")]
    pub client: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: default_client_addr() }
    }
}

fn default_client_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8008))
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (created on first start) or `postgres://user@host/db`.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// Upper bound of the connection pool (readers, on SQLite).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: default_database_url(), max_connections: default_max_connections() }
    }
}

fn default_database_url() -> String {
    "sqlite://parley.db".to_owned()
}

fn default_max_connections() -> u32 {
    16
}

/// Who may create an account through `/register`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Only administrators create accounts (`parley user create`).
    #[default]
    Disabled,
    /// Anyone holding a registration token made by `parley registration-token create`.
    Token,
    /// Anyone.
    Open,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    #[serde(default)]
    pub mode: RegistrationMode,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Turns rate limiting of the endpoints the spec marks as rate-limited on or off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sustained requests per second allowed per client (user, or IP address when anonymous).
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    /// Requests a client may make in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { enabled: true, per_second: default_per_second(), burst: default_burst() }
    }
}

fn yes() -> bool {
    true
}

fn default_per_second() -> f64 {
    10.0
}

fn default_burst() -> u32 {
    50
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes; larger ones get 413 M_TOO_LARGE.
    #[serde(default = "default_max_body")]
    pub max_request_body_bytes: usize,
    /// Hard limit on the time a request may take. Must exceed `max_sync_timeout_secs`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Longest long-poll a client may ask of `/sync`; longer `timeout`s are cut to it.
    #[serde(default = "default_max_sync_timeout")]
    pub max_sync_timeout_secs: u64,
    /// Take the client's address from `X-Forwarded-For` (set by a reverse proxy) rather than
    /// from the connection. Only enable it behind a proxy that sets the header.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// A connection whose request headers have not all arrived this many seconds after it
    /// started waiting for them is closed (slow-header clients, idle keep-alives).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Connections served at once; at the limit, new ones wait until one closes. Each costs a
    /// file descriptor: keep `ulimit -n` above it.
    #[serde(default = "default_max_connections_http")]
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: default_max_body(),
            request_timeout_secs: default_request_timeout(),
            max_sync_timeout_secs: default_max_sync_timeout(),
            trust_forwarded_for: false,
            header_read_timeout_secs: default_header_read_timeout(),
            max_connections: default_max_connections_http(),
        }
    }
}

impl HttpConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn max_sync_timeout(&self) -> Duration {
        Duration::from_secs(self.max_sync_timeout_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
}

fn default_max_body() -> usize {
    1024 * 1024
}

fn default_request_timeout() -> u64 {
    180
}

fn default_max_sync_timeout() -> u64 {
    120
}

fn default_header_read_timeout() -> u64 {
    30
}

fn default_max_connections_http() -> usize {
    20_000
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing` filter: `info`, or per module, e.g. `info,parley::api=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { level: default_log_level(), format: LogFormat::default() }
    }
}

fn default_log_level() -> String {
    // ruma's auth checks log every decision at info level.
    "info,ruma_state_res=warn".to_owned()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// The room version of rooms created without an explicit `room_version`.
    #[serde(default = "default_room_version")]
    pub default_version: RoomVersionId,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: default_room_version() }
    }
}

fn default_room_version() -> RoomVersionId {
    RoomVersionId::V12
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// Track and share presence. Off: nothing is tracked or sent, and the API reports offline.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds without activity after which an online user becomes unavailable.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds after a user's last /sync ended (with none running) before they go offline.
    #[serde(default = "default_offline_after")]
    pub offline_after_secs: u64,
    /// At most one presence update per user is published per this many seconds; changes in
    /// between are coalesced into the next one.
    #[serde(default = "default_min_update_interval")]
    pub min_update_interval_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_secs: default_idle_timeout(),
            offline_after_secs: default_offline_after(),
            min_update_interval_secs: default_min_update_interval(),
        }
    }
}

fn default_idle_timeout() -> u64 {
    300
}

fn default_offline_after() -> u64 {
    30
}

fn default_min_update_interval() -> u64 {
    5
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Address ranges (CIDR) push gateways may not resolve to, so that a pusher cannot be
    /// aimed at internal services. Defaults to loopback, private, link-local and other
    /// non-public ranges.
    #[serde(default = "default_ip_blocklist")]
    pub ip_range_blocklist: Vec<ipnet::IpNet>,
    /// Ranges allowed even though the blocklist covers them (e.g. a gateway on the LAN).
    #[serde(default)]
    pub ip_range_allowlist: Vec<ipnet::IpNet>,
    /// Timeout of one request to a push gateway.
    #[serde(default = "default_gateway_timeout")]
    pub gateway_timeout_secs: u64,
    /// Users whose push rules and pushers are kept in memory, the most recently used.
    #[serde(default = "default_push_cached_users")]
    pub cached_users: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            ip_range_blocklist: default_ip_blocklist(),
            ip_range_allowlist: Vec::new(),
            gateway_timeout_secs: default_gateway_timeout(),
            cached_users: default_push_cached_users(),
        }
    }
}

/// Loopback, private, link-local and other non-public ranges: where outbound requests made
/// on someone else's say-so (push gateways, other servers) may not go by default.
/// The special-purpose ranges (loopback, private, link-local, documentation, 6to4, ...) that
/// neither push gateways nor other homeservers live at: one list, kept by the federation
/// crate, for both.
fn default_ip_blocklist() -> Vec<ipnet::IpNet> {
    parley_federation::ip_filter::default_blocklist()
}

fn default_gateway_timeout() -> u64 {
    10
}

fn default_push_cached_users() -> usize {
    10_000
}

impl Config {
    /// Loads `path` (which may be absent only when `allow_missing` is set), applies the
    /// `PARLEY_*` environment overrides and validates the result.
    pub fn load(path: &Path, allow_missing: bool) -> Result<Self, ConfigError> {
        if !allow_missing && !path.exists() {
            return Err(ConfigError::new("", format!("config file {} not found", path.display())));
        }
        Self::from_figment(Figment::new().merge(Toml::file(path)).merge(Env::prefixed("PARLEY_").split("__")))
    }

    /// A config for `server_name` with every other key at its default.
    pub fn with_defaults(server_name: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Serialized::default("server_name", server_name)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(ConfigError::from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// The URL clients reach this server at, with a trailing slash.
    pub fn public_baseurl(&self) -> String {
        let url = match &self.public_baseurl {
            Some(url) => url.clone(),
            None => format!("http://{}", self.listen.client),
        };
        if url.ends_with('/') { url } else { format!("{url}/") }
    }
}
