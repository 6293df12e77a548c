//! Rate limiting per token: a token bucket each, refilled at
//! `per_second`, holding at most `burst`. A request over the limit is
//! answered 429 with `Retry-After`, so one runaway CI job cannot starve the
//! people approving a release.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limit.
#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            per_second: 50,
            burst: 100,
        }
    }
}

/// Buckets by token name.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateSettings,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(settings: RateSettings) -> RateLimiter {
        RateLimiter {
            settings: RateSettings {
                per_second: settings.per_second.max(1),
                burst: settings.burst.max(1),
            },
            buckets: Mutex::default(),
        }
    }

    /// Take one request from `who`'s bucket: `Err(wait)` if it is empty.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        self.take_at(who, Instant::now())
    }

    fn take_at(&self, who: &str, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (
            f64::from(self.settings.per_second),
            f64::from(self.settings.burst),
        );
        let mut buckets = self.buckets.lock().unwrap();
        let (tokens, last) = buckets.entry(who.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let r = RateLimiter::new(RateSettings {
            per_second: 10,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take_at("ci", t0).is_ok());
        }
        let wait = r.take_at("ci", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // Another token has its own bucket.
        assert!(r.take_at("alice", t0).is_ok());
        // 100 ms later, one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.take_at("ci", t1).is_ok());
        assert!(r.take_at("ci", t1).is_err());
    }
}
