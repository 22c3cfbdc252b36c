//! `GET https://<hostname>/.well-known/matrix/server`: fetching, validating and caching.
//!
//! The spec's rules: follow redirects but not loops, validate certificates normally, treat
//! the body as JSON whatever its type, cache every answer (errors too) by its Cache-Control or
//! Expires headers, 24 hours by default and 48 hours at most, and back off on repeated errors
//! for up to an hour. Any failure means "no delegation": discovery goes on with SRV records.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use http::{HeaderMap, StatusCode, header};
use reqwest::redirect;
use ruma::OwnedServerName;

use crate::{
    cache::TtlCache,
    connect::{GuardedResolve, ReadError, read_limited},
    discovery::{Dns, ResolverConfig},
    ip_filter::IpFilter,
};

/// The spec's default cache period for an answer without caching headers.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The spec's recommended cap on how long an answer is cached.
const MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// The first error is cached this long; each further error in a row doubles it.
const ERROR_BASE_TTL: Duration = Duration::from_secs(120);
/// The spec's "up to an hour" for errors.
const ERROR_MAX_TTL: Duration = Duration::from_secs(3600);
/// Redirects followed before giving up (loops are refused outright).
const MAX_REDIRECTS: usize = 5;

/// Why a `.well-known` answer gave no delegation. Cloned out of the cache.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WellKnownError {
    #[error("request failed")]
    Request(#[source] Arc<reqwest::Error>),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("body is not a JSON object with a string `m.server`")]
    Malformed(#[source] Option<Arc<serde_json::Error>>),
    #[error("`m.server` is not a valid server name: {0:?}")]
    InvalidServerName(String),
}

struct Entry {
    result: Result<OwnedServerName, WellKnownError>,
    fresh_until: Instant,
    /// Errors in a row, for the backoff.
    failures: u32,
}

pub(crate) struct WellKnown {
    client: reqwest::Client,
    cache: Mutex<TtlCache<String, Entry>>,
    min_ttl: Duration,
    max_body: usize,
}

/// The outcome of one lookup, and until when it holds.
pub(crate) struct Answer {
    pub(crate) result: Result<OwnedServerName, WellKnownError>,
    pub(crate) fresh_until: Instant,
}

impl WellKnown {
    pub(crate) fn new(
        config: &ResolverConfig,
        tls: rustls::ClientConfig,
        dns: Arc<dyn Dns>,
        filter: Arc<IpFilter>,
    ) -> Result<Self, reqwest::Error> {
        let redirect_filter = filter.clone();
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            if attempt.previous().contains(attempt.url()) {
                return attempt.error("redirect loop");
            }
            if attempt.url().scheme() != "https" {
                return attempt.error("redirect away from https");
            }
            // A URL with an IP host never reaches the resolver, so the filter is applied here.
            let ip =
                attempt.url().host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok());
            let blocked_ip = ip.is_some_and(|ip| !redirect_filter.is_allowed(ip));
            if blocked_ip {
                return attempt.error("redirect to a blocked address");
            }
            attempt.follow()
        });
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(GuardedResolve { dns, filter, port: config.well_known_port }))
            .redirect(policy)
            .no_proxy()
            .http1_only()
            .timeout(config.well_known_timeout)
            .user_agent(config.user_agent.clone())
            .build()?;
        Ok(Self {
            client,
            cache: Mutex::new(TtlCache::new(config.cache_capacity)),
            min_ttl: config.well_known_min_ttl,
            max_body: config.well_known_max_body,
        })
    }

    /// The delegated server name for `hostname`, from the cache while it is fresh.
    pub(crate) async fn lookup(&self, hostname: &str) -> Answer {
        let now = Instant::now();
        let previous_failures = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.get(&hostname.to_owned(), now) {
                Some(entry) if entry.fresh_until > now => {
                    return Answer { result: entry.result.clone(), fresh_until: entry.fresh_until };
                }
                Some(entry) => entry.failures,
                None => 0,
            }
        };

        let (result, ttl) = self.fetch(hostname).await;
        let now = Instant::now();
        let (ttl, failures, keep_for) = match &result {
            Ok(_) => {
                let ttl = success_ttl(ttl, self.min_ttl);
                (ttl, 0, ttl)
            }
            Err(_) => {
                let failures = previous_failures.saturating_add(1);
                let ttl = error_ttl(failures);
                // Kept past freshness so the next error in a row still knows the count.
                (ttl, failures, ttl + ERROR_MAX_TTL)
            }
        };
        if let Err(e) = &result {
            tracing::debug!(hostname, error = %e, failures, "no .well-known delegation");
        }
        let fresh_until = now + ttl;
        let entry = Entry { result: result.clone(), fresh_until, failures };
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(hostname.to_owned(), entry, now + keep_for);
        Answer { result, fresh_until }
    }

    /// One fetch: the delegated name, and the cache period the headers ask for, if any.
    async fn fetch(&self, hostname: &str) -> (Result<OwnedServerName, WellKnownError>, Option<Duration>) {
        let url = format!("https://{hostname}/.well-known/matrix/server");
        let response = match self.client.get(&url).send().await {
            Ok(response) => response,
            Err(e) => return (Err(WellKnownError::Request(Arc::new(e))), None),
        };
        let ttl = cache_period(response.headers(), SystemTime::now());
        let status = response.status();
        if status != StatusCode::OK {
            return (Err(WellKnownError::Status(status)), ttl);
        }
        let body = match read_limited(response, self.max_body).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => return (Err(WellKnownError::TooLarge(self.max_body)), ttl),
            Err(ReadError::Io(e)) => return (Err(WellKnownError::Request(Arc::new(e))), ttl),
        };
        (parse_body(&body), ttl)
    }
}

