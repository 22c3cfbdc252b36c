//! Checks that go beyond types: every failure names the key at fault.

use std::fmt;

use ruma::RoomVersionId;

use super::Config;

/// Room versions this server can create and join.
pub const SUPPORTED_ROOM_VERSIONS: &[RoomVersionId] = &[RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

/// A configuration error, naming the key at fault.
#[derive(Debug)]
pub struct ConfigError {
    /// Dotted key, e.g. `database.url`; empty when the error is about the file as a whole.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }

    pub(super) fn from_figment(error: figment::Error) -> Self {
        // figment reports the first error with the path of the key it was reading.
        let key = error.path.join(".");
        let message = error.kind.to_string();
        Self { key, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid configuration: {}", self.message)
        } else {
            write!(f, "invalid configuration: key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "database.url",
                format!("`{url}` is neither a sqlite: nor a postgres:// URL"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::new("database.max_connections", "must be at least 1"));
        }
        if let Some(base) = &self.public_baseurl {
            match url::Url::parse(base) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => return Err(ConfigError::new("public_baseurl", format!("`{base}` is not an http(s) URL"))),
            }
        }
        let rates = &self.rate_limits;
        if !(rates.per_second.is_finite() && rates.per_second > 0.0) {
            return Err(ConfigError::new("rate_limits.per_second", "must be a positive number"));
        }
        if rates.burst == 0 {
            return Err(ConfigError::new("rate_limits.burst", "must be at least 1"));
        }
        let federation = &self.federation;
        if federation.tls_certificate.is_some() != federation.tls_private_key.is_some() {
            return Err(ConfigError::new(
                "federation.tls_certificate",
                "tls_certificate and tls_private_key go together: set both, or neither for a self-signed pair",
            ));
        }
        if federation.max_request_body_bytes < 65_536 {
            return Err(ConfigError::new("federation.max_request_body_bytes", "must be at least 65536 (one PDU)"));
        }
        if federation.request_timeout_secs == 0 {
            return Err(ConfigError::new("federation.request_timeout_secs", "must be at least 1"));
        }
        let http = &self.http;
        if http.max_request_body_bytes < 1024 {
            return Err(ConfigError::new("http.max_request_body_bytes", "must be at least 1024"));
        }
        if http.request_timeout_secs <= http.max_sync_timeout_secs + 5 {
            return Err(ConfigError::new(
                "http.request_timeout_secs",
                "must exceed http.max_sync_timeout_secs by more than 5 seconds, \
                 or long-polling /sync requests would be cut off",
            ));
        }
        if http.header_read_timeout_secs == 0 {
            return Err(ConfigError::new("http.header_read_timeout_secs", "must be at least 1"));
        }
        if http.max_connections == 0 {
            return Err(ConfigError::new("http.max_connections", "must be at least 1"));
        }
        if self.push.cached_users == 0 {
            return Err(ConfigError::new("push.cached_users", "must be at least 1"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            return Err(ConfigError::new(
                "logging.level",
                format!("`{}` is not a valid log filter", self.logging.level),
            ));
        }
        if !SUPPORTED_ROOM_VERSIONS.contains(&self.rooms.default_version) {
            return Err(ConfigError::new(
                "rooms.default_version",
                format!("room version {} is not supported (10, 11 or 12)", self.rooms.default_version),
            ));
        }
        Ok(())
    }
}
