//! Token-bucket rate limiting, per client: the user when the request is authenticated,
//! the IP address otherwise. Applied to the endpoints the spec marks as rate-limited.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::RateLimitConfig;

pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets kept before idle ones are swept; bounds memory under a flood of distinct clients.
const SWEEP_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.config.enabled {
            return Ok(());
        }
        let capacity = f64::from(self.config.burst);
        let rate = self.config.per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            // A bucket that has refilled completely carries no information; drop it.
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() * rate < capacity);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: capacity, updated: now });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { enabled: true, per_second, burst })
    }

    #[test]
    fn burst_then_refill() {
        let limiter = limiter(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        let wait = limiter.check_at("a", t0).expect_err("burst used up");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert!(limiter.check_at("b", t0).is_ok(), "other clients have their own bucket");
        assert!(limiter.check_at("a", t0 + Duration::from_millis(500)).is_ok(), "refilled at 2/s");
    }

    #[test]
    fn disabled_never_limits() {
        let limiter = RateLimiter::new(RateLimitConfig { enabled: false, per_second: 1.0, burst: 1 });
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
    }
}