/// How long a delegation is used: what the headers say, else the spec's 24 hours; never more
/// than its 48 hours, nor less than `floor`.
fn success_ttl(from_headers: Option<Duration>, floor: Duration) -> Duration {
    from_headers.unwrap_or(DEFAULT_TTL).max(floor).min(MAX_TTL)
}

/// How long the `failures`-th error in a row is remembered: doubling from two minutes, up to
/// the spec's hour.
fn error_ttl(failures: u32) -> Duration {
    ERROR_BASE_TTL.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(ERROR_MAX_TTL)
}

/// The `m.server` of a `.well-known` body, which is JSON whatever its content type says.
fn parse_body(body: &[u8]) -> Result<OwnedServerName, WellKnownError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WellKnownError::Malformed(Some(Arc::new(e))))?;
    let server = value.get("m.server").and_then(|v| v.as_str()).ok_or(WellKnownError::Malformed(None))?;
    OwnedServerName::try_from(server).map_err(|_| WellKnownError::InvalidServerName(server.to_owned()))
}

/// How long the response's headers allow it to be cached: `no-store`/`no-cache` mean not at
/// all, then `max-age`, then `Expires` (RFC 9111's order). `None` when they say nothing.
pub(crate) fn cache_period(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            if directive == "no-store" || directive == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(seconds) = directive.strip_prefix("max-age=")
                && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
            {
                max_age = Some(Duration::from_secs(seconds));
            }
        }
    }
    if max_age.is_some() {
        return max_age;
    }
    let expires = headers.get(header::EXPIRES)?.to_str().ok()?;
    // An unparseable Expires (often "0") means "already expired".
    match httpdate::parse_http_date(expires) {
        Ok(at) => Some(at.duration_since(now).unwrap_or(Duration::ZERO)),
        Err(_) => Some(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn cache_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(cache_period(&headers(&[]), now), None);
        assert_eq!(
            cache_period(&headers(&[(header::CACHE_CONTROL, "public, max-age=3600")]), now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(cache_period(&headers(&[(header::CACHE_CONTROL, "no-store")]), now), Some(Duration::ZERO));
        let in_two_hours = httpdate::fmt_http_date(now + Duration::from_secs(7200));
        assert_eq!(cache_period(&headers(&[(header::EXPIRES, &in_two_hours)]), now), Some(Duration::from_secs(7200)));
        // max-age wins over Expires.
        assert_eq!(
            cache_period(&headers(&[(header::EXPIRES, &in_two_hours), (header::CACHE_CONTROL, "max-age=60")]), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(cache_period(&headers(&[(header::EXPIRES, "0")]), now), Some(Duration::ZERO));
    }

    #[test]
    fn cache_periods() {
        let floor = Duration::from_secs(300);
        assert_eq!(success_ttl(None, floor), Duration::from_secs(24 * 3600));
        assert_eq!(success_ttl(Some(Duration::from_secs(7 * 24 * 3600)), floor), Duration::from_secs(48 * 3600));
        assert_eq!(success_ttl(Some(Duration::from_secs(600)), floor), Duration::from_secs(600));
        assert_eq!(success_ttl(Some(Duration::ZERO), floor), floor);
        assert_eq!(error_ttl(1), Duration::from_secs(120));
        assert_eq!(error_ttl(2), Duration::from_secs(240));
        assert_eq!(error_ttl(6), Duration::from_secs(3600));
        assert_eq!(error_ttl(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn bodies() {
        assert_eq!(
            parse_body(br#"{"m.server": "matrix.example.org:443"}"#).expect("ok").as_str(),
            "matrix.example.org:443"
        );
        assert!(matches!(parse_body(b"<html>"), Err(WellKnownError::Malformed(Some(_)))));
        assert!(matches!(parse_body(br#"{"m.server": 3}"#), Err(WellKnownError::Malformed(None))));
        assert!(matches!(parse_body(br#"{"m.server": "bad name!"}"#), Err(WellKnownError::InvalidServerName(_))));
    }
}
