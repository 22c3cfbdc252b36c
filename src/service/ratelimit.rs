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
    buckets: Mutex<Buckets>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The buckets, and when to next sweep out the ones that carry no information.
struct Buckets {
    map: HashMap<String, Bucket>,
    /// Sweep once the map is larger than this. After a sweep it is twice what survived, so
    /// that a flood of distinct clients whose buckets are all still in use (and so survive)
    /// costs one linear sweep per doubling, not one per request.
    sweep_above: usize,
    /// Sweeps so far (for tests and metrics).
    sweeps: u64,
}

/// Buckets kept before idle ones are first swept; bounds memory under a flood of distinct
/// clients to about twice the clients active within one refill period.
const SWEEP_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let buckets = Buckets { map: HashMap::new(), sweep_above: SWEEP_ABOVE, sweeps: 0 };
        Self { config, buckets: Mutex::new(buckets) }
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
        if buckets.map.len() > buckets.sweep_above {
            // A bucket that has refilled completely carries no information; drop it.
            buckets.map.retain(|_, b| now.duration_since(b.updated).as_secs_f64() * rate < capacity);
            buckets.sweep_above = SWEEP_ABOVE.max(2 * buckets.map.len());
            buckets.sweeps += 1;
        }
        let bucket = buckets.map.entry(key.to_owned()).or_insert(Bucket { tokens: capacity, updated: now });
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

    /// (buckets held, sweeps so far), for tests and metrics.
    pub fn stats(&self) -> (usize, u64) {
        let buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (buckets.map.len(), buckets.sweeps)
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

    /// 50,000 distinct clients within one refill period: none of their buckets may be
    /// dropped, and each request must not pay for a sweep of all the others.
    #[test]
    fn a_flood_of_clients_costs_few_sweeps() {
        let limiter = limiter(0.1, 10);
        let t0 = Instant::now();
        for n in 0..50_000 {
            assert!(limiter.check_at(&format!("ip:{n}"), t0).is_ok());
        }
        let (held, sweeps) = limiter.stats();
        assert_eq!(held, 50_000, "every bucket is still in use");
        assert!(sweeps <= 4, "{sweeps} sweeps of the whole map for 50,000 requests");
        // Once the flood has refilled, the next sweep empties the map again.
        let later = t0 + Duration::from_secs(1000);
        for n in 0..70_000 {
            assert!(limiter.check_at(&format!("ip2:{n}"), later).is_ok());
        }
        let (held, _) = limiter.stats();
        assert!(held < 100_000, "{held} buckets held");
    }
}
