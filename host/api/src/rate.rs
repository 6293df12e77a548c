//! Rate limiting per token: a token bucket each, refilled at
//! `per_second`, holding at most `burst`. A request over the limit is
//! answered 429 with `Retry-After`, so one runaway CI job cannot starve the
//! people approving a release. The same buckets, by client address and
//! refilled per minute, count failed authentications.

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

/// Buckets kept at most before full ones are forgotten (a full bucket is
/// the same as none): bounds the memory many client addresses can take.
const MAX_BUCKETS: usize = 10_000;

/// Buckets by token name (or client address).
#[derive(Debug)]
pub struct RateLimiter {
    /// Refill, per second.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(settings: RateSettings) -> RateLimiter {
        Self::with_rate(f64::from(settings.per_second.max(1)), settings.burst)
    }

    /// `per_minute` a minute, with bursts of as many.
    pub fn per_minute(per_minute: u32) -> RateLimiter {
        let n = per_minute.max(1);
        Self::with_rate(f64::from(n) / 60.0, n)
    }

    fn with_rate(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Take one request from `who`'s bucket: `Err(wait)` if it is empty.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        self.take_at(who, Instant::now())
    }

    /// `Err(wait)` if `who`'s bucket is empty now, taking nothing.
    pub fn check(&self, who: &str) -> Result<(), Duration> {
        self.check_at(who, Instant::now())
    }

    fn check_at(&self, who: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap();
        match buckets.get_mut(who) {
            Some(bucket) => self.refill(bucket, now).map(|_| ()),
            None => Ok(()),
        }
    }

    fn take_at(&self, who: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(who) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(who.to_string()).or_insert((self.burst, now));
        let tokens = self.refill(bucket, now)?;
        *tokens -= 1.0;
        Ok(())
    }

    /// Refill `bucket` up to `now`; its tokens if one can be taken, else
    /// how long until one can.
    fn refill<'a>(
        &self,
        bucket: &'a mut (f64, Instant),
        now: Instant,
    ) -> Result<&'a mut f64, Duration> {
        let (tokens, last) = bucket;
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.rate)
            .min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            Ok(tokens)
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
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

    #[test]
    fn per_minute_buckets_hold_that_many_and_refill_slowly() {
        let r = RateLimiter::per_minute(3);
        let t0 = Instant::now();
        assert!(r.check("10.0.0.1").is_ok());
        for _ in 0..3 {
            assert!(r.take_at("10.0.0.1", t0).is_ok());
        }
        let wait = r.take_at("10.0.0.1", t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // On the test's clock: a look at the real one moves the bucket's
        // time past `t0`, and the refill below would come short of 20 s.
        assert!(r.check_at("10.0.0.1", t0).is_err());
        assert!(r.take_at("10.0.0.1", t0 + Duration::from_secs(20)).is_ok());
    }
}
